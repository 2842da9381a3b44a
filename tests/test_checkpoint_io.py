"""ecliptic.save / ecliptic.load: validated, atomic safetensors checkpoints."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given
from persistence_helpers import (
    DTYPES,
    Node,
    abstract,
    abstract_zoo,
    bits_equal,
    fill,
    layer_zoo,
    random_trees,
    raw_bytes,
)

import ecliptic
import ecliptic._io._atomic as atomic_files
import ecliptic._io._checkpoint_data as checkpoint_data
from ecliptic import CheckpointError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def arrays_by_name(tree):
    return {name: leaf for name, leaf in ecliptic.named_parameters(tree, remove_duplicate=False)}


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_every_layer_roundtrips_bit_exactly(tmp_path, dtype):
    path = tmp_path / "ckpt.safetensors"
    skeletons = abstract_zoo(dtype)
    for name, tree in layer_zoo(dtype, seed=3).items():
        ecliptic.save(path, tree)
        assert bits_equal(ecliptic.load(path, skeletons[name]), tree), name
        assert bits_equal(ecliptic.load(path, fill(skeletons[name], 4)), tree), name
        # Any safetensors reader sees the same tensors under the dotted names.
        theirs = safetensors.numpy.load_file(path)
        ours = arrays_by_name(tree)
        assert set(theirs) == set(ours), name
        for key, value in ours.items():
            assert raw_bytes(theirs[key]) == raw_bytes(value), (name, key)


@given(random_trees)
def test_random_trees_roundtrip(tree):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "random.safetensors")
        ecliptic.save(path, tree)
        assert bits_equal(ecliptic.load(path, tree), tree)
        assert bits_equal(ecliptic.load(path, abstract(tree)), tree)


def test_state_keys_and_numpy_leaves_roundtrip(tmp_path):
    model, state = fill(abstract_zoo()["batchnorm"])
    state = state.set(model.batch_counter, jnp.array(5, jnp.int32))
    tree = {
        "model": model,
        "state": state,
        "key": jax.random.split(jax.random.key(1), 3),
        "np": np.arange(4.0),
        "scalar": np.float32(2.5),
        "empty": jnp.zeros((0, 3)),
    }
    path = tmp_path / "s.safetensors"
    ecliptic.save(path, tree)
    out = ecliptic.load(path, tree)
    assert bits_equal(out, tree)
    assert isinstance(out["np"], np.ndarray) and isinstance(out["scalar"], np.float32)  # pyright: ignore[reportArgumentType]
    assert out["state"].get(model.batch_counter) == 5
    assert out["state"].get(model.batch_state_index)[0].shape == (4,)
    # The state alone, too.
    ecliptic.save(path, state)
    assert bits_equal(ecliptic.load(path, state), state)


def test_loads_onto_like_sharding(tmp_path):
    mesh = jax.make_mesh((len(jax.devices()),), ("d",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    value = jnp.arange(16.0)
    path = tmp_path / "s.safetensors"
    ecliptic.save(path, {"w": value})
    like = {"w": jax.ShapeDtypeStruct((16,), jnp.float32, sharding=sharding)}
    out = ecliptic.load(path, like)
    assert out["w"].sharding == sharding
    np.testing.assert_array_equal(out["w"], value)


def test_reads_foreign_safetensors_and_metadata(tmp_path):
    path = tmp_path / "foreign.safetensors"
    safetensors.numpy.save_file(
        {"weight": np.ones((2, 3), np.float32), "bias": np.zeros(2, np.float32)},
        path,
        metadata={"format": "np"},
    )
    like = fill(ecliptic.filter_eval_shape(ecliptic.nn.Linear, 3, 2, key=jax.random.key(0)))
    out = ecliptic.load(path, like)
    np.testing.assert_array_equal(out.weight, np.ones((2, 3)))
    assert ecliptic.load_metadata(path) == {"format": "np"}
    ecliptic.save(path, like, metadata={"step": "10", "note": "ünïcode"})
    assert ecliptic.load_metadata(path) == {"step": "10", "note": "ünïcode"}
    with pytest.raises(TypeError, match=r"dict\[str, str\]"):
        ecliptic.save(path, like, metadata={"step": 10})  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="reserved"):
        ecliptic.save(path, like, metadata={"ecliptic.version": "2"})


# ------------------------------------------------------------------------ bad input


def small_mlp(out=2, depth=2):
    # Built abstractly and filled: constructing layers for real compiles initialisers.
    make = lambda: ecliptic.nn.MLP(4, out, 8, depth, key=jax.random.key(0))
    return fill(ecliptic.filter_eval_shape(make))


@pytest.fixture
def saved(tmp_path):
    model = small_mlp()
    path = tmp_path / "model.safetensors"
    ecliptic.save(path, model)
    return path, model


def test_truncated_file(saved):
    path, model = saved
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 20, 7, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="not a valid safetensors file"):
            ecliptic.load(path, model)


def test_flipped_header_byte(saved):
    path, model = saved
    data = bytearray(path.read_bytes())
    for position in (3, 8, 12, 40, 200):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        path.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError):
            ecliptic.load(path, model)


def test_flipped_data_byte_is_caught_by_the_checksum(saved):
    path, model = saved
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"layers\.2\.bias: .*checksum"):
        ecliptic.load(path, model)
    ecliptic.load(path, model, verify=False)  # opt out


def test_not_safetensors(tmp_path, saved):
    _, model = saved
    path = tmp_path / "x.safetensors"
    not_an_object = b"\x10" + bytes(7) + b"[1, 2]" + bytes(10)
    for content in (b"", b"PK\x03\x04 this is a zip", os.urandom(300), not_an_object):
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match="not a valid safetensors file"):
            ecliptic.load(path, model)
    ecliptic.tree_serialise_leaves(path, model)  # the other format
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        ecliptic.load(path, model)
    with pytest.raises(CheckpointError, match="cannot read"):
        ecliptic.load(tmp_path / "missing.safetensors", model)
    # A missing file is also a FileNotFoundError, as with open() (and Equinox).
    with pytest.raises(FileNotFoundError, match="cannot read .*missing.safetensors"):
        ecliptic.load(tmp_path / "missing.safetensors", model)
    with pytest.raises(FileNotFoundError, match="cannot open .*missing.eqx"):
        ecliptic.tree_deserialise_leaves(tmp_path / "missing.eqx", model)
    (tmp_path / "a_directory.safetensors").mkdir()
    with pytest.raises(CheckpointError) as info:  # another OSError: a CheckpointError only
        ecliptic.load(tmp_path / "a_directory.safetensors", model)
    assert not isinstance(info.value, FileNotFoundError)


def test_different_architecture_lists_every_problem(saved):
    path, _ = saved
    other = small_mlp(3, 3)
    with pytest.raises(CheckpointError) as info:
        ecliptic.load(path, other)
    message = str(info.value)
    assert r"layers.2.weight: expected f32[8,8], file has f32[2,8]" in message
    assert "layers.3.weight: expected f32[3,8], not in the file" in message
    assert "depth: file has 2, like has 3 (static)" in message
    # A like with arrays at other places.
    message = r"weight: in the file \(f32\[8,4\]\) but not in like"
    with pytest.raises(CheckpointError, match=message):
        ecliptic.load(path, {"something": jnp.ones(1)})


def test_dtype_and_shape_mismatch(saved):
    path, model = saved
    like = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float16) if isinstance(x, jax.Array) else x,
        model,
    )
    message = r"layers\.0\.weight: expected f16\[8,4\], file has f32\[8,4\]"
    with pytest.raises(CheckpointError, match=message):
        ecliptic.load(path, like)
    like = ecliptic.tree_at(lambda m: m.layers[1].bias, model, jnp.ones(9))
    message = r"layers\.1\.bias: expected f32\[9\], file has f32\[8\]"
    with pytest.raises(CheckpointError, match=message):
        ecliptic.load(path, like, check_static=False)


def test_non_array_like_where_file_has_arrays(saved):
    path, model = saved
    like = ecliptic.tree_at(lambda m: m.layers[0].bias, model, 3.0)
    message = r"layers\.0\.bias: file has f32\[8\], like has a non-array leaf \(float\)"
    with pytest.raises(CheckpointError, match=message):
        ecliptic.load(path, like)


def test_static_differences(tmp_path):
    path = tmp_path / "n.safetensors"
    ecliptic.save(path, Node(jnp.ones(2), jax.nn.relu, "p"))
    with pytest.raises(CheckpointError, match=r"<root>\.tag: file has 'p', like has 'q'"):
        ecliptic.load(path, Node(jnp.ones(2), jax.nn.relu, "q"))
    with pytest.raises(CheckpointError, match=r"right: file had relu, like has gelu"):
        ecliptic.load(path, Node(jnp.ones(2), jax.nn.gelu, "p"))
    out = ecliptic.load(path, Node(jnp.zeros(2), jax.nn.gelu, "q"), check_static=False)
    assert out.tag == "q" and out.right is jax.nn.gelu
    np.testing.assert_array_equal(out.left, np.ones(2))
    ecliptic.save(path, [jnp.ones(1)])
    with pytest.raises(CheckpointError, match="file has a list, like has a tuple"):
        ecliptic.load(path, (jnp.ones(1),))


def test_unsupported_dtype_and_duplicate_names(tmp_path):
    with pytest.raises(CheckpointError, match=r"x: the dtype complex128 cannot be stored"):
        ecliptic.save(tmp_path / "c", {"x": np.ones(2, np.complex128)})
    with pytest.raises(CheckpointError, match="both named 'a.b'"):
        ecliptic.save(tmp_path / "d", {"a.b": jnp.ones(1), "a": {"b": jnp.ones(1)}})
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------- atomicity


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ecliptic.save(tmp_path / "nope" / "m.safetensors", {"a": jnp.ones(1)})
    with pytest.raises(CheckpointError, match="is a directory"):
        ecliptic.save(tmp_path, {"a": jnp.ones(1)})


def test_unwritable_directory_keeps_old_checkpoint(saved, monkeypatch):
    path, model = saved
    before = path.read_bytes()
    if os.geteuid() != 0:  # root writes anywhere: simulate the refusal below instead
        os.chmod(path.parent, 0o500)
        try:
            with pytest.raises(CheckpointError, match="cannot create a file"):
                ecliptic.save(path, {"other": jnp.ones(1)})
        finally:
            os.chmod(path.parent, 0o700)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic_files.tempfile, "mkstemp", refuse)
    with pytest.raises(CheckpointError, match="cannot create a file .*Permission denied"):
        ecliptic.save(path, {"other": jnp.ones(1)})
    assert path.read_bytes() == before


def test_atomic_write_is_reusable_for_other_files(tmp_path):
    # The leaf serialisation writes through the same function: keep its signature.
    from ecliptic._io._atomic import atomic_write

    path = tmp_path / "notes.bin"
    atomic_write(path, lambda f: f.write(b"first"))  # pyright: ignore[reportArgumentType]
    atomic_write(str(path), lambda f: f.write(b"second"))  # pyright: ignore[reportArgumentType]
    assert path.read_bytes() == b"second" and os.listdir(tmp_path) == ["notes.bin"]


def test_failure_mid_write_keeps_old_checkpoint(saved, monkeypatch):
    path, model = saved
    before = path.read_bytes()

    def disk_full(f, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_data, "_write_chunk", disk_full)
    with pytest.raises(CheckpointError, match="No space left.*unchanged"):
        ecliptic.save(path, model)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]  # the temporary file was removed


_KILLED_WRITER = """
import sys, time
import numpy as np
import ecliptic, ecliptic._io._checkpoint_data as cdata
path, mode = sys.argv[1], sys.argv[2]
if mode == "pause":
    write = cdata._write_chunk
    def pause(f, chunk):
        write(f, chunk)
        f.flush()
        print("mid-write", flush=True)
        time.sleep(60)
    cdata._write_chunk = pause
    ecliptic.save(path, {"w": np.full(1 << 20, 2.0, np.float32)})
