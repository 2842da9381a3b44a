"""`ecliptic.distributed` in one process: the launcher's clean-up, the environment
reader, sharded initialisation and the checkpoint manager's checks and errors."""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

import ecliptic as ec
from ecliptic import distributed, sharding


def _mesh(n):
    return jax.make_mesh((n,), ("data",), (AxisType.Auto,), devices=jax.devices()[:n])


# ------------------------------------------------------------------ launch_local


def test_launch_local_sets_the_job_variables(tmp_path):
    script = tmp_path / "echo_env.py"
    script.write_text(
        "import os\n"
        "print(os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['MASTER_ADDR'],"
        " os.environ['JAX_NUM_CPU_DEVICES'], os.environ['JAX_PLATFORMS'])\n"
    )
    results = distributed.launch_local(str(script), num_processes=3, devices_per_process=1)
    assert [r.stdout.split() for r in results] == [
        [str(rank), "3", "127.0.0.1", "1", "cpu"] for rank in range(3)
    ]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_launch_local_kills_everything_on_failure_and_timeout(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    script = tmp_path / "child.py"
    # Each rank starts a grandchild that would outlive it, then rank 1 fails at once and
    # rank 0 hangs: the launcher must end both process groups, grandchildren included.
    script.write_text(
        "import os, subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open(os.path.join({str(pids)!r}, os.environ['RANK']), 'w').write(str(p.pid))\n"
        "if os.environ['RANK'] == '1':\n"
        "    time.sleep(0.5); sys.exit(3)\n"
        "time.sleep(300)\n"
    )
    start = time.monotonic()
    with pytest.raises(distributed.LaunchError, match="process 1: exit status 3"):
        distributed.launch_local(str(script), timeout=60, grace=0.5)
    assert time.monotonic() - start < 30
    results = distributed.launch_local(str(script), timeout=60, grace=0.5, check=False)
    assert results[1].returncode == 3 and results[0].returncode == -9
    assert results[0].timed_out
    for name in os.listdir(pids):
        pid = int((pids / name).read_text())
        for _ in range(100):
            if _gone(pid):
                break
            time.sleep(0.05)
        assert _gone(pid), f"grandchild {pid} of rank {name} is still running"


def test_launch_local_bad_input(tmp_path):
    with pytest.raises(ValueError, match="num_processes"):
        distributed.launch_local(sys.executable, num_processes=0)
    with pytest.raises(ValueError, match="devices_per_process"):
        distributed.launch_local(sys.executable, devices_per_process=0)
    with pytest.raises(FileNotFoundError, match="no such file"):
        distributed.launch_local(str(tmp_path / "missing.py"))


# ------------------------------------------------------------------ environment


def test_cluster_from_env(monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.cluster_from_env() is None
    monkeypatch.setenv("MASTER_ADDR", "10.1.2.3")
    with pytest.raises(ValueError, match=r"missing \['MASTER_PORT', 'WORLD_SIZE', 'RANK'\]"):
        distributed.cluster_from_env()
    monkeypatch.setenv("MASTER_PORT", "1234")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ValueError, match="RANK must be an integer; got 'two'"):
        distributed.cluster_from_env()
    monkeypatch.setenv("RANK", "2")
    assert distributed.cluster_from_env() == {
        "coordinator_address": "10.1.2.3:1234",
        "num_processes": 4,
        "process_id": 2,
    }


# ------------------------------------------------------------------ sharded_init


def test_sharded_init_matches_an_unsharded_build():
    make = lambda key: ec.nn.Sequential(
        [ec.nn.Linear(16, 64, key=key), ec.nn.Lambda(jnp.tanh), ec.nn.Conv1d(4, 8, 3, key=key)]
    )
    key = jax.random.key(3)
    model = distributed.sharded_init(make, key, mesh=_mesh(4), rules=sharding.fsdp(min_size=16))
    reference = make(key)
    assert ec.tree_equal(
        ec.filter(model, ec.is_array, inverse=True), ec.filter(reference, ec.is_array, inverse=True)
    )
    for got, want in zip(jax.tree_util.tree_leaves(model), jax.tree_util.tree_leaves(reference)):
        if ec.is_array(got):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert model.layers[0].weight.sharding.spec == jax.sharding.PartitionSpec("data")
    assert model.layers[0].weight.addressable_shards[0].data.shape == (16, 16)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_sharded_init_peak_is_a_share_of_the_model(n):
    """XLA's compiled peak for the FSDP initialisation on n devices: each device's share of
    the model plus the random-number temporaries of one parameter at a time (threefry on
    CPU keeps three 32-bit buffers the size of a shard), not of every parameter at once."""
    make = lambda key: ec.nn.MLP(256, 256, 256, 6, key=key)
    key = jax.random.key(0)
    mesh, rules = _mesh(n), sharding.fsdp()
    skeleton = ec.filter_eval_shape(make, key)
    leaves = [x for x in jax.tree_util.tree_leaves(skeleton) if isinstance(x, jax.ShapeDtypeStruct)]
    shardings = jax.tree_util.tree_leaves(ec.param_shardings(skeleton, mesh, rules))
    itemsize = leaves[0].dtype.itemsize
    shares = [itemsize * np.prod(s.shard_shape(x.shape)) for x, s in zip(leaves, shardings)]
    largest = max(x.size * itemsize for x in leaves)
    assert sum(shares) < 1.05 * sum(x.size * itemsize for x in leaves) / n
    memory = distributed.sharded_init_memory(make, key, mesh=mesh, rules=rules)
    assert memory["output_bytes"] <= sum(shares) + 1024
    assert memory["peak_bytes"] <= sum(shares) + 3 * largest / n + 4096


def test_sharded_init_bad_input():
    with pytest.raises(TypeError, match="sharded_init\\(mesh=...\\) must be a jax.sharding.Mesh"):
        distributed.sharded_init(ec.nn.Identity, mesh="data")  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="make must be callable"):
        distributed.sharded_init(3, mesh=_mesh(2))  # pyright: ignore[reportArgumentType]


