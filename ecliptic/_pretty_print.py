"""`tree_pformat` / `tree_pprint`: readable, width-aware printing of pytrees.

A value is first turned into a small document tree (text, bracketed groups of items,
``key: value`` entries); rendering then lays out each group the way Equinox's printer
does, so that output written for either library reads the same: a group that fits in
the remaining width stays on one line; otherwise its brackets go on their own lines and
its items are indented, all on one line if they fit there, else one item per line.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.tree_util as jtu
import numpy as np

from ._checks import is_int
from ._messages import short_dtype, type_name


class _Text:
    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class _Concat:
    """Documents printed one after the other, e.g. ``weight=`` + ``f32[3,4]``."""

    __slots__ = ("parts",)

    def __init__(self, *parts: _Doc):
        self.parts = parts


class _Entry:
    """``key: value``; when it does not fit, the value goes on the next line."""

    __slots__ = ("key", "value")

    def __init__(self, key: _Doc, value: _Doc):
        self.key = key
        self.value = value


class _Bracket:
    __slots__ = ("opener", "items", "closer", "_flat")

    def __init__(self, opener: str, items: list[_Doc], closer: str):
        self.opener = opener
        self.items = items
        self.closer = closer
        self._flat: str | None = None


_Doc = _Text | _Concat | _Entry | _Bracket


def _flat(doc: _Doc) -> str:
    """`doc` on one line (multi-line leaf reprs keep their own newlines)."""
    if isinstance(doc, _Text):
        return doc.text
    if isinstance(doc, _Concat):
        return "".join(_flat(part) for part in doc.parts)
    if isinstance(doc, _Entry):
        return f"{_flat(doc.key)}: {_flat(doc.value)}"
    if doc._flat is None:
        doc._flat = doc.opener + ", ".join(_flat(item) for item in doc.items) + doc.closer
    return doc._flat


def _width(doc: _Doc) -> int:
    """The columns `doc` takes on one line; a multi-line leaf counts as its widest line."""
    if isinstance(doc, _Text):
        text = doc.text
        return len(text) if "\n" not in text else max(map(len, text.split("\n")))
    flat = _flat(doc)
    if "\n" not in flat:
        return len(flat)
    if isinstance(doc, _Concat):
        return sum(_width(part) for part in doc.parts)
    if isinstance(doc, _Entry):
        return _width(doc.key) + 2 + _width(doc.value)
    return len(doc.opener) + _items_width(doc.items) + len(doc.closer)


def _items_width(items: list[_Doc]) -> int:
    return sum(_width(item) for item in items) + 2 * max(len(items) - 1, 0)


class _Layout:
    __slots__ = ("indent", "width")

    def __init__(self, indent: int, width: int):
        self.indent = indent
        self.width = width

    def render(self, doc: _Doc, column: int, level: int) -> str:
        """`doc` laid out from `column`, at nesting `level` (which sets the indentation
        of any line it breaks)."""
        if isinstance(doc, _Text):
            # Continuation lines of a multi-line leaf repr line up under its first line.
            return doc.text.replace("\n", "\n" + " " * column)
        if isinstance(doc, _Concat):
            return _concat_at(doc.parts, column, lambda part, col: self.render(part, col, level))
        if column + _width(doc) <= self.width:
            return _flat_at(doc, column)
        pad = " " * (self.indent * level)
        if isinstance(doc, _Entry):
            key = self.render(doc.key, column, level)
            return f"{key}:\n{pad}{self.render(doc.value, len(pad), level)}"
        if not doc.items:
            return _flat(doc)
        inner = " " * (self.indent * (level + 1))
        if len(inner) + _items_width(doc.items) <= self.width:
            items = _flat_items_at(doc.items, len(inner))
        else:
            rendered = (self.render(item, len(inner), level + 1) for item in doc.items)
            items = (",\n" + inner).join(rendered)
        return f"{doc.opener}\n{inner}{items}\n{pad}{doc.closer}"


def _flat_at(doc: _Doc, column: int) -> str:
    """`doc` on one line starting at `column` (only multi-line leaves need the column)."""
    flat = _flat(doc)
    if "\n" not in flat:
        return flat
    if isinstance(doc, _Text):
        return doc.text.replace("\n", "\n" + " " * column)
    if isinstance(doc, _Concat):
        return _concat_at(doc.parts, column, _flat_at)
    if isinstance(doc, _Entry):
        key = _flat_at(doc.key, column)
        return f"{key}: " + _flat_at(doc.value, _column_after(key + ": ", column))
    opener = doc.opener
    return opener + _flat_items_at(doc.items, column + len(opener)) + doc.closer


def _flat_items_at(items: list[_Doc], column: int) -> str:
    out = ""
    for i, item in enumerate(items):
        if i:
            out += ", "
        out += _flat_at(item, _column_after(out, column))
    return out


def _concat_at(parts: Any, column: int, render: Callable[[Any, int], str]) -> str:
    out = ""
    for part in parts:
        out += render(part, _column_after(out, column))
    return out


def _column_after(text: str, column: int) -> int:
    newline = text.rfind("\n")
    return column + len(text) if newline < 0 else len(text) - newline - 1


def _array_summary(shape: tuple[int, ...], dtype_name: str, kind: str | None) -> str:
    text = f"{short_dtype(dtype_name)}[{','.join(str(d) for d in shape)}]"
    return text if kind is None else f"{text}({kind})"


def _jax_array_summary(x: Any) -> str:
    text = _array_summary(x.shape, x.dtype.name, None)
    return f"weak_{text}" if getattr(x, "weak_type", False) else text


def _is_wrapped_callable(x: Any) -> bool:
    """A jit-wrapped (or similar) function object: shown by its name, not by a repr that
    carries a memory address."""
    return (
        callable(x)
        and not isinstance(x, type)
        and hasattr(x, "__wrapped__")
        and isinstance(getattr(x, "__qualname__", getattr(x, "__name__", None)), str)
    )


def _qualname(x: Any) -> str:
    return getattr(x, "__qualname__", None) or x.__name__


_PLAIN_TYPE_MODULES = ("builtins", "typing", "typing_extensions", "collections.abc")


def _type_name(cls: Any) -> str:
    if cls is type(None):
        return "None"
    module, qualname = getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)
    if not isinstance(qualname, str):
        return repr(cls)
    return qualname if module in _PLAIN_TYPE_MODULES or module is None else f"{module}.{qualname}"


class _Options:
    __slots__ = ("short_arrays", "struct_as_array", "truncate_leaf")

    def __init__(self, short_arrays: bool, struct_as_array: bool, truncate_leaf: Callable):
        self.short_arrays = short_arrays
        self.struct_as_array = struct_as_array
        self.truncate_leaf = truncate_leaf


_UNINITIALISED = _Text("<uninitialised>")


def _fields_doc(name: str, obj: Any, opts: _Options, on_path: set[int]) -> _Bracket:
    """``Name(field=value, ...)``: fields declared with `repr=False`, and fields still
    holding their declared default (the same object), are left out."""
    items: list[_Doc] = []
    for f in dataclasses.fields(obj):
        if not f.repr:
            continue
        # `__dict__` rather than getattr: a repr taken mid-__init__ may meet unset fields.
        store = getattr(obj, "__dict__", None)
        value = (
            store.get(f.name, _UNINITIALISED)
            if store is not None
            else getattr(obj, f.name, _UNINITIALISED)
        )
        if value is f.default:
            continue
        doc = value if value is _UNINITIALISED else _to_doc(value, opts, on_path)
        items.append(_Concat(_Text(f"{f.name}="), doc))
    return _Bracket(f"{name}(", items, ")")


def _keyed(pairs: Any, opts: _Options, on_path: set[int]) -> list[_Doc]:
    return [_Concat(_Text(f"{k}="), _to_doc(v, opts, on_path)) for k, v in pairs]


def _to_doc(x: Any, opts: _Options, on_path: set[int]) -> _Doc:
    if id(x) in on_path:
        return _Text("<recursive>")
    if opts.truncate_leaf(x):
        return _Text(f"{type(x).__name__}(...)")
    if opts.short_arrays and (
        isinstance(x, jax.Array) or (opts.struct_as_array and isinstance(x, jax.ShapeDtypeStruct))
    ):
        return _Text(_jax_array_summary(x))
    if isinstance(x, (jax.custom_jvp, jax.custom_vjp)):
        return _to_doc(x.__wrapped__, opts, on_path)
    on_path.add(id(x))
    try:
        return _structured_doc(x, opts, on_path)
    finally:
        on_path.discard(id(x))


def _structured_doc(x: Any, opts: _Options, on_path: set[int]) -> _Doc:
    def docs(values: Any) -> list[_Doc]:
        return [_to_doc(v, opts, on_path) for v in values]

    if x is None:
        return _Text("None")
    if isinstance(x, jtu.Partial):
        fields = (("func", x.func), ("args", x.args), ("keywords", x.keywords))
        return _Bracket("Partial(", _keyed(fields, opts, on_path), ")")
    if isinstance(x, tuple):
        if hasattr(type(x), "_fields"):  # a namedtuple
            pairs = zip(type(x)._fields, x)  # pyright: ignore[reportAttributeAccessIssue]
            return _Bracket(f"{type(x).__name__}(", _keyed(pairs, opts, on_path), ")")
        if len(x) == 1:  # `(x,)` keeps its comma, on one line or broken
            return _Bracket("(", [_Concat(_to_doc(x[0], opts, on_path), _Text(","))], ")")
        return _Bracket("(", docs(x), ")")
    if isinstance(x, list):
        return _Bracket("[", docs(x), "]")
    if isinstance(x, dict):
        entries: list[_Doc] = [
            _Entry(_to_doc(k, opts, on_path), _to_doc(v, opts, on_path)) for k, v in x.items()
        ]
        return _Bracket("{", entries, "}")
    if isinstance(x, (set, frozenset)):
        name = type(x).__name__ if isinstance(x, frozenset) else ""
        if not x:
            return _Text(f"{name or 'set'}()")
        return _Bracket(f"{name}({{" if name else "{", docs(x), "})" if name else "}")
    if isinstance(x, functools.partial):
        items = [_to_doc(x.func, opts, on_path), *docs(x.args)]
        return _Bracket("partial(", items + _keyed(x.keywords.items(), opts, on_path), ")")
    if isinstance(x, types.FunctionType):
        kind = "wrapped function" if hasattr(x, "__wrapped__") else "function"
        return _Text(f"<{kind} {x.__qualname__}>")
    if _is_wrapped_callable(x):
        return _Text(f"<function {_qualname(x)}>")
    if x is Any:
        return _Text("Any")
    if isinstance(x, (type, type(Literal))):
        return _Text(_type_name(x))
    if dataclasses.is_dataclass(x):
        return _fields_doc(type(x).__qualname__, x, opts, on_path)
    if isinstance(x, np.ndarray) and opts.short_arrays:
        return _Text(_array_summary(x.shape, str(x.dtype).rsplit(".")[-1], "numpy"))
    if x is ...:
        return _Text("...")
    return _Text(repr(x))


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

    Arrays are summarised as dtype and shape (`f32[3,4]`; `weak_f32[]` for a weakly
    typed scalar; NumPy arrays get a `(numpy)` marker), Modules and dataclasses print as
    `ClassName(field=value, ...)` in field order (fields declared with `repr=False`, and
    fields still holding their default value, are skipped), functions as `<function
    name>`. Lines are broken to fit in `width` columns. The layout and these
    conventions are Equinox's, so the same tree prints the same with either library
    (except that jit-wrapped functions print by name rather than with an address).

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
    if not is_int(width) or width < 1:
        raise ValueError(f"tree_pformat(width=...) must be a positive int; got {width!r}.")
    if not is_int(indent) or indent < 0:
        raise ValueError(f"tree_pformat(indent=...) must be an int >= 0; got {indent!r}.")
    if not callable(truncate_leaf):
        raise TypeError(
            "tree_pformat(truncate_leaf=...) must be a callable `node -> bool`; got "
            f"{type_name(truncate_leaf)}."
        )
    opts = _Options(short_arrays, struct_as_array, truncate_leaf)
    return _Layout(indent, width).render(_to_doc(pytree, opts, set()), 0, 0)


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
