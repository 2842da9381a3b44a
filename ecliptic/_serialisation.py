"""Saving and loading the leaves of a pytree, one ``.npy`` record per leaf.

The byte format is Equinox's: the leaves selected by the filter spec are written one after
another with NumPy's ``.npy`` format, in flattening order. Loading walks a `like` skeleton
in the same order. Nothing is ever unpickled: the ``.npy`` headers are parsed here, as
literals, and checked against `like` before any data is read, so that a corrupted or
foreign file gives a `CheckpointError` naming the leaf, and never a huge allocation.

This module also holds `CheckpointError`, the one error type of the persistence services
(`save`/`load`, the state dicts), and small array helpers they share.
"""

from __future__ import annotations

import ast
import errno
import io
import math
import os
import pathlib
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import jax
import jax.tree_util as jtu
import numpy as np

from ._atomic_files import atomic_write
from ._paths import display, dotted

__all__ = [
    "CheckpointError",
    "default_deserialise_filter_spec",
    "default_serialise_filter_spec",
    "tree_deserialise_leaves",
    "tree_serialise_leaves",
]

_NPY_MAGIC = b"\x93NUMPY"
_MAX_NPY_HEADER = 1 << 20
_READ_CHUNK = 1 << 26
_PYTHON_SCALAR_KINDS = ((bool, "b"), (int, "iu"), (float, "f"), (complex, "c"))


class CheckpointError(ValueError):
    """Raised when a checkpoint, leaf file or state dict cannot be saved or loaded.

    The message says what is wrong and where: the leaf path (``layers.2.weight``), what
    was expected and what was found. Every problem with the *contents* of a file
    (truncated, corrupted, foreign format, another architecture, wrong shapes or dtypes)
    raises this, as do failures to write a file (the underlying `OSError` is chained).
    A subclass of `ValueError`.
    """


class _CheckpointFileNotFound(CheckpointError, FileNotFoundError):
    """A checkpoint file that does not exist: also a `FileNotFoundError`, so that
    ``except FileNotFoundError`` works as it does around `open` (and Equinox)."""


class LeafMismatchError(CheckpointError):
    """A leaf record whose shape or dtype differs from the expected one (``found`` and
    ``expected`` are ``(shape, dtype)`` pairs)."""

    def __init__(self, message: str, found: tuple[Any, Any], expected: tuple[Any, Any]):
        super().__init__(message)
        self.found = found
        self.expected = expected


class LeafFileError(CheckpointError, RuntimeError):
    """A leaf file that cannot be read or written at some leaf. Also a `RuntimeError`, the
    type Equinox raises there, so that ``except RuntimeError`` keeps working."""


def cannot_open(message: str, error: OSError) -> CheckpointError:
    """The error for a file that cannot be opened (`error` is chained by the caller)."""
    if not isinstance(error, FileNotFoundError):
        return CheckpointError(message)
    missing = _CheckpointFileNotFound(message)
    missing.errno = error.errno  # (`strerror`/`filename` would replace our message in str())
    return missing


# ----------------------------------------------------------------------------- helpers


def array_like(array: np.ndarray, like: Any) -> Any:
    """A loaded NumPy `array` as the same kind of leaf as `like`: a NumPy array or
    scalar, a PRNG key array (from its raw data), or a JAX array, on `like`'s sharding
    when it has one."""
    if isinstance(like, np.generic):
        return array[()]
    if isinstance(like, np.ndarray):
        return array
    if is_key_dtype(like.dtype):
        return jax.random.wrap_key_data(array, impl=key_impl(like))  # pyright: ignore[reportArgumentType]
    sharding = getattr(like, "sharding", None)
    if sharding is not None and not isinstance(like, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
        return jax.device_put(array, sharding)
    return jax.device_put(array)  # a plain transfer: no op to compile


def is_key_dtype(dtype: Any) -> bool:
    """Whether ``dtype`` is a JAX PRNG key dtype (``key<fry>`` and co)."""
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def key_impl(like: Any) -> Any:
    """The PRNG implementation of a key array or a key-typed ShapeDtypeStruct."""
    try:
        return jax.random.key_impl(like)
    except TypeError:
        impl = getattr(like.dtype, "_impl", None)
        if impl is None:
            raise CheckpointError(f"cannot tell the PRNG implementation of {like!r}") from None
        return impl


def key_data_struct(like: Any) -> jax.ShapeDtypeStruct:
    """Shape and dtype of ``jax.random.key_data`` of a key array (or its struct)."""
    return jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(like.shape, like.dtype))


