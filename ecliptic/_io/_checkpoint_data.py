"""Moving a checkpoint's tensor data at the disk's speed, with its SHA-256 checksums.

Hashing (about 1.6 GB/s per core) costs as much as writing to disk, so it must not come
after it: large tensors are hashed in worker threads (hashlib releases the GIL) while the
main thread writes or reads, and each tensor is written straight from its own buffer and
read straight into a preallocated array, without intermediate copies. When a tensor has
to be copied to host memory first (a JAX array on an accelerator, a big-endian array),
the copies alive at once are bounded (`BUFFER` bytes, or one tensor if larger), so
saving or loading never holds a second copy of the whole model.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

import jax
import numpy as np

from .._paths import display
from ._arrays import array_like, as_numpy, is_key_dtype
from ._errors import CheckpointError
from ._safetensors import Entry, corrupt, label

__all__ = ["hash_tensors", "read_tensors", "write_tensors"]

CHUNK = 16 * 1024 * 1024
BUFFER = 64 * 1024 * 1024
_ALIGN = 64
_INLINE = 1024 * 1024  # smaller tensors are hashed in the calling thread
_WORKERS = max(1, min(8, os.cpu_count() or 1))


def _write_chunk(f: BinaryIO, chunk: memoryview) -> None:
    # One module-level function per write, so that tests can interrupt a save mid-way.
    f.write(chunk)


def raw_bytes(array: np.ndarray) -> memoryview:
    """The little-endian bytes of `array`, as a view of its own buffer when it is
    contiguous and little-endian already."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return memoryview(array.reshape(-1).view(np.uint8))  # pyright: ignore[reportArgumentType]


