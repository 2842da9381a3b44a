"""Safe checkpoints: `save` / `load` in the safetensors format, written atomically.

The container is parsed and written here, byte by byte (layout in `_safetensors`), so any
safetensors reader can read the files (`safetensors.numpy.load_file`,
`safetensors.torch.load_file`). ecliptic adds to ``__metadata__`` (string -> string,
JSON-encoded) the tree's leaf names and kinds, the static data of every node with a
fingerprint of it, and a SHA-256 of every tensor, so that `load` can check everything
and say exactly what differs.

Writes to a path go through `atomic_write` (`_atomic`). The data is written first, after
a header of the final length, and hashed meanwhile (`_checkpoint_data`); the header, with
the checksums, is then written in place.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import jax
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from .._messages import array_text
from .._paths import display, named_leaves
from ._arrays import is_key_dtype, stored_struct
from ._atomic import atomic_write, remove_stale_temporaries
from ._checkpoint_data import hash_tensors, read_tensors, write_tensors
from ._errors import CheckpointError, cannot_open
from ._fingerprint import describe_tree, fingerprint
from ._long_lists import SHOWN, first_few
from ._safetensors import (
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

__all__ = ["load", "load_metadata", "save"]

_VERIFY = (True, False, "require")

# --------------------------------------------------------------------------- writing


def _tensor_table(pytree: Any) -> list[tuple[str, Any]]:
    tensors = []
    seen: set[str] = set()
    for name, leaf in named_leaves(pytree):
        if name in seen or name == "__metadata__":
            raise CheckpointError(
                f"two leaves are both named {display(name)!r} (or the name is reserved): "
                "rename a dict key so that every leaf path is distinct"
            )
        seen.add(name)
        if isinstance(leaf, jax.ShapeDtypeStruct):
            raise CheckpointError(
                f"{display(name)}: an abstract leaf ({array_text(leaf.dtype, leaf.shape)}) "
                "has no values to save; save the concrete pytree"
            )
        if isinstance(leaf, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
            raise TypeError(
                f"save: {display(name)} is a traced array "
                f"({array_text(leaf.dtype, leaf.shape)}), not "
                "a concrete one: saving needs concrete values, so call save outside "
                "jax.jit / filter_jit (and outside grad, vmap, ...), e.g. on the model "
                "the jitted step returns"
            )
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            continue
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            raise CheckpointError(
                f"save: {display(name)} spans devices of other processes "
                f"({array_text(leaf.dtype, leaf.shape)}, sharded as {leaf.sharding}), so "
                "this process cannot write it alone: in a multi-process job use "
                "ecliptic.distributed.CheckpointManager, where each process writes its own "
                "shards"
            )
        dtype = stored_struct(leaf)[1]
        if CODES.get(dtype.newbyteorder("=")) is None:
            raise CheckpointError(
                f"{display(name)}: the dtype {dtype} cannot be stored in safetensors "
                f"(supported: {', '.join(str(d) for d in DTYPES.values())}); use "
                "tree_serialise_leaves, or convert it"
            )
        if isinstance(leaf, jax.Array) and is_key_dtype(leaf.dtype):
            leaf = jax.random.key_data(leaf)
        tensors.append((name, np.asarray(leaf) if isinstance(leaf, np.generic) else leaf))
    return tensors


def _check_save_target(path: Any, pytree: Any) -> bool:
    """Whether `path` is a file object (else a path); a clear error for anything else."""
    if isinstance(path, (str, os.PathLike)):
        return False
    if hasattr(path, "write"):
        if isinstance(path, io.TextIOBase) or "b" not in str(getattr(path, "mode", "b")):
            raise TypeError(
                "save(path, pytree): path is a text-mode file; pass a binary file object "
                "(io.BytesIO, open(path, 'wb')) or the path itself."
            )
        return True
    swapped = isinstance(pytree, (str, os.PathLike)) or hasattr(pytree, "write")
    hint = " (the arguments look swapped: the path comes first)" if swapped else ""
    raise TypeError(
        "save(path, pytree): path must be a str/os.PathLike path or a writable binary "
        f"file object; got {type(path).__name__}{hint}."
    )


def save(path: Any, pytree: PyTree, *, metadata: dict[str, str] | None = None) -> None:
    """Save the arrays of a pytree as a safetensors file, atomically.

    **Arguments:**

    - `path`: where to write: a path (used as given; any previous file there is replaced
      only once the new one is completely on disk, and temporary files left by killed
      writers of the same path are removed), or a writable binary file object such as
      `io.BytesIO` or `open(p, "wb")`, written in one sequential pass from its current
      position (no seeking, and no atomicity or fsync: that is the caller's business).
    - `pytree`: any pytree (a model, `(model, opt_state)`, a `State`, ...). Its JAX and
      NumPy arrays are stored under their dotted paths (`layers.0.weight`); other leaves
      (functions, Python scalars, ...) are not stored: `load` takes them from `like`.
      Its arrays must be concrete: call `save` outside `jax.jit`.
    - `metadata`: optional `dict[str, str]` stored in the file's `__metadata__` (read it
      back with `load_metadata`). Keys starting with `ecliptic.` are reserved.

    **Returns:** nothing. Raises `CheckpointError` when the directory does not exist or
    is not writable (the previous file survives), for a dtype safetensors cannot hold
    (complex128) or for two leaves with the same dotted name.

    ```python
    ecliptic.save("model.safetensors", model, metadata={"step": "1000"})
    ```
    """
    to_file = _check_save_target(path, pytree)
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
    meta = dict(user)
    meta[PREFIX + "version"] = VERSION
    meta[PREFIX + "fingerprint"] = fingerprint(leaves, nodes)
    meta[PREFIX + "leaves"] = json.dumps(leaves, separators=(",", ":"))
    meta[PREFIX + "nodes"] = json.dumps(nodes, separators=(",", ":"))
    header: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    for name, leaf in tensors:
        shape, dtype = stored_struct(leaf)
        nbytes = dtype.itemsize * int(np.prod(shape))
        header[name] = {
            "dtype": CODES[dtype.newbyteorder("=")],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes

    def encode(digests: dict[str, str]) -> bytes:
        meta[PREFIX + "sha256"] = json.dumps(
            {name: digests[name] for name, _ in tensors}, separators=(",", ":")
        )
        meta[HEADER_HASH] = header_digest(header)
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        raw += b" " * (-len(raw) % 8)  # pad to keep the data 8-byte aligned
        return len(raw).to_bytes(8, "little") + raw

    if to_file:  # one sequential pass: the checksums first
        path.write(encode(hash_tensors(tensors)))
        write_tensors(path, tensors, digests=False, sync=False)
        return

    # Hex digests have a fixed length: a header with placeholders has the final size, so
    # the data can be written (and hashed meanwhile) before the header is known.
    placeholder = encode({name: "0" * 64 for name, _ in tensors})

    def write(f: BinaryIO) -> None:
        f.write(placeholder)
        digests = write_tensors(f, tensors, digests=True, sync=True)
        final = encode(digests)
        if len(final) != len(placeholder):  # cannot happen: a safeguard
            raise CheckpointError("internal error: the checkpoint header changed size")
        f.seek(0)
        f.write(final)

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
    version = metadata[PREFIX + "version"]
    if version != VERSION:
        if not (version.isascii() and version.isdigit()):
            raise corrupt(path, f"its ecliptic format version {version!r} is invalid (damaged)")
        age = "a newer" if int(version) > int(VERSION) else "an older, unsupported"
        raise CheckpointError(
            f"{label(path)} was written in {age} ecliptic checkpoint format "
            f"(version {version!r}; this ecliptic reads version {VERSION!r})"
        )
    try:
        out = {key: json.loads(metadata[PREFIX + key]) for key in ("leaves", "nodes", "sha256")}
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
        return stored_struct(leaf)
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
                    f"{display(name)}: file has {array_text(entry.dtype, entry.shape)}, "
                    f"like has a non-array leaf ({type(leaf).__name__})"
                )
            continue
        kind = array_text(expected[1], expected[0])
        if entry is None:
            problems.append(f"{display(name)}: expected {kind}, not in the file")
        elif entry.shape != expected[0] or entry.dtype != expected[1].newbyteorder("="):
            found = array_text(entry.dtype, entry.shape)
            problems.append(f"{display(name)}: expected {kind}, file has {found}")
        else:
            wanted.append((i, entry))
    for name, entry in entries.items():
        if name not in seen:
            if len(problems) > SHOWN:  # not shown in the message: spare the formatting
                problems.append(name)
                continue
            found = array_text(entry.dtype, entry.shape)
            problems.append(f"{display(name)}: in the file ({found}) but not in like")
    return problems, wanted


def _check_like(like: Any) -> None:
    if isinstance(like, type):
        raise TypeError(
            f"load(path, like): like must be a pytree of the expected structure (a model, "
            f"or its filter_eval_shape skeleton); got the class {like.__name__} itself: "
            f"build one, e.g. ecliptic.filter_eval_shape({like.__name__}, ..., key=key)."
        )


def load(
    path: Any, like: PyTree, *, check_static: bool = True, verify: bool | str = True
) -> PyTree:
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
    - `verify`: how to use the SHA-256 checksums `save` records. `True` (default): check
      them when the file has them; a file written by another tool (no ecliptic metadata)
      is read with only its structure checked. `"require"`: also refuse a file without
      them, so that removing the metadata cannot switch the check off. `False`: skip it.

    **Returns:** `like` with its arrays replaced by the file's: JAX arrays (on `like`'s
    sharding) where `like` has JAX arrays or ShapeDtypeStructs, NumPy where it has NumPy.

    Raises `CheckpointError` for a file that is truncated, corrupted or not safetensors,
    and, listing the problems by path (the first few, then a count), for missing,
    unexpected or mismatched tensors (``layers.2.weight: expected f32[64,32], file has
    f32[32,64]``) and static differences.

    ```python
    model = ecliptic.load("model.safetensors", ecliptic.filter_eval_shape(MyModel, key))
    ```
    """
    if verify not in _VERIFY or not isinstance(verify, (bool, str)):
        raise ValueError(f"load(verify=...) must be one of {_VERIFY}; got {verify!r}.")
    _check_like(like)
    if isinstance(path, (str, os.PathLike)):
        remove_stale_temporaries(path)
    with _open(path) as f:
        entries, metadata, start = read_header(f, path)
        meta = _ecliptic_meta(path, metadata)
        if meta is None and verify == "require":
            raise CheckpointError(
                f"{label(path)} has no ecliptic checksums (it was written by another tool, "
                "or its __metadata__ was removed), and load(..., verify='require') "
                "refuses files whose data cannot be verified"
            )
        leaves, treedef = jtu.tree_flatten(like)
        problems, wanted = _match(entries, like)
        if meta is not None and check_static:
            problems += _static_problems(meta, like)
        if meta is not None and verify and set(meta["sha256"]) != set(entries):
            problems.append("the recorded checksums do not match the tensor table (damaged)")
        if problems:
            raise CheckpointError(
                f"cannot load {label(path)} into `like` ({len(problems)} problem"
                f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(first_few(problems))
            )
        expected = meta["sha256"] if meta is not None and verify else None
        read_tensors(f, path, start, wanted, leaves, expected)
    return jtu.tree_unflatten(treedef, leaves)