else:
    print("looping", flush=True)
    for i in range(10**6):
        ecliptic.save(path, {"w": np.full(1 << 21, float(i), np.float32)})
"""


def _spawn_writer(path, mode):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED_WRITER), str(path), mode],
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )


def _temporaries(directory):
    return sorted(name for name in os.listdir(directory) if ".ecliptic-tmp." in name)


def test_sigkill_mid_save_leaves_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    old = {"w": np.full(1 << 20, 1.0, np.float32)}
    ecliptic.save(path, old)
    writer = _spawn_writer(path, "pause")
    try:
        assert writer.stdout.readline().strip() == b"mid-write"  # pyright: ignore[reportOptionalMemberAccess]
        [temporary] = _temporaries(tmp_path)
        assert temporary.startswith(".ckpt.safetensors.ecliptic-tmp.")
        assert f".{writer.pid}." in temporary  # the name says whose it is
        # A live writer's temporary file survives another save and a load of the path.
        ecliptic.save(path, old)
        ecliptic.load(path, old)
        assert _temporaries(tmp_path) == [temporary]
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        writer.kill()
    assert writer.returncode == -signal.SIGKILL
    assert _temporaries(tmp_path) == [temporary]  # the killed writer left it behind
    assert bits_equal(ecliptic.load(path, old), old)
    assert _temporaries(tmp_path) == []  # ... and the next load of the path removed it


def test_next_save_removes_temporaries_of_dead_writers_only(tmp_path):
    path = tmp_path / "m.safetensors"
    writer = _spawn_writer(path, "pause")
    try:
        assert writer.stdout.readline().strip() == b"mid-write"  # pyright: ignore[reportOptionalMemberAccess]
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        writer.kill()
    [dead] = _temporaries(tmp_path)
    host = dead.split(".ecliptic-tmp.")[1].split(".")[0]
    live = f".m.safetensors.ecliptic-tmp.{host}.{os.getpid()}.abc"
    other_host = f".m.safetensors.ecliptic-tmp.elsewhere-{host}.{writer.pid}.abc"
    other_file = f".n.safetensors.ecliptic-tmp.{host}.{writer.pid}.abc"
    for name in (live, other_host, other_file):
        (tmp_path / name).write_bytes(b"x")
    ecliptic.save(path, {"w": np.ones(3, np.float32)})
    assert _temporaries(tmp_path) == sorted([live, other_host, other_file])


def test_sigkill_during_save_loop_always_leaves_a_whole_checkpoint(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    like = {"w": np.zeros(1 << 21, np.float32)}
    ecliptic.save(path, {"w": np.full(1 << 21, -1.0, np.float32)})
    writer = _spawn_writer(path, "loop")
    try:
        assert writer.stdout.readline().strip() == b"looping"  # pyright: ignore[reportOptionalMemberAccess]
        time.sleep(0.7)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        writer.kill()
    w = ecliptic.load(path, like)["w"]  # verifies every checksum
    assert np.all(w == w[0])


def test_header_is_plain_json_with_metadata(saved):
    path, _ = saved
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert n % 8 == 0
    header = json.loads(data[8 : 8 + n])
    meta = header["__metadata__"]
    assert meta["ecliptic.version"] == "1"
    assert [name for name, _ in json.loads(meta["ecliptic.leaves"])][:2] == [
        "layers.0.weight",
        "layers.0.bias",
    ]
    assert header["layers.0.weight"] == {"dtype": "F32", "shape": [8, 4], "data_offsets": [0, 128]}


def test_abstract_leaves_cannot_be_saved(tmp_path):
    with pytest.raises(CheckpointError, match=r"w: an abstract leaf"):
        ecliptic.save(tmp_path / "a", {"w": jax.ShapeDtypeStruct((2,), jnp.float32)})


def test_file_objects(saved):
    path, model = saved
    buffer = io.BytesIO(b"prefix" + path.read_bytes())
    buffer.seek(6)  # a checkpoint embedded in a larger stream
    assert bits_equal(ecliptic.load(buffer, model), model)
    with pytest.raises(TypeError, match="path must be"):
        ecliptic.load(123, model)


class Versioned(ecliptic.Module):
    weight: jax.Array
    tag: str = ecliptic.field(static=True)


def test_static_fields_on_one_side_only_are_not_compared(tmp_path):
    class Versioned2(ecliptic.Module):  # the same class, a version later
        __qualname__ = "Versioned"
        weight: jax.Array
        tag: str = ecliptic.field(static=True)
        added: int = ecliptic.field(static=True, default=3)

    path = tmp_path / "v.safetensors"
    ecliptic.save(path, Versioned(jnp.ones(2), "a"))
    out = ecliptic.load(path, Versioned2(jnp.zeros(2), "a"))
    assert out.added == 3 and float(out.weight[0]) == 1.0
    with pytest.raises(CheckpointError, match=r"<root>\.tag: file has 'a', like has 'b'"):
        ecliptic.load(path, Versioned2(jnp.zeros(2), "b"))
