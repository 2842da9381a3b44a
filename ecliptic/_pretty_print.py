"""`tree_pformat` / `tree_pprint`: readable, width-aware printing of pytrees.

A value is first turned into a small document tree (text, or a bracketed group of
items); rendering then puts each group on one line if it fits in the remaining width,
and otherwise one item per line, indented.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._misc import type_name


class _Text:
    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class _Keyed:
    """``prefix`` glued to a document, e.g. ``weight=`` + ``f32[3,4]``."""

    __slots__ = ("prefix", "doc")

    def __init__(self, prefix: str, doc: _Doc):
        self.prefix = prefix
        self.doc = doc


class _Group:
    __slots__ = ("opener", "items", "closer", "single_comma", "_flat")

    def __init__(self, opener: str, items: list[_Doc], closer: str, single_comma: bool = False):
        self.opener = opener
        self.items = items
        self.closer = closer
        # A one-element tuple needs its comma even on one line: `(x,)`.
        self.single_comma = single_comma
        self._flat: str | None = None


_Doc = _Text | _Keyed | _Group


def _flat(doc: _Doc) -> str:
    if isinstance(doc, _Text):
        return doc.text
    if isinstance(doc, _Keyed):
        return doc.prefix + _flat(doc.doc)
    if doc._flat is None:
        inner = ", ".join(_flat(item) for item in doc.items)
        if doc.single_comma and len(doc.items) == 1:
            inner += ","
        doc._flat = doc.opener + inner + doc.closer
    return doc._flat


def _render(doc: _Doc, column: int, level: int, indent: int, width: int, reserve: int) -> str:
    """Render `doc` starting at `column`; `reserve` characters must stay free after it."""
    if isinstance(doc, _Text):
        # Continuation lines of a multi-line leaf repr line up under its first line.
        return doc.text.replace("\n", "\n" + " " * column)
    if isinstance(doc, _Keyed):
        body = _render(doc.doc, column + len(doc.prefix), level, indent, width, reserve)
        return doc.prefix + body
    flat = _flat(doc)
    if not doc.items or ("\n" not in flat and column + len(flat) + reserve <= width):
        return flat
    inner = " " * (indent * (level + 1))
    lines = [doc.opener]
    for item in doc.items:
        lines.append(inner + _render(item, len(inner), level + 1, indent, width, 1) + ",")
    lines.append(" " * (indent * level) + doc.closer)
    return "\n".join(lines)


_DTYPE_PREFIXES = (("bfloat", "bf"), ("float", "f"), ("uint", "u"), ("int", "i"), ("complex", "c"))


def _dtype_str(dtype: Any) -> str:
    name = str(dtype)
    for long, short in _DTYPE_PREFIXES:
        if name.startswith(long):
            return short + name[len(long) :]
    return name


def _short_array(x: Any) -> str:
    text = f"{_dtype_str(x.dtype)}[{','.join(str(d) for d in x.shape)}]"
    if isinstance(x, (np.ndarray, np.generic)):
        text += "(numpy)"
    return text


_FUNCTION_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    np.ufunc,
    *((jnp.ufunc,) if hasattr(jnp, "ufunc") else ()),
)


def _is_function(x: Any) -> bool:
    if isinstance(x, _FUNCTION_TYPES):
        return True
    # jit-wrapped and custom_jvp/vjp functions are objects carrying the wrapped __name__.
    return callable(x) and not isinstance(x, type) and isinstance(
        getattr(x, "__name__", None), str
    ) and hasattr(x, "__wrapped__")


class _Options:
    __slots__ = ("short_arrays", "struct_as_array", "truncate_leaf")

    def __init__(self, short_arrays: bool, struct_as_array: bool, truncate_leaf: Callable):
        self.short_arrays = short_arrays
        self.struct_as_array = struct_as_array
        self.truncate_leaf = truncate_leaf


_UNSET = _Text("<unset>")


def _fields_group(
    name: str, obj: Any, opts: _Options, on_path: set[int]
) -> _Group:
    items: list[_Doc] = []
    for f in dataclasses.fields(obj):
        if not f.repr:
            continue
        # `__dict__` rather than getattr: a repr taken mid-__init__ may meet unset fields.
        value = obj.__dict__.get(f.name, _UNSET) if hasattr(obj, "__dict__") else getattr(
            obj, f.name, _UNSET
        )
        doc = value if value is _UNSET else _to_doc(value, opts, on_path)
        items.append(_Keyed(f"{f.name}=", doc))
    return _Group(f"{name}(", items, ")")


def _to_doc(x: Any, opts: _Options, on_path: set[int]) -> _Doc:
    if opts.truncate_leaf(x):
        return _Text(f"{type(x).__name__}(...)")
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return _Text(_short_array(x) if opts.short_arrays else repr(x))
    if isinstance(x, jax.ShapeDtypeStruct):
        if opts.struct_as_array:
            return _Text(_short_array(x))
        return _Text(f"ShapeDtypeStruct(shape={x.shape}, dtype={x.dtype})")
    if isinstance(x, (list, tuple, dict)) or (
        dataclasses.is_dataclass(x) and not isinstance(x, type)
    ):
        if id(x) in on_path:
            return _Text(f"<recursive {type(x).__name__}>")
        on_path.add(id(x))
        try:
            return _container_doc(x, opts, on_path)
        finally:
            on_path.discard(id(x))
    if isinstance(x, functools.partial):
        items = [_to_doc(x.func, opts, on_path)]
        items += [_to_doc(a, opts, on_path) for a in x.args]
        items += [_Keyed(f"{k}=", _to_doc(v, opts, on_path)) for k, v in x.keywords.items()]
        return _Group(f"{type(x).__name__}(", items, ")")
    if _is_function(x):
        return _Text(f"<function {x.__name__}>")
    return _Text(repr(x))


def _container_doc(x: Any, opts: _Options, on_path: set[int]) -> _Doc:
    if isinstance(x, tuple) and hasattr(type(x), "_fields"):  # namedtuple
        items: list[_Doc] = [
            _Keyed(f"{k}=", _to_doc(v, opts, on_path)) for k, v in zip(type(x)._fields, x)  # pyright: ignore[reportAttributeAccessIssue]
        ]
        return _Group(f"{type(x).__name__}(", items, ")")
    if isinstance(x, tuple):
        return _Group("(", [_to_doc(v, opts, on_path) for v in x], ")", single_comma=True)
    if isinstance(x, list):
        return _Group("[", [_to_doc(v, opts, on_path) for v in x], "]")
    if isinstance(x, dict):
        items = [_Keyed(f"{k!r}: ", _to_doc(v, opts, on_path)) for k, v in x.items()]
        if type(x) is dict:
            return _Group("{", items, "}")
        return _Group(f"{type(x).__name__}({{", items, "})")
    return _fields_group(type(x).__name__, x, opts, on_path)


def _never(_: Any) -> bool:
    return False


def tree_pformat(
    pytree: Any,
    *,
    width: int = 80,
    indent: int = 2,
    short_arrays: bool = True,
    struct_as_array: bool = False,
    truncate_leaf: Callable[[Any], bool] = _never,
) -> str:
    """Format a pytree as a readable string.

    Arrays are summarised as dtype and shape (`f32[3,4]`; NumPy arrays get a `(numpy)`
    marker), Modules and dataclasses print as `ClassName(field=value, ...)` in field
    order (fields declared with `repr=False` are skipped), functions as `<function
    name>`. Lines are broken to fit in `width` columns.

    **Arguments:**

    - `pytree`: anything; it need not be a pytree.
    - `width`: the maximum line width to aim for (a long leaf may exceed it).
    - `indent`: spaces per nesting level when a group is broken over several lines.
    - `short_arrays`: if `False`, arrays print with their full `repr`, values included.
    - `struct_as_array`: if `True`, `jax.ShapeDtypeStruct`s print like arrays.
    - `truncate_leaf`: a predicate on every node; where it is `True` the node prints as
        `ClassName(...)`.

    **Returns:** the formatted string.

    ```python
    tree_pformat({"w": jnp.zeros((3, 4)), "act": jax.nn.relu})
    # "{'w': f32[3,4], 'act': <function relu>}"
    ```
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"tree_pformat(width=...) must be a positive int; got {width!r}.")
    if isinstance(indent, bool) or not isinstance(indent, int) or indent < 0:
        raise ValueError(f"tree_pformat(indent=...) must be an int >= 0; got {indent!r}.")
    if not callable(truncate_leaf):
        raise TypeError(
            "tree_pformat(truncate_leaf=...) must be a callable `node -> bool`; got "
            f"{type_name(truncate_leaf)}."
        )
    opts = _Options(short_arrays, struct_as_array, truncate_leaf)
    return _render(_to_doc(pytree, opts, set()), 0, 0, indent, width, 0)


def tree_pprint(
    pytree: Any,
    *,
    width: int = 80,
    indent: int = 2,
    short_arrays: bool = True,
    struct_as_array: bool = False,
    truncate_leaf: Callable[[Any], bool] = _never,
) -> None:
    """Print a pytree readably: `print(tree_pformat(pytree, ...))`.

    **Arguments:** as for `tree_pformat`.

    **Returns:** `None`.

    ```python
    tree_pprint(model, width=60)
    ```
    """
    print(
        tree_pformat(
            pytree,
            width=width,
            indent=indent,
            short_arrays=short_arrays,
            struct_as_array=struct_as_array,
            truncate_leaf=truncate_leaf,
        )
    )
