"""Saving and loading the leaves of a pytree, one ``.npy`` record per leaf.

The byte format is Equinox's: the leaves selected by the filter spec are written one after
another with NumPy's ``.npy`` format, in flattening order. Loading walks a `like` skeleton
in the same order, reading each record with `ecliptic._io._npy` (checked against `like`
before any data is read, never unpickled), so that a corrupted or foreign file gives a
`CheckpointError` naming the leaf.
"""

from __future__ import annotations

import errno
import io
import os
import pathlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import jax
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from .._messages import array_text
from .._paths import display, dotted
from ._arrays import array_like, as_numpy, is_key_dtype, key_data_struct
from ._atomic import atomic_write
from ._errors import CheckpointError, LeafFileError, LeafMismatchError, cannot_open
from ._npy import NPY_MAGIC, read_exact, read_npy_array, read_npy_header, write_npy

__all__ = [
    "default_deserialise_filter_spec",
    "default_serialise_filter_spec",
    "tree_deserialise_leaves",
    "tree_serialise_leaves",
]

_PYTHON_SCALAR_KINDS = ((bool, "b"), (int, "iu"), (float, "f"), (complex, "c"))

# ----------------------------------------------------------------------- filter specs


def default_serialise_filter_spec(f: BinaryIO, x: Any) -> None:
    """Write one leaf to `f`, if it is an array or a Python scalar.

    **Arguments:**

    - `f`: a binary file object, open for writing.
    - `x`: the leaf.

    **Returns:** nothing. JAX and NumPy arrays (PRNG keys as their raw data) and Python
    `bool`/`int`/`float`/`complex` are written as one ``.npy`` record; other leaves
    (functions, strings, ...) are skipped. Wrap it to customise:

    ```python
    skip_ints = lambda f, x: None if isinstance(x, int) else default_serialise_filter_spec(f, x)
    ```
    """
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        write_npy(f, as_numpy(x))
    elif isinstance(x, (bool, int, float, complex)):
        array = np.asarray(x)
        if array.dtype.hasobject:
            raise CheckpointError(f"the Python int {x} does not fit in 64 bits")
        write_npy(f, array)


def _python_scalar_kinds(x: Any) -> str | None:
    for kind, kinds in _PYTHON_SCALAR_KINDS:
        if isinstance(x, kind):
            return kinds
    return None


def default_deserialise_filter_spec(f: BinaryIO, x: Any) -> Any:
    """Read the leaf that stands where `x` stands in the `like` skeleton.

    **Arguments:**

    - `f`: a binary file object, open for reading, positioned at the record.
    - `x`: the leaf of `like`: a JAX array or `jax.ShapeDtypeStruct` (loads a JAX array,
      on `x`'s sharding when it has one), a NumPy array or scalar (loads NumPy), a
      Python `bool`/`int`/`float`/`complex` (loads that type); anything else is returned
      unchanged without reading.

    **Returns:** the loaded leaf. Raises `CheckpointError` if the record's shape or dtype
    differs from `x`'s (checked before the data is read) or the file is malformed.

    ```python
    def keep_arrays(f, x):  # leave JAX arrays as they are in `like`
        return x if isinstance(x, jax.Array) else default_deserialise_filter_spec(f, x)
    ```
    """
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
        stored = key_data_struct(x) if is_key_dtype(x.dtype) else x
        return array_like(read_npy_array(f, stored.shape, stored.dtype), x)
    if isinstance(x, np.ndarray):
        return read_npy_array(f, x.shape, x.dtype)
    if isinstance(x, np.generic):
        return read_npy_array(f, (), x.dtype)[()]
    kinds = _python_scalar_kinds(x)
    if kinds is None:
        return x
    dtype, shape, fortran = read_npy_header(f)
    if shape != () or dtype.kind not in kinds:
        raise CheckpointError(
            f"expected a Python {type(x).__name__} (a 0-d array of kind {kinds!r}), file has "
            f"{array_text(dtype, shape)}"
        )
    value = np.frombuffer(read_exact(f, dtype.itemsize, "a scalar"), dtype=dtype)[0]
    return type(x)(value.item())


# --------------------------------------------------------------------------- the trees


def leaf_file_path(path: str | os.PathLike) -> pathlib.Path:
    """The file a leaf-file path names, by Equinox's rule: a path whose last component has
    no suffix gets ``.eqx`` appended (``"model"`` -> ``model.eqx``); any other path is
    used as given (``"model.npy"``, ``"weights.eqx"``)."""
    resolved = pathlib.Path(path)
    if resolved.name and not resolved.suffix:
        resolved = resolved.with_name(resolved.name + ".eqx")
    return resolved