_SHORT_DTYPES = (("bfloat", "bf"), ("float", "f"), ("uint", "u"), ("int", "i"), ("complex", "c"))


def describe(shape: tuple[int, ...], dtype: Any) -> str:
    """``f32[64,32]``-style description of an array's dtype and shape."""
    if is_key_dtype(dtype):
        name = str(dtype)
    else:
        dtype = np.dtype(dtype)
        name = f"V{dtype.itemsize}" if dtype.type is np.void else dtype.name
    for long, short in _SHORT_DTYPES:
        if name.startswith(long):
            name = short + name[len(long) :]
            break
    return f"{name}[{','.join(str(int(d)) for d in shape)}]"


def as_numpy(leaf: Any) -> np.ndarray:
    """A leaf (JAX/NumPy array or scalar) as a NumPy array, PRNG keys as their raw data."""
    if isinstance(leaf, jax.Array) and is_key_dtype(leaf.dtype):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def same_dtype(found: np.dtype, expected: np.dtype) -> bool:
    """Equal dtypes, ignoring byte order; a ``void`` of the right size counts as an
    extension dtype such as bfloat16 (that is how ``np.save`` records those)."""
    if found.itemsize != expected.itemsize:
        return False
    if expected.kind == "V" and found.kind == "V" and found.names is None:
        return found.str[1:] == expected.str[1:]
    return found.newbyteorder("<") == expected.newbyteorder("<")


# ------------------------------------------------------------------------ .npy records


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
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
    magic = _read_exact(f, 8, "an .npy header")
    if magic[:6] != _NPY_MAGIC:
        raise CheckpointError(
            f"not an .npy record (starts with {magic[:6]!r}, expected {_NPY_MAGIC!r})"
        )
    major = magic[6]
    if major == 1:
        (length,) = struct.unpack("<H", _read_exact(f, 2, "an .npy header"))
    elif major in (2, 3):
        (length,) = struct.unpack("<I", _read_exact(f, 4, "an .npy header"))
    else:
        raise CheckpointError(f"unsupported .npy format version {major}.{magic[7]}")
    if length > _MAX_NPY_HEADER:
        raise CheckpointError(f".npy header claims {length} bytes, more than any real one")
    raw = _read_exact(f, length, "an .npy header")
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
            f"expected {describe(expected_shape, expected_dtype)}, file has "
            f"{describe(shape, dtype)}",
            found=(shape, dtype),
            expected=(expected_shape, expected_dtype),
        )
    nbytes = math.prod(shape) * dtype.itemsize
    data = _read_exact(f, nbytes, f"the data of a {describe(shape, expected_dtype)} array")
    if dtype.kind == "V":  # an extension dtype (bfloat16, float8, ...) saved as raw bytes
        flat = np.frombuffer(data, np.uint8).view(expected_dtype)
    else:
        flat = np.frombuffer(data, dtype)
    array = flat.reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=expected_dtype, order="C")  # a native, writeable copy


def _write_npy(f: BinaryIO, array: np.ndarray) -> None:
    np.save(f, array, allow_pickle=False)


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
        _write_npy(f, as_numpy(x))
    elif isinstance(x, (bool, int, float, complex)):
        array = np.asarray(x)
        if array.dtype.hasobject:
            raise CheckpointError(f"the Python int {x} does not fit in 64 bits")
        _write_npy(f, array)


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
            f"{describe(shape, dtype)}"
        )
    value = np.frombuffer(_read_exact(f, dtype.itemsize, "a scalar"), dtype=dtype)[0]
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
    if len(head) < 9 or head[:6] == _NPY_MAGIC or head[8:9] != b"{":
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
    pytree: Any,
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
    like: Any,
    filter_spec: Any = default_deserialise_filter_spec,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
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


def serialise_to_bytes(pytree: Any) -> bytes:
    """`tree_serialise_leaves` into memory (a small convenience for tests and tools)."""
    buffer = io.BytesIO()
    tree_serialise_leaves(buffer, pytree)
    return buffer.getvalue()
