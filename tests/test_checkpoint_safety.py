"""Checkpoint safety beyond the round trip: requiring checksums, format versions, huge
headers, file objects, and the parallel hashing of large tensors."""

from __future__ import annotations

import io
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from persistence_helpers import bits_equal

import ecliptic
from ecliptic import CheckpointError
from ecliptic._io._safetensors import HEADER_HASH, header_digest


def split(data: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + body


def with_metadata(data: bytes, **changes: str) -> bytes:
    """The checkpoint with some ecliptic metadata changed, its header checksum redone (as
    a deliberate edit would): only the changed entry is then wrong."""
    header, body = split(data)
    header["__metadata__"].update({"ecliptic." + k: v for k, v in changes.items()})
    header["__metadata__"][HEADER_HASH] = header_digest(header)
    return join(header, body)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.safetensors"
    tree = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(4, np.int32)}
    ecliptic.save(path, tree)
    return path, tree


def test_verify_require_refuses_files_without_checksums(saved):
    path, tree = saved
    header, body = split(path.read_bytes())
    del header["__metadata__"]  # stripping the metadata makes the file look foreign ...
    body = bytearray(body)
    body[-1] ^= 0x40  # ... so a flipped data bit goes unnoticed by the default check
    stripped = path.with_name("stripped.safetensors")
    stripped.write_bytes(join(header, bytes(body)))
    assert not bits_equal(ecliptic.load(stripped, tree), tree)  # documented limitation
    with pytest.raises(
        CheckpointError,
        match=r"stripped\.safetensors' has no ecliptic "
        r"checksums .*verify='require'\) refuses",
    ):
        ecliptic.load(stripped, tree, verify="require")
    assert bits_equal(ecliptic.load(path, tree, verify="require"), tree)
    foreign = path.with_name("foreign.safetensors")
    safetensors.numpy.save_file(tree, str(foreign))
    assert bits_equal(ecliptic.load(foreign, tree), tree)
    with pytest.raises(CheckpointError, match="has no ecliptic checksums"):
        ecliptic.load(foreign, tree, verify="require")


@pytest.mark.parametrize("verify", ["required", 1, None, "True"])
def test_verify_must_be_a_known_mode(saved, verify):
    path, tree = saved
    with pytest.raises(
        ValueError,
        match=r"load\(verify=\.\.\.\) must be one of \(True, "
        r"False, 'require'\); got",
    ):
        ecliptic.load(path, tree, verify=verify)


@pytest.mark.parametrize(
    "version, pattern",
    [
        (
            "0",
            r"written in an older, unsupported ecliptic checkpoint format \(version '0'; "
            r"this ecliptic reads version '1'\)",
        ),
        ("2", r"written in a newer ecliptic checkpoint format \(version '2'"),
        (
            "one",
            r"is not a valid safetensors file: its ecliptic format version 'one' is "
            r"invalid",
        ),
        ("", r"format version '' is invalid"),
    ],
)
def test_format_versions(saved, version, pattern):
    path, tree = saved
    path.write_bytes(with_metadata(path.read_bytes(), version=version))
    with pytest.raises(CheckpointError, match=pattern):
        ecliptic.load(path, tree)


def test_huge_header_errors_are_short_and_fast(tmp_path):
    path = tmp_path / "many.safetensors"
    safetensors.numpy.save_file(
        {f"t{i}": np.zeros(0, np.float32) for i in range(200_000)}, str(path)
    )
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        ecliptic.load(path, {"w": np.zeros(2, np.float32)})
    seconds = time.perf_counter() - start
    message = str(info.value)
    assert "(200001 problems)" in message and "... and 199981 more" in message
    assert "w: expected f32[2], not in the file" in message
    assert len(message.splitlines()) < 30 and len(message) < 4000
    assert seconds < 30


