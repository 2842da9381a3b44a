"""Tree utilities: `tree_at` (out-of-place edits), `tree_check` and
`tree_flatten_one_level`; `tree_equal` lives in `_tree_equal.py` and is re-exported here.

Everything here walks pytrees one level at a time, so that internal nodes (sub-Modules,
lists, ...) can be addressed, not just leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.tree_util as jtu
from jaxtyping import PyTree

from ._messages import short_repr, type_name
from ._paths import flatten_one_level_with_path
from ._tree_equal import tree_equal

__all__ = ["tree_at", "tree_check", "tree_equal", "tree_flatten_one_level"]

_MISSING: Any = object()


def _is_leaf_treedef(treedef: Any) -> bool:
    # None and () also have a single node, but no leaf: they are (empty) internal nodes.
    return treedef.num_nodes == 1 and treedef.num_leaves == 1


def _path_str(path: tuple[Any, ...]) -> str:
    return jtu.keystr(path) if path else "<root>"


def tree_flatten_one_level(pytree: PyTree) -> tuple[list[PyTree], Any]:
    """Flatten a pytree by one level only.

    **Arguments:**

    - `pytree`: any pytree.

    **Returns:** `(children, treedef)`: the immediate children of the root, and a treedef
    with one leaf per child, so that `jax.tree_util.tree_unflatten(treedef, children)`
    gives back `pytree`. A leaf gives `([pytree], PyTreeDef(*))`; `None` gives `([],
    PyTreeDef(None))`.

    ```python
    tree_flatten_one_level([1, [2, 3]])  # ([1, [2, 3]], PyTreeDef([*, *]))
    ```
    """
    keyed, treedef = flatten_one_level_with_path(pytree)
    children = [child for _, child in keyed]
    if not _is_leaf_treedef(treedef):
        for child in children:
            if child is pytree:
                raise ValueError(
                    f"tree_flatten_one_level: the {type_name(pytree)} contains itself "
                    "as a child (a cycle); pytrees must be acyclic."
                )
    return children, treedef


# ---------------------------------------------------------------------------------------
# tree_at
# ---------------------------------------------------------------------------------------


class _LeafStandIn:
    """Stands in for a leaf while `where` runs, so that the leaf can be found again by
    identity (leaf values themselves may be shared or interned, e.g. small ints)."""

    __slots__ = ("_index", "_value", "_path")

    def __init__(self, index: int, value: Any, path: tuple[Any, ...]):
        self._index = index
        self._value = value
        self._path = path

    # Reading ordinary attributes (`.shape`, `.ndim`, ...) through to the leaf lets a
    # `where` pick leaves by their properties.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._value, name)

    def __repr__(self) -> str:
        return f"<leaf at {_path_str(self._path)}: {short_repr(self._value, 40)}>"


class _EmptyTupleStandIn(tuple):
    """A ``()`` with an identity of its own: Python interns the empty tuple."""

    __slots__ = ()


class _TreeIndex:
    """Every node of a pytree numbered depth-first, plus a stand-in copy of the tree
    (`mirror`) whose nodes are all distinct objects, to be handed to `where`."""

    def __init__(self, pytree: Any, is_leaf: Callable[[Any], bool] | None, none_is_leaf: bool):
        self.is_leaf = is_leaf
        self.none_is_leaf = none_is_leaf
        self.nodes: list[Any] = []
        self.paths: list[tuple[Any, ...]] = []
        self.parents: list[int] = []
        self.children: list[list[int] | None] = []
        self.treedefs: list[Any] = []
        self.by_id: dict[int, int] = {}
        # `by_id` is keyed by id(): every registered object must outlive the lookups.
        self.alive: list[Any] = []
        self.mirror = self._build(pytree, -1, (), set())

    def _build(self, node: Any, parent: int, path: tuple[Any, ...], on_path: set[int]) -> Any:
        index = len(self.nodes)
        self.nodes.append(node)
        self.paths.append(path)
        self.parents.append(parent)
        self.children.append(None)
        self.treedefs.append(None)
        if (node is None and self.none_is_leaf) or (
            self.is_leaf is not None and self.is_leaf(node)
        ):
            return self._leaf(index, node, path)
        keyed, treedef = flatten_one_level_with_path(node)
        if _is_leaf_treedef(treedef):
            return self._leaf(index, node, path)
        if id(node) in on_path:
            raise ValueError(
                f"tree_at: the pytree contains a cycle: the {type_name(node)} at "
                f"{_path_str(path)} contains itself."
            )
        on_path.add(id(node))
        child_indices = []
        mirror_children = []
        for key, child in keyed:
            child_indices.append(len(self.nodes))
            mirror_children.append(self._build(child, index, path + key, on_path))
        on_path.discard(id(node))
        self.children[index] = child_indices
        self.treedefs[index] = treedef
        mirror = jtu.tree_unflatten(treedef, mirror_children)
        if type(mirror) is tuple and not mirror:
            mirror = _EmptyTupleStandIn()
        # Rebuilding normally gives a fresh object; one that is not (None, an interned
        # custom node) cannot be told apart from its twins, so it is not registered.
        if mirror is not node and id(mirror) not in self.by_id:
            self.by_id[id(mirror)] = index
        self.alive.append(mirror)
        return mirror

    def _leaf(self, index: int, node: Any, path: tuple[Any, ...]) -> _LeafStandIn:
        stand_in = _LeafStandIn(index, node, path)
        self.by_id[id(stand_in)] = index
        self.alive.append(stand_in)
        return stand_in

    def locate(self, obj: Any) -> int | None:
        return self.by_id.get(id(obj))


def _call_where(where: Callable[[Any], Any], index: _TreeIndex) -> Any:
    try:
        return where(index.mirror)
    except TypeError as e:
        # What computing with a placeholder raises; other errors (a typo'd attribute, an
        # index out of range) are the user's own and pass through unchanged.
        raise TypeError(
            f"tree_at: calling `where` failed with {type(e).__name__}: {e}. `where` is called "
            "on a stand-in copy of `pytree` whose leaves are placeholders: it must only pick "
            "nodes out (attribute access, indexing, ...), not compute with leaf values."
        ) from e


class _NotANodeError(ValueError, TypeError):
    """`where` selected something that is not a node of the tree: a ValueError, and a
    TypeError as Equinox raises (so that either `except` catches it)."""


class _ReplaceArgumentsError(TypeError, ValueError):
    """A bad `replace`/`replace_fn` combination: a TypeError, and a ValueError (Equinox
    raises one or the other depending on the case), so that either `except` catches it."""


def _not_a_node_error(obj: Any) -> ValueError:
    if obj is None:
        hint = " To select a None node, pass `is_leaf=lambda x: x is None`."
    else:
        hint = (
            " Common causes: returning a freshly computed value (e.g. `m.w + 1`), a static "
            "field (static fields are not part of the pytree), or something below a node "
            "that `is_leaf` makes a leaf."
        )
    return _NotANodeError(
        "tree_at: `where` must return a node of `pytree` (a leaf or a subtree, e.g. "
        f"`lambda m: m.linear.weight`) or a tuple/list of them; it returned "
        f"{short_repr(obj)}, which is not in the tree.{hint}"
    )


def _select(
    where: Callable[[Any], Any], index: _TreeIndex
) -> tuple[bool, list[Any], list[int | None]]:
    """Run `where`; return (selected a single node?, what it returned as a list, the node
    index of each item or None where the item is not found)."""
    out = _call_where(where, index)
    found = index.locate(out)
    if found is not None or out is None:
        return True, [out], [found]
    if isinstance(out, (tuple, list)):
        return False, list(out), [index.locate(item) for item in out]
    raise _not_a_node_error(out)


def _resolve_selection(
    where: Callable[[Any], Any], pytree: Any, is_leaf: Callable[[Any], bool] | None
) -> tuple[_TreeIndex, bool, list[int]]:
    index = _TreeIndex(pytree, is_leaf, none_is_leaf=False)
    single, items, found = _select(where, index)
    if all(i is not None for i in found):
        return index, single, found  # type: ignore[return-value]
    for item, i in zip(items, found):
        if i is None and item is not None:
            raise _not_a_node_error(item)
    if sum(node is None for node in index.nodes) > 1:
        # Equinox refuses this case, so ecliptic does too (same code, same outcome).
        raise ValueError(
            "`where` does not uniquely identify a single element of `pytree`: tree_at's "
            "`where` returned None, and `pytree` holds several None values (None is not a "
            "leaf, so they cannot be told apart). Pass `is_leaf=lambda x: x is None` to "
            "make each None a leaf that can be selected."
        )
    # `where` returned None somewhere. None is a singleton, so look again on a stand-in
    # copy in which every None is a distinct placeholder, and check that `where` picks the
    # same nodes there (it may not, if it branches on `x is None`).
    retry = _TreeIndex(pytree, is_leaf, none_is_leaf=True)
    single_again, _, found_again = _select(where, retry)
    # A node found before must be found again, and each None must turn up as a None.
    consistent = (
        single_again == single
        and len(found_again) == len(found)
        and all(
            after is not None
            and (after == before if before is not None else retry.nodes[after] is None)
            for before, after in zip(found, found_again)
        )
    )
    if not consistent:
        raise _not_a_node_error(None)
    return retry, single, found_again  # type: ignore[return-value]


def tree_at(
    where: Callable[[PyTree], Any],
    pytree: PyTree,
    replace: Any = _MISSING,
    replace_fn: Callable[[Any], Any] = _MISSING,
    is_leaf: Callable[[Any], bool] | None = None,
) -> PyTree:
    """Return a copy of `pytree` with the node(s) selected by `where` replaced.

    Nothing is mutated, so this is how to "modify" a Module. Untouched subtrees are
    shared with the input, not copied.

    **Arguments:**

    - `where`: a function `pytree -> node` or `pytree -> tuple/list of nodes`, where a
        node is a leaf or a whole subtree; e.g. `lambda m: m.layers[0].weight`.
    - `pytree`: the pytree to edit.
    - `replace`: the new value for the selected node; if `where` returns a tuple/list,
        a tuple/list of new values of the same length. Replacements may have any
        structure.
    - `replace_fn`: instead of `replace`, a function `old node -> new node` applied to
        every selected node. Pass exactly one of `replace` and `replace_fn`.
    - `is_leaf`: optional, as in `jax.tree_util`: nodes it marks are treated as leaves.
        Use `is_leaf=lambda x: x is None` to select `None` values robustly.

    **Returns:** the edited copy of `pytree`.

    ```python
    model = tree_at(lambda m: m.linear.bias, model, jnp.zeros(3))
    model = tree_at(lambda m: (m.a, m.b), model, replace_fn=lambda x: 2 * x)
    ```
    """
    if not callable(where):
        raise TypeError(
            f"tree_at(where=...) must be a function `pytree -> node(s)`; got {short_repr(where)}."
        )
    if (replace is _MISSING) == (replace_fn is _MISSING):
        given = "neither" if replace is _MISSING else "both"
        raise _ReplaceArgumentsError(
            f"tree_at: pass exactly one of `replace` and `replace_fn`; got {given}."
        )
    if replace_fn is not _MISSING and not callable(replace_fn):
        raise TypeError(f"tree_at(replace_fn=...) must be callable; got {short_repr(replace_fn)}.")
    if is_leaf is not None and not callable(is_leaf):
        raise TypeError(
            f"tree_at(is_leaf=...) must be callable or None; got {short_repr(is_leaf)}."
        )

    index, single, selected = _resolve_selection(where, pytree, is_leaf)
    if replace_fn is not _MISSING:
        values: Sequence[Any] | None = None
    elif single:
        values = [replace]
    else:
        # Like Equinox, any sized iterable (a tuple, list, NumPy array, ...) is accepted.
        if not (hasattr(replace, "__len__") and hasattr(replace, "__iter__")):
            raise _ReplaceArgumentsError(
                f"tree_at: `where` selected {len(selected)} nodes (it returned a "
                "tuple/list), so `replace` must be a tuple/list of as many values; got "
                f"{short_repr(replace)}."
            )
        if len(replace) != len(selected):
            raise ValueError(
                f"tree_at: `where` selected {len(selected)} nodes but `replace` has "
                f"{len(replace)} values; they must match one to one (`where` must return a "
                "sequence of leaves of the same length as `replace`)."
            )
        values = list(replace)

    chosen: dict[int, Any] = {}
    for position, i in enumerate(selected):
        if values is None:
            new = chosen[i] if i in chosen else replace_fn(index.nodes[i])
        else:
            new = values[position]
            if i in chosen and chosen[i] is not new:
                raise ValueError(
                    f"tree_at: `where` selects the node at {_path_str(index.paths[i])} more "
                    "than once, with different replacement values."
                )
        chosen[i] = new
    # The strict ancestors of the chosen nodes: the only nodes that must be rebuilt.
    on_route: set[int] = set()
    for j in chosen:
        parent = index.parents[j]
        while parent != -1:
            if parent in chosen:
                raise ValueError(
                    "tree_at: `where` selects both the node at "
                    f"{_path_str(index.paths[parent])} and the node at "
                    f"{_path_str(index.paths[j])} inside it; replace one or the other."
                )
            on_route.add(parent)
            parent = index.parents[parent]

    def rebuild(i: int) -> Any:
        if i in chosen:
            return chosen[i]
        if i not in on_route:
            return index.nodes[i]
        children = [rebuild(c) for c in index.children[i]]  # type: ignore[union-attr]
        return jtu.tree_unflatten(index.treedefs[i], children)

    return rebuild(0)


# ---------------------------------------------------------------------------------------
# tree_check
# ---------------------------------------------------------------------------------------


def tree_check(pytree: PyTree) -> None:
    """Check that no internal node appears twice in `pytree`, and that it has no cycles.

    A sub-Module (or list, tuple, ...) reachable along two paths would become two
    independent copies after flattening and unflattening (for example across `jax.jit`),
    silently untying it; a cycle makes flattening loop forever. Leaves (arrays) may be
    repeated, and so may nodes without children (e.g. `None`, `()`).

    **Arguments:**

    - `pytree`: the pytree to check.

    **Returns:** `None`. Raises a `ValueError` naming the paths of the offending node.

    ```python
    layer = ecliptic.nn.Linear(2, 2, key=key)
    tree_check([layer, layer])  # ValueError: ... at [0] and at [1]
    ```
    """
    first_seen: dict[int, tuple[Any, ...]] = {}
    on_path: set[int] = set()
    # Keeps every visited node alive, so that no id() is reused during the walk.
    alive: list[Any] = []

    def visit(node: Any, path: tuple[Any, ...]) -> None:
        keyed, treedef = flatten_one_level_with_path(node)
        if _is_leaf_treedef(treedef) or not keyed:
            return
        key = id(node)
        if key in on_path:
            raise ValueError(
                f"tree_check: the pytree has a cycle: the {type_name(node)} at "
                f"{_path_str(first_seen[key])} contains itself again at {_path_str(path)}."
            )
        if key in first_seen:
            raise ValueError(
                f"tree_check: the same {type_name(node)} object appears twice in the pytree, "
                f"at {_path_str(first_seen[key])} and at {_path_str(path)}. After flattening "
                "(e.g. across jax.jit) these would be two independent copies; use "
                "ecliptic.nn.Shared to tie weights, or make two distinct objects."
            )
        first_seen[key] = path
        alive.append(node)
        on_path.add(key)
        for child_key, child in keyed:
            visit(child, path + child_key)
        on_path.discard(key)

    visit(pytree, ())