def _sha256(data: memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_host_view(leaf: Any) -> bool:
    """Whether `leaf`'s bytes can be had without a copy (NumPy, or a JAX array in host
    memory), so that keeping them for a hash costs no memory."""
    if isinstance(leaf, np.ndarray):
        return leaf.flags.c_contiguous and leaf.dtype.byteorder != ">"
    if isinstance(leaf, jax.Array) and not is_key_dtype(leaf.dtype):
        try:
            devices = leaf.devices()
        except Exception:
            return False
        return len(devices) == 1 and next(iter(devices)).platform == "cpu"
    return False


class _Lane:
    """The SHA-256 of one large tensor, fed chunk by chunk as they are read, in a thread
    of its own: hashing a tensor overlaps with reading the same tensor."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.thread = ThreadPoolExecutor(1, "ecliptic-sha256-lane")

    def update(self, chunk: memoryview) -> None:
        self.thread.submit(self.sha.update, chunk)

    def result(self) -> str:
        self.thread.shutdown(wait=True)
        return self.sha.hexdigest()

    def cancel(self) -> None:
        self.thread.shutdown(wait=True, cancel_futures=True)


class _Hashes:
    """SHA-256 of many buffers, the large ones in worker threads, with a bound on the
    bytes of host copies that wait for their hash."""

    def __init__(self, pool: ThreadPoolExecutor | None):
        self.pool = pool
        self.pending: deque[tuple[str, Future[str] | _Lane | str, int]] = deque()
        self.held = 0
        self.done: dict[str, str] = {}

    def make_room(self, nbytes: int) -> None:
        """Wait for the oldest hashes until a new copy of `nbytes` fits the bound."""
        while self.pending and self.held + nbytes > max(BUFFER, nbytes):
            self._finish_oldest()

    def add(self, name: str, data: memoryview, held: int) -> None:
        if self.pool is None or len(data) < _INLINE:
            self.pending.append((name, _sha256(data), 0))
            return
        self.pending.append((name, self.pool.submit(_sha256, data), held))
        self.held += held

    def add_lane(self, name: str, lane: _Lane, held: int) -> None:
        self.pending.append((name, lane, held))
        self.held += held

    def _finish_oldest(self) -> None:
        name, digest, held = self.pending.popleft()
        self.done[name] = digest if isinstance(digest, str) else digest.result()
        self.held -= held

    def finish(self) -> dict[str, str]:
        while self.pending:
            self._finish_oldest()
        return self.done

    def cancel(self) -> None:
        """Stop the lanes still running (after an error)."""
        for _, digest, _ in self.pending:
            if isinstance(digest, _Lane):
                digest.cancel()


def _pool(total: int) -> ThreadPoolExecutor | None:
    return ThreadPoolExecutor(_WORKERS, "ecliptic-sha256") if total >= 2 * _INLINE else None


def _host_bytes(leaf: Any, hashes: _Hashes) -> tuple[memoryview, int]:
    copy = not _is_host_view(leaf)
    if copy:
        hashes.make_room(int(np.dtype(leaf.dtype).itemsize * np.prod(leaf.shape)))
    data = raw_bytes(as_numpy(leaf))
    return data, (len(data) if copy else 0)


def hash_tensors(tensors: list[tuple[str, Any]]) -> dict[str, str]:
    """The SHA-256 (hex) of every tensor's little-endian bytes, by name, hashed in
    parallel."""
    return write_tensors(None, tensors, digests=True, sync=False)


def write_tensors(
    f: BinaryIO | None, tensors: list[tuple[str, Any]], *, digests: bool, sync: bool
) -> dict[str, str]:
    """Write the tensors' bytes one after the other at `f`'s position, and, if `digests`,
    hash them meanwhile (`f` None: only hash). With `sync`, fsync the data while the last
    hashes finish.

    **Returns:** the digests by name (empty without `digests`)."""
    total = sum(np.dtype(leaf.dtype).itemsize * int(np.prod(leaf.shape)) for _, leaf in tensors)
    pool = _pool(total) if digests else None
    try:
        hashes = _Hashes(pool)
        for name, leaf in tensors:
            data, held = _host_bytes(leaf, hashes)
            if digests:
                hashes.add(name, data, held)
            if f is not None:
                for start in range(0, len(data), CHUNK):
                    _write_chunk(f, data[start : start + CHUNK])
            del data
        if sync and f is not None:
            f.flush()
            os.fsync(f.fileno())
        return hashes.finish()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary: JAX's CPU backend
    then adopts the buffer in `device_put` instead of copying it."""
    nbytes = dtype.itemsize * int(np.prod(shape))
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    skip = -raw.ctypes.data % _ALIGN
    return raw[skip : skip + nbytes].view(dtype).reshape(shape)


def _check(path: Any, expected: dict[str, str], found: dict[str, str]) -> None:
    for name, digest in found.items():
        if digest != expected[name]:
            raise CheckpointError(
                f"{display(name)}: the data in {label(path)} does not match its recorded "
                "checksum: the file is corrupted"
            )
    found.clear()


def read_tensors(
    f: BinaryIO,
    path: Any,
    start: int,
    wanted: Iterable[tuple[int, Entry]],
    leaves: list[Any],
    expected: dict[str, str] | None,
) -> None:
    """Read each wanted tensor (``(leaf index, entry)``) into a new array, checking its
    SHA-256 against `expected` when given, and store it in `leaves` as the same kind of
    leaf as the one there. Raises `CheckpointError` for a short read or a checksum
    mismatch (after which `leaves` must be discarded)."""
    order = sorted(wanted, key=lambda item: item[1].begin)
    pool = _pool(sum(e.end - e.begin for _, e in order)) if expected is not None else None
    hashes = _Hashes(pool)
    try:
        position = -1
        for i, entry in order:
            nbytes = entry.end - entry.begin
            hashes.make_room(nbytes)
            array = _aligned_empty(entry.shape, entry.dtype.newbyteorder("<"))
            if position != start + entry.begin:
                f.seek(start + entry.begin)
            view = memoryview(array.reshape(-1).view(np.uint8))  # pyright: ignore[reportArgumentType]
            lane = _Lane() if expected is not None and nbytes >= 2 * CHUNK else None
            if lane is not None:
                hashes.add_lane(entry.name, lane, nbytes)
            for begin in range(0, nbytes, CHUNK) if lane is not None else (0,):
                part = view[begin : begin + CHUNK] if lane is not None else view
                if f.readinto(part) != len(part):  # pyright: ignore[reportAttributeAccessIssue]
                    raise corrupt(path, f"tensor {entry.name!r} is cut short")
                if lane is not None:
                    lane.update(part)
            position = start + entry.end
            if expected is not None and lane is None:
                hashes.add(entry.name, view, nbytes)
                if len(hashes.done) > 64:
                    _check(path, expected, hashes.done)
            leaves[i] = array_like(array.astype(entry.dtype, copy=False), leaves[i])
        if expected is not None:
            _check(path, expected, hashes.finish())
    finally:
        hashes.cancel()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