class WriteOnly:
    """A stream with `write` and nothing else (a pipe, a socket): no seek, no tell."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)


def test_save_to_file_objects(tmp_path):
    tree = {
        "w": jnp.arange(6.0).reshape(2, 3),
        "k": jax.random.key(1),
        "big": np.arange(1 << 19, dtype=np.float32),
    }
    buffer = io.BytesIO()
    ecliptic.save(buffer, tree, metadata={"step": "3"})
    stream = WriteOnly()
    ecliptic.save(stream, tree, metadata={"step": "3"})
    path = tmp_path / "m.safetensors"
    ecliptic.save(path, tree, metadata={"step": "3"})
    # The same bytes whichever way they were written, and they load back exactly.
    assert buffer.getvalue() == b"".join(stream.parts) == path.read_bytes()
    buffer.seek(0)
    loaded = ecliptic.load(buffer, tree, verify="require")
    assert bits_equal(loaded, tree)
    with open(tmp_path / "f.safetensors", "wb") as f:
        f.write(b"prefix")
        ecliptic.save(f, tree)
    with open(tmp_path / "f.safetensors", "rb") as f:
        assert f.read(6) == b"prefix"
        assert bits_equal(ecliptic.load(f, tree), tree)


def test_large_tensors_are_hashed_and_checked_in_parallel(tmp_path):
    # Tensors above the size hashed inline, so the worker threads are used.
    tree = {f"t{i}": np.full((1 << 19) + i, i, np.float32) for i in range(6)}
    path = tmp_path / "big.safetensors"
    ecliptic.save(path, tree)
    assert bits_equal(ecliptic.load(path, tree), tree)
    header, _ = split(path.read_bytes())
    digests = json.loads(header["__metadata__"]["ecliptic.sha256"])
    import hashlib

    for name, array in tree.items():  # independent reference: hashlib on the arrays
        assert digests[name] == hashlib.sha256(array.tobytes()).hexdigest()
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    begin = header["t3"]["data_offsets"][0]
    data[8 + n + begin + 12345] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError,
        match=r"t3: the data in .* does not match its "
        r"recorded checksum",
    ):
        ecliptic.load(path, tree)


def test_loaded_jax_arrays_are_independent_of_the_file(tmp_path):
    tree = {"w": jnp.arange(1 << 16, dtype=jnp.float32)}
    path = tmp_path / "m.safetensors"
    ecliptic.save(path, tree)
    first = ecliptic.load(path, tree)
    ecliptic.save(path, {"w": jnp.zeros(1 << 16, jnp.float32)})
    second = ecliptic.load(path, tree)
    np.testing.assert_array_equal(first["w"], np.arange(1 << 16, dtype=np.float32))
    np.testing.assert_array_equal(second["w"], np.zeros(1 << 16, np.float32))
    np.testing.assert_array_equal(first["w"] + 1, np.arange(1 << 16, dtype=np.float32) + 1)


def test_very_large_tensor_is_hashed_chunk_by_chunk_as_it_is_read(tmp_path):
    # Above two read chunks (32 MB): hashed in its own thread while it is being read.
    big = np.arange(10 * 2**20 + 3, dtype=np.float32)
    tree = {"a": np.ones(5, np.float32), "big": big, "z": np.full(7, 2, np.int32)}
    path = tmp_path / "big.safetensors"
    ecliptic.save(path, tree)
    assert bits_equal(ecliptic.load(path, tree), tree)
    data = bytearray(path.read_bytes())
    header, _ = split(bytes(data))
    n = int.from_bytes(data[:8], "little")
    begin, end = header["big"]["data_offsets"]
    data[8 + n + end - 5] ^= 2  # in the last, partial chunk
    path.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError,
        match=r"big: the data in .* does not match its "
        r"recorded checksum",
    ):
        ecliptic.load(path, tree)
    data[8 + n + end - 5] ^= 2
    data[8 + n + begin + 17 * 2**20] ^= 2  # in the second chunk
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"big: the data .* recorded checksum"):
        ecliptic.load(path, tree)