def _missing_file_hint(given: Any, resolved: pathlib.Path) -> str:
    if str(resolved) == str(given) or not os.path.isfile(given):
        return ""
    return (
        f" (a path without a suffix gets '.eqx' appended, as in Equinox; {str(given)!r} "
        "itself exists: pass it with a suffix, or as an open file object)"
    )


@contextmanager
def _opened(path_or_file: Any, mode: str) -> Iterator[tuple[BinaryIO, bool]]:
    if isinstance(path_or_file, (str, os.PathLike)):
        path = leaf_file_path(path_or_file)
        try:
            f = open(path, mode)  # noqa: SIM115 (closed below)
        except OSError as e:
            hint = _missing_file_hint(path_or_file, path)
            raise cannot_open(f"cannot open {str(path)!r}: {e}{hint}", e) from e
        with f:
            yield f, True  # pyright: ignore[reportReturnType]
    elif isinstance(path_or_file, io.TextIOBase):
        raise TypeError(
            "path_or_file is a text-mode file; checkpoints are binary: open it with "
            f"open(path, {mode!r})."
        )
    elif hasattr(path_or_file, "write" if "w" in mode else "read"):
        yield path_or_file, False
    else:
        raise TypeError(
            "path_or_file must be a str/os.PathLike path or a binary file object; got "
            f"{type(path_or_file).__name__}."
        )


def _spec_pairs(
    filter_spec: Any, pytree: Any, is_leaf: Callable[[Any], bool] | None, name: str
) -> Iterator[tuple[tuple[Any, ...], Any, Any]]:
    """``(path, spec, leaf)`` for every leaf of ``pytree``, ``filter_spec`` being a
    callable or a pytree prefix of callables."""
    if callable(filter_spec) and jtu.treedef_is_leaf(jtu.tree_structure(filter_spec)):
        spec_pairs = [((), filter_spec)]
        subtrees = [pytree]
    else:
        spec_pairs, spec_def = jtu.tree_flatten_with_path(filter_spec)
        try:
            subtrees = spec_def.flatten_up_to(pytree)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"filter_spec must be a callable or a pytree prefix of `{name}` whose "
                f"leaves are callables; filter_spec has structure {spec_def}."
            ) from e
    for (spec_path, spec), subtree in zip(spec_pairs, subtrees):
        if not callable(spec):
            raise TypeError(
                f"filter_spec leaves must be callables (file, leaf) -> ...; got {spec!r} "
                f"at {display(dotted(spec_path))}."
            )
        for path, leaf in jtu.tree_flatten_with_path(subtree, is_leaf=is_leaf)[0]:
            yield tuple(spec_path) + tuple(path), spec, leaf


def _equinox_wording(error: Exception, path: tuple[Any, ...]) -> str:
    """What Equinox says for a failure at the leaf with key path ``path``."""
    if isinstance(error, LeafMismatchError):
        (found_shape, found_dtype), (shape, dtype) = error.found, error.expected
        if tuple(found_shape) != tuple(shape):
            change = f"shape from {tuple(shape)} in `like` to {tuple(found_shape)}"
        else:
            change = f"dtype from {np.dtype(dtype)} in `like` to {np.dtype(found_dtype)}"
        return f"Deserialised leaf at path {path!r} has changed {change} on disk."
    return f"Error at leaf with path {path!r}"


def _at_leaf(error: Exception, path: tuple[Any, ...]) -> Exception:
    if isinstance(error, CheckpointError):
        return LeafFileError(f"{display(dotted(path))}: {error} ({_equinox_wording(error, path)})")
    if hasattr(error, "add_note"):
        error.add_note(  # pyright: ignore[reportAttributeAccessIssue]
            f"(at the leaf {display(dotted(path))}: {_equinox_wording(error, path)})"
        )
    return error


def _refuse_safetensors(f: BinaryIO, path_or_file: Any) -> None:
    """Raise a clear error if ``f`` holds a safetensors checkpoint (from `ecliptic.save`)
    rather than a leaf file: its 8-byte little-endian header length is followed by ``{``.
    Only looks at seekable files, and puts the position back."""
    try:
        if not f.seekable():
            return
        start = f.tell()
        head = f.read(9)
        f.seek(start)
    except (OSError, ValueError, AttributeError):
        return
    if len(head) < 9 or head[:6] == NPY_MAGIC or head[8:9] != b"{":
        return
    if not 2 <= int.from_bytes(head[:8], "little") <= 100 * 1024 * 1024:
        return
    where = (
        repr(str(leaf_file_path(path_or_file)))
        if isinstance(path_or_file, (str, os.PathLike))
        else "the file"
    )
    raise CheckpointError(
        f"{where} is a safetensors checkpoint (as written by `ecliptic.save`), not a leaf "
        "file: tree_deserialise_leaves reads Equinox leaf files (written by "
        "`tree_serialise_leaves`); read this checkpoint with `ecliptic.load(path, like)`."
    )


