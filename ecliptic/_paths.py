"""Dotted names for pytree paths (``layers.0.weight``), shared by the services.

PyTorch names parameters by joining attribute names, sequence indices and dict keys
with dots; the helpers here turn JAX key paths into the same kind of name, and walk a
pytree one level at a time with those names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax.tree_util as jtu

ROOT = "<root>"


def key_name(key: Any) -> str:
    """One path entry as a name: an attribute name, a sequence index or a dict key."""
    if isinstance(key, jtu.GetAttrKey):
        return key.name
    if isinstance(key, jtu.SequenceKey):
        return str(key.idx)
    if isinstance(key, jtu.DictKey):
        return str(key.key)
    if isinstance(key, jtu.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def dotted(path: tuple[Any, ...] | list[Any]) -> str:
    """A JAX key path as a dotted name, e.g. ``layers.0.weight`` (``""`` for the root)."""
    return ".".join(key_name(k) for k in path)


def join(prefix: str, name: str) -> str:
    """``prefix.name``, without a leading dot when ``prefix`` is empty."""
    if not prefix:
        return name
    if not name:
        return prefix
    return f"{prefix}.{name}"


def display(name: str) -> str:
    """A name for messages: the empty (root) name shows as ``<root>``."""
    return name if name else ROOT


def flatten_one_level_with_path(node: Any) -> tuple[list[tuple[tuple[Any, ...], Any]], Any]:
    """Flatten ``node`` by exactly one level: ``([(key_path, child), ...], treedef)``, whose
    treedef has a leaf in every child position, so ``treedef.unflatten(children)`` rebuilds
    the node around any children, of any structure."""
    # Only the first is_leaf call is the root; treating every later node as a leaf stops
    # the descent after one level, even for a node that contains itself.
    seen_root = False

    def stop_below_root(_: Any) -> bool:
        nonlocal seen_root
        if seen_root:
            return True
        seen_root = True
        return False

    return jtu.tree_flatten_with_path(node, is_leaf=stop_below_root)


def children_with_names(node: Any) -> tuple[list[tuple[str, Any]], Any]:
    """Flatten ``node`` by exactly one level: ``([(name, child), ...], treedef)``;
    ``treedef.unflatten(children)`` rebuilds the node around any new children."""
    pairs, treedef = flatten_one_level_with_path(node)
    return [(dotted(path), child) for path, child in pairs], treedef


def named_leaves(
    pytree: Any, is_leaf: Callable[[Any], bool] | None = None
) -> Iterator[tuple[str, Any]]:
    """Every leaf of ``pytree`` with its dotted name, in flattening order."""
    pairs, _ = jtu.tree_flatten_with_path(pytree, is_leaf=is_leaf)
    for path, leaf in pairs:
        yield dotted(path), leaf
