"""The safetensors container: dtype codes, and parsing and validating a file's header.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
(``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``, possibly
padded with spaces) and the tensors' raw little-endian bytes, which the offsets must
cover exactly, without holes or overlaps. Everything here is checked before any tensor
is read; a file written by ecliptic also carries a SHA-256 of its header content.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, BinaryIO

import jax.numpy as jnp
import numpy as np

from ._errors import CheckpointError

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16),
    "I16": np.dtype(np.int16),
    "U32": np.dtype(np.uint32),
    "I32": np.dtype(np.int32),
    "U64": np.dtype(np.uint64),
    "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(jnp.bfloat16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "C64": np.dtype(np.complex64),
    "F8_E4M3": np.dtype(jnp.float8_e4m3fn),
    "F8_E5M2": np.dtype(jnp.float8_e5m2),
}
CODES = {dtype: code for code, dtype in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024  # as the reference implementation
PREFIX = "ecliptic."
VERSION = "1"
HEADER_HASH = PREFIX + "header_sha256"
REQUIRED = ("version", "fingerprint", "leaves", "nodes", "sha256", "header_sha256")


def header_digest(header: dict[str, Any]) -> str:
    """SHA-256 of the header's content (tensor table and metadata) except this digest
    itself, in a canonical JSON form: any change to the header is detected."""
    meta = {k: v for k, v in header.get("__metadata__", {}).items() if k != HEADER_HASH}
    content = dict(header, __metadata__=meta)
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class Entry:
    """One tensor of the table: name, dtype, shape and byte range in the data."""

    __slots__ = ("name", "dtype", "shape", "begin", "end")

    def __init__(self, name: str, dtype: np.dtype, shape: tuple[int, ...], begin: int, end: int):
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end


def corrupt(path: Any, why: str) -> CheckpointError:
    return CheckpointError(f"{label(path)} is not a valid safetensors file: {why}")


def label(source: Any) -> str:
    """How messages name a path or a file object."""
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    name = getattr(source, "name", None)
    return repr(name) if isinstance(name, str) else f"<{type(source).__name__}>"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _is_int(x: Any) -> bool:
    return type(x) is int and x >= 0


def _parse_entry(path: Any, name: str, info: Any) -> Entry:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise corrupt(path, f"the entry for tensor {name!r} is malformed")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise corrupt(path, f"tensor {name!r} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise corrupt(path, f"tensor {name!r} has a malformed shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
        raise corrupt(path, f"tensor {name!r} has malformed data_offsets {offsets!r}")
    np_dtype = DTYPES[dtype]
    begin, end = offsets
    if end - begin != math.prod(shape) * np_dtype.itemsize:
        raise corrupt(path, f"tensor {name!r}: data_offsets {offsets} do not hold a {dtype}{shape}")
    return Entry(name, np_dtype, tuple(shape), begin, end)


def read_header(f: BinaryIO, path: Any) -> tuple[dict[str, Entry], dict[str, str], int]:
    """Parse and validate the container that starts at ``f``'s position:
    ``(entries, metadata, data_start)``, the last as an absolute position in ``f``."""
    try:
        base = f.tell()
        size = f.seek(0, os.SEEK_END) - base
        f.seek(base)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{label(path)} cannot be read: it must be seekable ({e})") from e
    prefix = f.read(8)
    if len(prefix) < 8:
        raise corrupt(path, f"it has only {size} bytes")
    if prefix.startswith(b"\x93NUMPY"):
        raise corrupt(
            path,
            "it is an Equinox-style leaf file (.eqx, written by tree_serialise_leaves);"
            " read it with tree_deserialise_leaves(path, like)",
        )
    n = int.from_bytes(prefix, "little")
    if n < 2 or n > MAX_HEADER or n > size - 8:
        raise corrupt(path, f"header length {n} does not fit the file's {size} bytes")
    raw = f.read(n)
    if len(raw) != n or raw[:1] != b"{":
        raise corrupt(path, "the header is not a JSON object")
    try:
        header = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise corrupt(path, f"unreadable JSON header ({e})") from None
    if not isinstance(header, dict):
        raise corrupt(path, "the header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise corrupt(path, "__metadata__ is not a string -> string map")
    ours = any(k.startswith(PREFIX) for k in metadata)
    if ours and metadata.get(HEADER_HASH) != header_digest(header):
        raise corrupt(path, "the header does not match its recorded checksum (damaged)")
    entries = {
        name: _parse_entry(path, name, info)
        for name, info in header.items()
        if name != "__metadata__"
    }
    position = 0
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != position:
            raise corrupt(path, f"tensor {entry.name!r} does not start where the last ended")
        position = entry.end
    if position != size - 8 - n:
        raise corrupt(
            path,
            f"the tensors need {position} bytes of data, the file holds {size - 8 - n}"
            " (truncated or padded?)",
        )
    return entries, metadata, base + 8 + n
