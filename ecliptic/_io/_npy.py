"""``.npy`` records, read without unpickling: the header is parsed as literals and
checked against the expected shape and dtype before any data is read, so that a corrupted
or foreign file gives a `CheckpointError`, never a huge allocation."""

from __future__ import annotations

import ast
import math
import struct
from typing import Any, BinaryIO

import numpy as np

from .._messages import array_text
from ._errors import CheckpointError, LeafMismatchError

NPY_MAGIC = b"\x93NUMPY"
_MAX_NPY_HEADER = 1 << 20
_READ_CHUNK = 1 << 26


def same_dtype(found: np.dtype, expected: np.dtype) -> bool:
    """Equal dtypes, ignoring byte order; a ``void`` of the right size counts as an
    extension dtype such as bfloat16 (that is how ``np.save`` records those)."""
    if found.itemsize != expected.itemsize:
        return False
    if expected.kind == "V" and found.kind == "V" and found.names is None:
        return found.str[1:] == expected.str[1:]
    return found.newbyteorder("<") == expected.newbyteorder("<")


def read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    """Exactly `n` bytes of `f`; a `CheckpointError` naming `what` if the file ends early."""
    # Read in bounded chunks: a short file then costs only what it holds, not ``n``.
    parts = []
    remaining = n
    try:
        while remaining:
            part = f.read(min(remaining, _READ_CHUNK))
            if not part:
                break
            parts.append(part)
            remaining -= len(part)
    except OSError as e:
        raise CheckpointError(f"could not read {what}: {e}") from e
    if remaining:
        raise CheckpointError(f"file ends early: {what} needs {n} bytes, only {n - remaining} left")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_npy_header(
    f: BinaryIO, expected: np.dtype | None = None
) -> tuple[np.dtype, tuple[int, ...], bool]:
    """Parse one ``.npy`` header from ``f`` (safely, as literals): dtype, shape, order.

    NumPy writes some extension dtypes under a name it cannot read back (float8_e5m2 as
    ``<f1``); such a name is taken as ``expected`` when it is exactly that dtype's name."""
    magic = read_exact(f, 8, "an .npy header")
    if magic[:6] != NPY_MAGIC:
        raise CheckpointError(
            f"not an .npy record (starts with {magic[:6]!r}, expected {NPY_MAGIC!r})"
        )
    major = magic[6]
    if major == 1:
        (length,) = struct.unpack("<H", read_exact(f, 2, "an .npy header"))
    elif major in (2, 3):
        (length,) = struct.unpack("<I", read_exact(f, 4, "an .npy header"))
    else:
        raise CheckpointError(f"unsupported .npy format version {major}.{magic[7]}")
    if length > _MAX_NPY_HEADER:
        raise CheckpointError(f".npy header claims {length} bytes, more than any real one")
    raw = read_exact(f, length, "an .npy header")
    try:
        header = ast.literal_eval(raw.decode("utf-8" if major == 3 else "latin1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise CheckpointError(f"unreadable .npy header {raw[:60]!r}") from e
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise CheckpointError(f"malformed .npy header {raw[:60]!r}")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str) or not isinstance(fortran, bool):
        raise CheckpointError(f"malformed .npy header {raw[:60]!r}")
    if not isinstance(shape, tuple) or not all(type(d) is int and 0 <= d < 2**62 for d in shape):
        raise CheckpointError(f"malformed shape {shape!r} in .npy header")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError, SyntaxError) as e:
        if expected is None or descr[1:] != expected.str[1:] or descr[:1] not in "<>|=":
            raise CheckpointError(f"unknown dtype {descr!r} in .npy header") from e
        dtype = expected
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
        raise CheckpointError(f"refusing the dtype {descr!r}: only plain numeric arrays load")
    return dtype, shape, fortran


def read_npy_array(f: BinaryIO, expected_shape: Any, expected_dtype: Any) -> np.ndarray:
    """Read one ``.npy`` record, checking shape and dtype against the expected ones
    before reading its data. Returns a writeable array of exactly ``expected_dtype``."""
    expected_dtype = np.dtype(expected_dtype)
    expected_shape = tuple(int(d) for d in expected_shape)
    dtype, shape, fortran = read_npy_header(f, expected_dtype)
    if shape != expected_shape or not same_dtype(dtype, expected_dtype):
        raise LeafMismatchError(
            f"expected {array_text(expected_dtype, expected_shape)}, file has "
            f"{array_text(dtype, shape)}",
            found=(shape, dtype),
            expected=(expected_shape, expected_dtype),
        )
    nbytes = math.prod(shape) * dtype.itemsize
    data = read_exact(f, nbytes, f"the data of a {array_text(expected_dtype, shape)} array")
    if dtype.kind == "V":  # an extension dtype (bfloat16, float8, ...) saved as raw bytes
        flat = np.frombuffer(data, np.uint8).view(expected_dtype)
    else:
        flat = np.frombuffer(data, dtype)
    array = flat.reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=expected_dtype, order="C")  # a native, writeable copy


def write_npy(f: BinaryIO, array: np.ndarray) -> None:
    """Write `array` to `f` as one ``.npy`` record (never pickled)."""
    np.save(f, array, allow_pickle=False)
