"""A stable description of a pytree's structure and static data, for checkpoints.

`describe_tree` gives the kind of every leaf (``f32[3,4]`` for arrays, the type or
qualified name for the rest) and, for every internal node, its type and static data (a
Module's static fields one by one), as strings that do not depend on the process (no
memory addresses, no hash randomisation), so that the description, and its hash, the
*fingerprint*, can be stored in a file and compared with a `like` skeleton elsewhere.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
from typing import Any

import numpy as np

from .._messages import array_text, type_name
from .._paths import children_with_names, join
from ._arrays import is_key_dtype

_MAX_DEPTH = 12


def _qualified(obj: Any) -> str | None:
    # The qualified name without the module: a class defined in a script is the same
    # whether the script runs as __main__ or is imported, and library functions keep
    # their names when their private modules move between versions.
    name = getattr(obj, "__qualname__", None)
    return name if isinstance(name, str) else None


def canonical(value: Any, depth: int = 0) -> str:
    """A process-independent string for a static value: literals by ``repr``,
    containers element by element, functions and classes by qualified name, other
    objects by their fields, or by type when they are compared by identity (plus their
    ``repr`` when it has no memory address)."""
    if depth > _MAX_DEPTH:
        return "..."
    d = depth + 1
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{type_name(value)}.{value.name}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(canonical(v, d) for v in value)
        if type(value) in (tuple, list):
            return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
        return f"{type_name(value)}({inner})"
    if isinstance(value, dict):
        items = sorted((canonical(k, d), canonical(v, d)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(canonical(v, d) for v in value)) + "}"
    if isinstance(value, np.dtype):
        return f"dtype({value})"
    if isinstance(value, np.generic):
        return f"{type(value).__name__}({value.item()!r})"
    if isinstance(value, functools.partial):
        args = ", ".join(canonical(a, d) for a in value.args)
        kwargs = canonical(value.keywords, d)
        return f"partial({canonical(value.func, d)}, ({args}), {kwargs})"
    if isinstance(value, type) or callable(value):
        name = _qualified(value)
        if name is not None:
            return name
    if type(value).__eq__ is object.__eq__:
        # Compared by identity (e.g. a StateIndex marker): there is no value to record
        # that another process could reproduce, only the type.
        return type_name(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(
            f"{f.name}={canonical(getattr(value, f.name, None), d)}"
            for f in dataclasses.fields(value)
        )
        return f"{type_name(value)}({fields})"
    slots = getattr(type(value), "__slots__", None)
    if isinstance(slots, (tuple, list)) and slots:
        fields = ", ".join(f"{s}={canonical(getattr(value, s, None), d)}" for s in slots)
        return f"{type_name(value)}({fields})"
    try:
        text = repr(value)
    except Exception:
        text = ""
    if " at 0x" in text or not text:
        return type_name(value)
    return f"{type_name(value)}:{text}"


def _static_fields(kind: type, aux: Any) -> dict[str, str]:
    """A node's static data as ``{field: canonical string}``."""
    names = getattr(kind, "__ecliptic_static_fields__", None)
    values = aux
    extra = {}
    if names is not None and not isinstance(aux, tuple) and hasattr(aux, "static_values"):
        values = aux.static_values  # module_update_wrapper metadata rides along
        extra["<wrapper>"] = canonical(getattr(aux, "attributes", None))
    if names is not None and isinstance(values, tuple) and len(values) == len(names):
        fields = {name: canonical(v) for name, v in zip(names, values)}
    elif aux is None:
        fields = {}
    else:
        fields = {"<aux>": canonical(aux)}
    fields.update(extra)
    return fields


def leaf_kind(leaf: Any) -> str:
    """``f32[3,4]`` for an array (or ShapeDtypeStruct); for any other leaf, ``-`` and
    its type, or for a function its qualified name."""
    dtype = getattr(leaf, "dtype", None)
    shape = getattr(leaf, "shape", None)
    if dtype is not None and shape is not None and not isinstance(leaf, type):
        try:
            if is_key_dtype(dtype) or np.dtype(dtype) is not None:
                return array_text(dtype, shape)
        except TypeError:
            pass
    if callable(leaf) and not isinstance(leaf, type) and _qualified(leaf) is not None:
        return f"-{_qualified(leaf)}"
    return f"-{type_name(leaf)}"


def describe_tree(pytree: Any) -> tuple[list[list[str]], dict[str, list[Any]]]:
    """``(leaves, nodes)``: ``leaves`` is ``[[name, kind], ...]`` in flattening order and
    ``nodes`` maps each internal node's dotted path to ``[type, {field: value}]``."""
    leaves: list[list[str]] = []
    nodes: dict[str, list[Any]] = {}

    def walk(node: Any, name: str) -> None:
        children, treedef = children_with_names(node)
        if treedef.num_nodes == 1 and treedef.num_leaves == 1:
            leaves.append([name, leaf_kind(node)])
            return
        kind, aux = treedef.node_data()
        nodes[name] = [_qualified(kind) or type_name(kind), _static_fields(kind, aux)]
        for key, child in children:
            walk(child, join(name, key))

    walk(pytree, "")
    return leaves, nodes


def fingerprint(leaves: list[list[str]], nodes: dict[str, list[Any]]) -> str:
    """A short hash of the static description: equal for equal architectures."""
    static_leaves = [[n, k] if k.startswith("-") else [n, "array"] for n, k in leaves]
    text = json.dumps([static_leaves, sorted(nodes.items())], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
