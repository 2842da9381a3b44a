"""Safe checkpoints: `save` / `load` in the safetensors format, written atomically.

The container is parsed and written here, byte by byte: an 8-byte little-endian header
length, a JSON header (``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {..}}``)
and the raw little-endian tensor bytes, with no holes. Any safetensors reader can read
the files (`safetensors.numpy.load_file`, `safetensors.torch.load_file`); ecliptic adds
to ``__metadata__`` (string -> string, JSON-encoded) the tree's leaf names and kinds, the
static data of every node with a fingerprint of it, and a SHA-256 of every tensor, so
that `load` can check everything and say exactly what differs.

Writes go to a temporary file in the target's directory, which is flushed, fsynced and
then renamed over the target (`os.replace`, atomic), and the directory is fsynced: a
crash at any point leaves either the old file or the new one, never a mixture.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import jax
import jax.tree_util as jtu
import numpy as np

from ._fingerprint import describe_tree, fingerprint
from ._paths import display, named_leaves
from ._safetensors_format import (
    CODES,
    DTYPES,
    HEADER_HASH,
    PREFIX,
    REQUIRED,
    VERSION,
    Entry,
    corrupt,
    header_digest,
    label,
    read_header,
)
from ._serialisation import (
    CheckpointError,
    array_like,
    as_numpy,
    cannot_open,
    describe,
    is_key_dtype,
    key_data_struct,
)

__all__ = ["load", "load_metadata", "save"]

_CHUNK = 16 * 1024 * 1024

# --------------------------------------------------------------------------- writing


def _write_chunk(f: BinaryIO, chunk: memoryview) -> None:
    # One module-level function per write, so that tests can interrupt a save mid-way.
    f.write(chunk)


def _raw_bytes(array: np.ndarray) -> memoryview:
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return memoryview(array.reshape(-1).view(np.uint8))  # pyright: ignore[reportArgumentType]


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: directories cannot be opened; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Any, write: Callable[[BinaryIO], None]) -> None:
    """Write a file atomically: ``write(f)`` into a temporary file beside ``path``, then
    flush, fsync, rename over ``path`` and fsync the directory. On failure the temporary
    file is removed and ``path`` is untouched."""
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise CheckpointError(
            f"cannot save to {os.fspath(path)!r}: the directory {directory!r} does not exist"
        )
    if os.path.isdir(target):
        raise CheckpointError(f"cannot save to {os.fspath(path)!r}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory
        )
    except OSError as e:
        raise CheckpointError(
            f"cannot save to {os.fspath(path)!r}: cannot create a file in {directory!r} "
            f"({e.strerror or e})"
        ) from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = os.stat(target).st_mode & 0o777
        except OSError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(
                f"cannot save to {os.fspath(path)!r}: {e.strerror or e}; the previous file, "
                "if any, is unchanged"
            ) from e
        raise
    _fsync_directory(directory)


def _tensor_table(pytree: Any) -> list[tuple[str, np.ndarray]]:
    tensors = []
    seen: dict[str, str] = {}
    for name, leaf in named_leaves(pytree):
        if name in seen or name == "__metadata__":
            raise CheckpointError(
                f"two leaves are both named {display(name)!r} (or the name is reserved): "
                "rename a dict key so that every leaf path is distinct"
            )
        seen[name] = name
        if isinstance(leaf, jax.ShapeDtypeStruct):
            raise CheckpointError(
                f"{display(name)}: an abstract leaf ({leaf.dtype}{list(leaf.shape)}) has no values "
                "to save; save the concrete pytree"
            )
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            continue
        array = as_numpy(leaf)
        code = CODES.get(array.dtype.newbyteorder("="))
        if code is None:
            raise CheckpointError(
                f"{display(name)}: the dtype {array.dtype} cannot be stored in safetensors "
                f"(supported: {', '.join(str(d) for d in DTYPES.values())}); use "
                "tree_serialise_leaves, or convert it"
            )
        tensors.append((name, array))
    return tensors


def save(path: Any, pytree: Any, *, metadata: dict[str, str] | None = None) -> None:
    """Save the arrays of a pytree as a safetensors file, atomically.

    **Arguments:**

    - `path`: where to write (used as given). Any previous file there is replaced only
      once the new one is completely on disk.
    - `pytree`: any pytree (a model, `(model, opt_state)`, a `State`, ...). Its JAX and
      NumPy arrays are stored under their dotted paths (`layers.0.weight`); other leaves
      (functions, Python scalars, ...) are not stored: `load` takes them from `like`.
    - `metadata`: optional `dict[str, str]` stored in the file's `__metadata__` (read it
      back with `load_metadata`). Keys starting with `ecliptic.` are reserved.

    **Returns:** nothing. Raises `CheckpointError` when the directory does not exist or
    is not writable (the previous file survives), for a dtype safetensors cannot hold
    (complex128) or for two leaves with the same dotted name.

    ```python
    ecliptic.save("model.safetensors", model, metadata={"step": "1000"})
    ```
    """
    user = {} if metadata is None else metadata
    if not isinstance(user, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in user.items()
    ):
        raise TypeError("save(metadata=...) must be a dict[str, str] (json.dumps values).")
    reserved = sorted(k for k in user if k.startswith(PREFIX))
    if reserved:
        raise ValueError(f"save(metadata=...): the keys {reserved} are reserved for ecliptic.")
    tensors = _tensor_table(pytree)
    leaves, nodes = describe_tree(pytree)
    header: dict[str, Any] = {}
    meta = dict(user)
    meta[PREFIX + "version"] = VERSION
    meta[PREFIX + "fingerprint"] = fingerprint(leaves, nodes)
    meta[PREFIX + "leaves"] = json.dumps(leaves, separators=(",", ":"))
    meta[PREFIX + "nodes"] = json.dumps(nodes, separators=(",", ":"))
    meta[PREFIX + "sha256"] = json.dumps(
        {name: hashlib.sha256(_raw_bytes(a)).hexdigest() for name, a in tensors},
        separators=(",", ":"),
    )
    header["__metadata__"] = meta
    offset = 0
    for name, array in tensors:
        header[name] = {
            "dtype": CODES[array.dtype.newbyteorder("=")],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    meta[HEADER_HASH] = header_digest(header)
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad to keep the data 8-byte aligned

    def write(f: BinaryIO) -> None:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for _, array in tensors:
            data = _raw_bytes(array)
            for start in range(0, len(data), _CHUNK):
                _write_chunk(f, data[start : start + _CHUNK])

    atomic_write(path, write)


# --------------------------------------------------------------------------- reading


def load_metadata(path: Any) -> dict[str, str]:
    """Read the user metadata of a checkpoint written by `save`.

    **Arguments:** `path`, a safetensors file (a path or a seekable binary file object).

    **Returns:** the `metadata` dict given to `save` (ecliptic's own entries removed).
    Raises `CheckpointError` if the file is not valid safetensors.

    ```python
    step = int(ecliptic.load_metadata("model.safetensors")["step"])
    ```
    """
    with _open(path) as f:
        _, metadata, _ = read_header(f, path)
    return {k: v for k, v in metadata.items() if not k.startswith(PREFIX)}


@contextmanager
def _open(source: Any) -> Iterator[BinaryIO]:
    if not isinstance(source, (str, os.PathLike)):
        if not (hasattr(source, "read") and hasattr(source, "seek")):
            raise TypeError(
                "path must be a str/os.PathLike path or a binary file object open for "
                f"reading; got {type(source).__name__}."
            )
        yield source
        return
    try:
        f = open(os.fspath(source), "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise cannot_open(f"cannot read {label(source)}: {e.strerror or e}", e) from e
    with f:
        yield f


def _ecliptic_meta(path: Any, metadata: dict[str, str]) -> dict[str, Any] | None:
    if not any(k.startswith(PREFIX) for k in metadata):
        return None  # written by another tool: only the tensor table can be checked
    missing = [PREFIX + k for k in REQUIRED if PREFIX + k not in metadata]
    if missing:
        raise corrupt(path, f"ecliptic's metadata lacks {missing} (damaged)")
    if metadata[PREFIX + "version"] != VERSION:
        raise CheckpointError(
            f"{label(path)} was written by a newer ecliptic checkpoint format "
            f"(version {metadata[PREFIX + 'version']!r}; this one reads {VERSION!r})"
        )
    try:
        out = {
            key: json.loads(metadata[PREFIX + key]) for key in ("leaves", "nodes", "sha256")
        }
        out["fingerprint"] = metadata[PREFIX + "fingerprint"]
    except (KeyError, ValueError, RecursionError) as e:
        raise corrupt(path, f"ecliptic's metadata is damaged ({e})") from None
    ok = (
        isinstance(out["leaves"], list)
        and all(isinstance(x, list) and len(x) == 2 for x in out["leaves"])
        and isinstance(out["nodes"], dict)
        and isinstance(out["sha256"], dict)
    )
    if not ok:
        raise corrupt(path, "ecliptic's metadata is damaged")
    return out


def _static_problems(meta: dict[str, Any], like: Any) -> list[str]:
    """What the file and `like` both describe, and describe differently: node types,
    static field values, the kinds of non-array leaves (which function, ...). A field or
    leaf on one side only (a class that gained or lost a field between versions, or a
    field that stopped being static) is not a difference."""
    leaves, nodes = describe_tree(like)
    if fingerprint(leaves, nodes) == meta["fingerprint"]:
        return []
    problems = []
    file_nodes = meta["nodes"]
    for name, (kind, fields) in nodes.items():
        if name not in file_nodes:
            continue
        file_node = file_nodes[name]
        if not (isinstance(file_node, list) and len(file_node) == 2):
            problems.append(f"{display(name)}: damaged node record in the file")
            continue
        file_kind, file_fields = file_node
        if file_kind != kind:
            problems.append(f"{display(name)}: file has a {file_kind}, like has a {kind}")
            continue
        if not isinstance(file_fields, dict):
            file_fields = {}
        for field in sorted(set(fields) & set(file_fields), key=str):
            mine, theirs = fields[field], file_fields[field]
            if mine != theirs:
                problems.append(
                    f"{display(name)}.{field}: file has {theirs}, like has {mine} (static)"
                )
    file_leaves = {n: k for n, k in meta["leaves"] if isinstance(n, str)}
    for name, kind in leaves:
        theirs = file_leaves.get(name)
        if kind.startswith("-") and theirs is not None and theirs != kind:
            problems.append(f"{display(name)}: file had {theirs[1:]}, like has {kind[1:]}")
    return problems


def _expected(leaf: Any) -> tuple[tuple[int, ...], np.dtype] | None:
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)):
        if is_key_dtype(leaf.dtype):
            data = key_data_struct(leaf)
            return tuple(data.shape), np.dtype(data.dtype)
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    return None


def _match(entries: dict[str, Entry], like: Any) -> tuple[list[str], list[tuple[int, Entry]]]:
    """Compare the tensor table with `like`'s leaves: ``(problems, [(leaf index, entry)])``."""
    problems = []
    wanted = []
    seen = set()
    for i, (name, leaf) in enumerate(named_leaves(like)):
        if name in seen:
            problems.append(f"{display(name)}: two leaves of `like` have this name")
        seen.add(name)
        expected = _expected(leaf)
        entry = entries.get(name)
        if expected is None:
            if entry is not None:
                problems.append(
                    f"{display(name)}: file has {describe(entry.shape, entry.dtype)}, "
                    f"like has a non-array leaf ({type(leaf).__name__})"
                )
            continue
        kind = describe(*expected)
        if entry is None:
            problems.append(f"{display(name)}: expected {kind}, not in the file")
        elif entry.shape != expected[0] or entry.dtype != expected[1].newbyteorder("="):
            found = describe(entry.shape, entry.dtype)
            problems.append(f"{display(name)}: expected {kind}, file has {found}")
        else:
            wanted.append((i, entry))
    for name, entry in entries.items():
        if name not in seen:
            found = describe(entry.shape, entry.dtype)
            problems.append(f"{display(name)}: in the file ({found}) but not in like")
    return problems, wanted


def load(path: Any, like: Any, *, check_static: bool = True, verify: bool = True) -> Any:
    """Load a checkpoint written by `save` (or any safetensors file) into `like`'s shape.

    **Arguments:**

    - `path`: the safetensors file: a path, or a seekable binary file object positioned
      at the start of the checkpoint (e.g. `io.BytesIO`).
    - `like`: a pytree of the expected structure: a freshly built model, or the output of
      `filter_eval_shape` (`jax.ShapeDtypeStruct` leaves). Array leaves say which tensor
      to read (by dotted path) and its shape and dtype; the other leaves are taken from
      `like` as they are (nothing in the file is ever executed).
    - `check_static`: also compare the static data recorded at save time with `like`'s:
      node types (a `Conv2d` vs a `Linear`, a list vs a tuple), Module static fields
      (stride, number of heads, ...) and non-array leaves (which activation function).
      Fields present on one side only (a layer class changed between versions) are not
      compared. Default `True`.
    - `verify`: check every tensor's SHA-256 recorded at save time. Default `True`.

    **Returns:** `like` with its arrays replaced by the file's: JAX arrays (on `like`'s
    sharding) where `like` has JAX arrays or ShapeDtypeStructs, NumPy where it has NumPy.

    Raises `CheckpointError` for a file that is truncated, corrupted or not safetensors,
    and, listing every problem at once by path, for missing, unexpected or mismatched
    tensors (``layers.2.weight: expected f32[64,32], file has f32[32,64]``) and static
    differences.

    ```python
    model = ecliptic.load("model.safetensors", ecliptic.filter_eval_shape(MyModel, key))
    ```
    """
    with _open(path) as f:
        entries, metadata, start = read_header(f, path)
        meta = _ecliptic_meta(path, metadata)
        leaves, treedef = jtu.tree_flatten(like)
        problems, wanted = _match(entries, like)
        if meta is not None and check_static:
            problems += _static_problems(meta, like)
        if meta is not None and verify and set(meta["sha256"]) != set(entries):
            problems.append("the recorded checksums do not match the tensor table (damaged)")
        if problems:
            raise CheckpointError(
                f"cannot load {label(path)} into `like` ({len(problems)} problem"
                f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(problems)
            )
        for i, entry in wanted:
            array = np.empty(entry.shape, entry.dtype.newbyteorder("<"))
            f.seek(start + entry.begin)
            view = memoryview(array.reshape(-1).view(np.uint8))  # pyright: ignore[reportArgumentType]
            if f.readinto(view) != len(view):  # pyright: ignore[reportAttributeAccessIssue]
                raise corrupt(path, f"tensor {entry.name!r} is cut short")
            if meta is not None and verify:
                digest = hashlib.sha256(view).hexdigest()
                if digest != meta["sha256"][entry.name]:
                    raise CheckpointError(
                        f"{display(entry.name)}: the data in {label(path)} does not match "
                        "its recorded checksum: the file is corrupted"
                    )
            leaves[i] = array_like(array.astype(entry.dtype, copy=False), leaves[i])
    return jtu.tree_unflatten(treedef, leaves)