def tree_serialise_leaves(
    path_or_file: Any,
    pytree: PyTree,
    filter_spec: Any = default_serialise_filter_spec,
    is_leaf: Callable[[Any], bool] | None = None,
) -> None:
    """Save the leaves of a pytree to a file, in flattening order.

    **Arguments:**

    - `path_or_file`: a path or a binary file object open for writing. As in Equinox, a
      path whose file name has no suffix gets ``.eqx`` appended (``"model"`` writes
      ``model.eqx``); other paths are used as given.
    - `pytree`: the pytree whose leaves to save.
    - `filter_spec`: how to write each leaf: a callable `(file, leaf) -> None`, or a
      pytree prefix of `pytree` whose leaves are such callables. The default,
      `default_serialise_filter_spec`, writes arrays and Python scalars and skips the
      rest.
    - `is_leaf`: optional, as in `jax.tree_util.tree_flatten`.

    **Returns:** nothing. The format is Equinox's (one ``.npy`` record per saved leaf), so
    files are interchangeable with `equinox.tree_serialise_leaves`. A path is written
    atomically: into a temporary file beside it, renamed over it once complete, so that
    a failure or a crash part-way leaves the previous file intact. (File objects are
    written to directly.) The format has no checksum: for validated checkpoints use
    `ecliptic.save`.

    ```python
    ecliptic.tree_serialise_leaves("model.eqx", model)
    ecliptic.tree_serialise_leaves("model", model)  # also writes model.eqx
    ```
    """

    def write_leaves(f: BinaryIO) -> None:
        for path, spec, leaf in _spec_pairs(filter_spec, pytree, is_leaf, "pytree"):
            try:
                spec(f, leaf)
            except Exception as e:
                raise _at_leaf(e, path) from e

    if isinstance(path_or_file, (str, os.PathLike)):
        target = leaf_file_path(path_or_file)
        directory = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(directory):
            missing = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(target))
            raise cannot_open(
                f"cannot open {str(target)!r}: the directory {directory!r} does not exist",
                missing,
            ) from missing
        atomic_write(target, write_leaves)
        return
    with _opened(path_or_file, "wb") as (f, _):
        write_leaves(f)


def tree_deserialise_leaves(
    path_or_file: Any,
    like: PyTree,
    filter_spec: Any = default_deserialise_filter_spec,
    is_leaf: Callable[[Any], bool] | None = None,
) -> PyTree:
    """Load the leaves of a pytree saved by `tree_serialise_leaves`.

    **Arguments:**

    - `path_or_file`: a path or a binary file object open for reading. A path without a
      suffix gets ``.eqx`` appended, as when saving (and in Equinox).
    - `like`: a pytree of the same structure as the one saved, e.g. a freshly built
      model or the output of `filter_eval_shape` (`jax.ShapeDtypeStruct` leaves). Its
      leaves give the expected shape and dtype of each record.
    - `filter_spec`: how to read each leaf: a callable `(file, like_leaf) -> leaf`, or a
      pytree prefix of `like` of such callables. Default `default_deserialise_filter_spec`.
    - `is_leaf`: optional, as in `jax.tree_util.tree_flatten`.

    **Returns:** `like` with the loaded leaves in place of its own. Raises
    `CheckpointError`, naming the leaf path, on a shape or dtype mismatch or a malformed
    or truncated file; with a path and the default spec, also on bytes left over after
    the last leaf (a file from a larger model).

    ```python
    model = ecliptic.tree_deserialise_leaves("model.eqx", MyModel(key=jax.random.key(0)))
    ```
    """
    pairs = list(_spec_pairs(filter_spec, like, is_leaf, "like"))
    treedef = jtu.tree_structure(like, is_leaf=is_leaf)
    out = []
    with _opened(path_or_file, "rb") as (f, owned):
        _refuse_safetensors(f, path_or_file)
        for path, spec, leaf in pairs:
            try:
                out.append(spec(f, leaf))
            except Exception as e:
                raise _at_leaf(e, path) from e
        if owned and filter_spec is default_deserialise_filter_spec:
            rest = len(f.read(1 << 16))
            if rest:
                name = str(leaf_file_path(path_or_file))
                raise CheckpointError(
                    f"{name!r} has {rest}{'+' if rest == 1 << 16 else ''} "
                    "bytes left after the last leaf of `like`: it was saved from a different "
                    "(larger) pytree."
                )
    return jtu.tree_unflatten(treedef, out)
