"""Many processes: training, sharded initialisation and Orbax checkpoints across 2 local
processes (JAX's multi-controller runtime, gloo CPU collectives), checked against
single-process references computed here on the same 4-device mesh.

One launch of 2 processes x 2 devices runs the whole `main` scenario (see
`multiprocess_worker.py`); its results are shared by the tests below. The restore matrix
then reads its checkpoint in this process (1 x 4 and 1 x 2 devices) and in a second
launch of 2 processes x 1 device.
"""

from __future__ import annotations

import os

import jax
import multiprocess_harness as h
import numpy as np
import pytest

import ecliptic as ec

pytest.importorskip("orbax.checkpoint")


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("multiprocess"))
    procs, outputs = h.run_workers("main", out_dir, check=False, grace=2.0)
    # Rank 1 kills itself during the last asynchronous save; rank 0 is then killed by the
    # launcher. Everything before that point must have been written by both ranks.
    assert procs[1].returncode == -9 and not procs[1].timed_out, procs[1].stderr[-3000:]
    for rank, out in enumerate(outputs):
        assert out.get("fault_save_started"), (rank, procs[rank].stderr[-3000:])
    return out_dir, outputs


def _npz(out_dir: str, name: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(out_dir, name)) as f:
        return dict(f)


def _mesh(n: int):
    return h.make_mesh(jax.devices()[:n])


@pytest.mark.parametrize("kind, rules, how", [
    ("mlp", "replicate", "local"),
    ("mlp", "fsdp", "global"),
    ("transformer", "replicate", "global"),
    ("transformer", "fsdp", "local"),
])
def test_training_matches_one_process(main_run, kind, rules, how):
    out_dir, outputs = main_run
    name = f"train-{kind}-{rules}-{how}"
    assert outputs[0]["process_count"] == 2 and outputs[0]["devices"] == 4
    # Both processes see the same (replicated) losses.
    assert outputs[0][name] == outputs[1][name]
    model, _, losses = h.train(kind, h.make_model(kind, jax.random.key(h.KEY)), _mesh(4),
                               h.RULES[rules], "global")
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
    expected = sum(x.nbytes if s.is_fully_replicated else x.nbytes // 4
                   for x, s in zip(arrays, specs))
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


def test_checkpoints_async_keep_latest(main_run):
    _, outputs = main_run
    for out in outputs:
        assert out["steps_after_first"] == [1]
        assert out["steps"] == [2, 3]  # max_to_keep=2
        assert out["metadata"] == {"loss": out["ckpt_losses"][-1]}


@pytest.mark.parametrize("devices", [4, 2])
def test_restore_in_one_process(main_run, devices):
    """Saved by 2 processes x 2 devices; the save of step 4 was killed mid-way."""
    out_dir, outputs = main_run
    restored = h.restore_and_resume(os.path.join(out_dir, "ckpt"), _mesh(devices))
    assert restored["steps"] == [2, 3] and restored["latest"] == 3
    assert "P('data',)" in restored["specs"]  # resharded by the rules onto the new mesh
    saved = _npz(out_dir, "ckpt-3.npz")
    assert saved.keys() == restored["values"].keys()
    for path, value in saved.items():
        np.testing.assert_array_equal(restored["values"][path], value, err_msg=path)
    assert restored["loss"] == pytest.approx(outputs[0]["resume_loss"], abs=1e-5)


def test_restore_in_two_processes_of_one_device(main_run):
    out_dir, outputs = main_run
    _, (out0, out1) = h.run_workers("restore", out_dir, devices_per_process=1)
    assert out0["process_count"] == 2 and out0["devices"] == 2
    assert out0["steps"] == [2, 3] and out0["latest"] == 3
    assert out0["loss"] == out1["loss"]
    assert out0["loss"] == pytest.approx(outputs[0]["resume_loss"], abs=1e-5)
    saved = _npz(out_dir, "ckpt-3.npz")
    restored = _npz(out_dir, "restore.npz")
    assert saved.keys() == restored.keys()
    for path, value in saved.items():
        np.testing.assert_array_equal(restored[path], value, err_msg=path)


def test_example_continues_from_the_same_loss():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples", "multiprocess.py")
    spec = importlib.util.spec_from_file_location("example_multiprocess", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    continued, restored = module.main(steps=2)
    assert abs(continued - restored) <= 1e-5
