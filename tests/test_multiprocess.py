"""Many processes: training, sharded initialisation and Orbax checkpoints across 2 local
processes (JAX's multi-controller runtime, gloo CPU collectives), checked against
single-process references computed here on the same 4-device mesh.

One launch of 2 processes x 2 devices runs the whole `main` scenario (see
`multiprocess_worker.py`); its results are shared by the tests below. The restore matrix
then reads its checkpoint in this process (1 x 4 and 1 x 2 devices) and in a second
launch of 2 processes x 1 device.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil

import jax
import multiprocess_harness as h
import numpy as np
import pytest

import ecliptic as ec

pytest.importorskip("orbax.checkpoint")


def _run_main(out_dir: str) -> list[dict]:
    procs, outputs = h.run_workers("main", out_dir, check=False, grace=2.0)
    # Rank 1 kills itself during the last asynchronous save; rank 0 is then killed by the
    # launcher. Everything before that point must have been written by both ranks.
    assert procs[1].returncode == -9 and not procs[1].timed_out, procs[1].stderr[-3000:]
    for rank, out in enumerate(outputs):
        assert out.get("fault_save_started"), (rank, procs[rank].stderr[-3000:])
    return outputs


@pytest.fixture(scope="module")
def main_run(tmp_path_factory, worker_id):
    """The `main` scenario's directory and per-rank results, run once per test session:
    under pytest-xdist the workers share one run (the first to take the lock runs it)."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # shared by the xdist workers of this session
    out_dir = str(root / "multiprocess-main")
    with open(str(root / "multiprocess-main.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = os.path.join(out_dir, "done.json")
        if not os.path.exists(done):
            outputs = _run_main(out_dir)
            with open(done, "w") as f:
                json.dump(outputs, f)
        with open(done) as f:
            return out_dir, json.load(f)


@pytest.fixture
def checkpoint_copy(main_run, tmp_path):
    """A private copy of the checkpoint directory (restoring may tidy it up)."""
    copy = str(tmp_path / "ckpt")
    shutil.copytree(os.path.join(main_run[0], "ckpt"), copy)
    return copy


def _npz(out_dir: str, name: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(out_dir, name)) as f:
        return dict(f)


def _mesh(n: int):
    return h.make_mesh(jax.devices()[:n])


@pytest.mark.parametrize(
    "kind, rules, how",
    [
        ("mlp", "replicate", "local"),
        ("mlp", "fsdp", "global"),
        ("transformer", "replicate", "global"),
        ("transformer", "fsdp", "local"),
    ],
)
def test_training_matches_one_process(main_run, kind, rules, how):
    out_dir, outputs = main_run
    name = f"train-{kind}-{rules}-{how}"
    assert outputs[0]["process_count"] == 2 and outputs[0]["devices"] == 4
    # Both processes see the same (replicated) losses.
    assert outputs[0][name] == outputs[1][name]
    model, _, losses = h.train(
        kind, h.make_model(kind, jax.random.key(h.KEY)), _mesh(4), h.RULES[rules], "global"
    )
    np.testing.assert_allclose(outputs[0][name], losses, rtol=0, atol=1e-5)
    assert losses[-1] < losses[0]  # it trains
    got = _npz(out_dir, f"{name}.npz")
    want = h.gather(model)
    assert got.keys() == want.keys()
    for path in want:
        np.testing.assert_allclose(got[path], want[path], rtol=1e-5, atol=1e-6, err_msg=path)


def test_sharded_init_values_and_bytes(main_run):
    out_dir, outputs = main_run
    reference = h.make_model("transformer", jax.random.key(h.KEY))
    want = h.gather(reference)
    got = _npz(out_dir, "init.npz")
    assert got.keys() == want.keys()
    for path in want:
        np.testing.assert_array_equal(got[path], want[path], err_msg=path)
    # Per device: 1/4 of every FSDP-split parameter plus the small replicated ones.
    shardings = ec.param_shardings(reference, _mesh(4), h.RULES["fsdp"])
    arrays = [x for x in jax.tree_util.tree_leaves(reference) if ec.is_array(x)]
    specs = [s for s in jax.tree_util.tree_leaves(shardings)]
    total = sum(x.nbytes for x in arrays)
    small = sum(x.nbytes for x, s in zip(arrays, specs) if s.is_fully_replicated)
    assert small < 0.1 * total
    expected = sum(
        x.nbytes if s.is_fully_replicated else x.nbytes // 4 for x, s in zip(arrays, specs)
    )
    for out in outputs:
        assert sorted(out["init_bytes_per_device"].values()) == [expected, expected]
        assert expected <= total / 4 + small
        # XLA's own accounting of the initialisation program, temporaries included: the
        # FSDP build needs the fraction expected / total (about 1/4) of what a replicated
        # build needs on each device.
        memory = out["init_memory"]
        assert memory["replicate"]["output_bytes"] >= total
        assert memory["fsdp"]["output_bytes"] <= expected + 256
        ratio = memory["fsdp"]["peak_bytes"] / memory["replicate"]["peak_bytes"]
        assert ratio <= 1.1 * expected / total


def test_single_host_save_points_to_the_checkpoint_manager(main_run):
    out_dir, outputs = main_run
    for rank, out in enumerate(outputs):
        message = out["single_host_save_error"]
        assert message is not None and "spans devices of other processes" in message
        assert "ecliptic.distributed.CheckpointManager" in message
        assert not os.path.exists(os.path.join(out_dir, f"single-{rank}.safetensors"))


def test_checkpoints_async_keep_latest(main_run):
    _, outputs = main_run
    for out in outputs:
        assert out["steps_after_first"] == [1]
        assert out["steps"] == [2, 3]  # max_to_keep=2
        assert out["metadata"] == {"loss": out["ckpt_losses"][-1]}


@pytest.mark.parametrize("devices", [4, 2])
def test_restore_in_one_process(main_run, checkpoint_copy, devices):
    """Saved by 2 processes x 2 devices; the save of step 4 was killed mid-way."""
    out_dir, outputs = main_run
    restored = h.restore_and_resume(checkpoint_copy, _mesh(devices))
    assert restored["steps"] == [2, 3] and restored["latest"] == 3
    assert "P('data',)" in restored["specs"]  # resharded by the rules onto the new mesh
    saved = _npz(out_dir, "ckpt-3.npz")
    assert saved.keys() == restored["values"].keys()
    for path, value in saved.items():
        np.testing.assert_array_equal(restored["values"][path], value, err_msg=path)
    assert restored["loss"] == pytest.approx(outputs[0]["resume_loss"], abs=1e-5)


def test_restore_in_two_processes_of_one_device(main_run, checkpoint_copy):
    out_dir, outputs = main_run
    restore_dir = os.path.dirname(checkpoint_copy)
    _, (out0, out1) = h.run_workers("restore", restore_dir, devices_per_process=1)
    assert out0["process_count"] == 2 and out0["devices"] == 2
    assert out0["steps"] == [2, 3] and out0["latest"] == 3
    assert out0["loss"] == out1["loss"]
    assert out0["loss"] == pytest.approx(outputs[0]["resume_loss"], abs=1e-5)
    saved = _npz(out_dir, "ckpt-3.npz")
    restored = _npz(restore_dir, "restore.npz")
    assert saved.keys() == restored.keys()
    for path, value in saved.items():
        np.testing.assert_array_equal(restored[path], value, err_msg=path)


def test_example_continues_from_the_same_loss():
    import importlib.util

    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "multiprocess.py"
    )
    spec = importlib.util.spec_from_file_location("example_multiprocess", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    continued, restored = module.main(steps=2)
    assert abs(continued - restored) <= 1e-5