# ------------------------------------------------------------------ CheckpointManager


def _tree(key):
    model = ec.nn.MLP(4, 2, 8, 1, key=key)
    return {"model": model, "key": jax.random.key(5), "count": jnp.array(7)}


def test_checkpoint_manager_one_process(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    tree = _tree(jax.random.key(0))
    with distributed.CheckpointManager(tmp_path, max_to_keep=2, async_save=False) as manager:
        assert manager.latest_step() is None
        for step in (1, 2, 3):
            manager.save(step, tree, metadata={"step": step})
        assert manager.all_steps() == [2, 3]
        like = ec.filter_eval_shape(_tree, jax.random.key(1))
        restored = manager.restore(like, mesh=_mesh(2), rules=sharding.fsdp(min_size=8))
        assert manager.metadata(2)["metadata"] == {"step": 2}
    assert ec.tree_equal(jax.random.key_data(restored["key"]), jax.random.key_data(tree["key"]))
    restored["key"], tree["key"] = None, None
    assert ec.tree_equal(restored, tree)
    assert restored["model"].layers[0].weight.sharding.spec == jax.sharding.PartitionSpec("data")


def test_checkpoint_manager_errors(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    for bad in (0, True, 2.0):  # True is not a count, though bool subclasses int
        with pytest.raises(ValueError, match="max_to_keep"):
            distributed.CheckpointManager(tmp_path, max_to_keep=bad)  # pyright: ignore[reportArgumentType]
    manager = distributed.CheckpointManager(tmp_path, async_save=False)
    with pytest.raises(ec.CheckpointError, match="no checkpoint"):
        manager.restore(_tree(jax.random.key(0)))
    with pytest.raises(ValueError, match="step=...\\) must be an int >= 0; got -1"):
        manager.save(-1, {})
    manager.save(0, {"a": jnp.zeros(3), "b": jnp.ones(2)})
    with pytest.raises(ec.CheckpointError, match="no committed step 5"):
        manager.restore({"a": jnp.zeros(3), "b": jnp.ones(2)}, step=5)
    with pytest.raises(ec.CheckpointError, match=r"missing from the checkpoint \['c'\]"):
        manager.restore({"a": jnp.zeros(3), "c": jnp.ones(2)})
    with pytest.raises(ec.CheckpointError, match=r"leaf 'b' of step 0 has shape \(2,\)"):
        manager.restore({"a": jnp.zeros(3), "b": jnp.ones(4)})
    manager.close()


def test_param_shardings_of_an_abstract_model():
    """`sharded_init` and `CheckpointManager.restore` place abstract leaves by the rules."""
    make = lambda key: ec.nn.MLP(8, 4, 32, 2, key=key)
    abstract = ec.filter_eval_shape(make, jax.random.key(0))
    rules = sharding.fsdp(min_size=64)
    got = ec.param_shardings(abstract, _mesh(4), rules)
    want = ec.param_shardings(make(jax.random.key(0)), _mesh(4), rules)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    assert jax.tree_util.tree_leaves(got) == jax.tree_util.tree_leaves(want)
    assert got.layers[0].weight.spec == jax.sharding.PartitionSpec("data")
