"""An identity fast path for repeated `filter_jit` calls with the same model object.

Modules are immutable, so a call that passes *the very same* (deeply immutable) pytree
objects as the previous call, with only bare arrays changing, has the same treedef, the
same static leaves and the same array leaves in the same places. The memo then skips
flattening altogether and reuses the previous `CallKey` object, which also makes JAX's
own cache check an identity comparison.

Safety rules, so that the shortcut can never give a stale result:
- only arguments whose whole pytree is made of Modules, tuples and `None` (no lists or
  dicts that could be mutated in place) are matched by identity, through weak references;
- bare array arguments are matched by being arrays (their values and shapes are read by
  JAX on every call anyway);
- anything else (Python scalars, lists, dicts, ...) disables the memo for that call
  pattern, and the ordinary path runs.
The memo is only built once two consecutive calls share their non-array arguments, so
training loops (a new model every step) pay just a few identity checks.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import jax.tree_util as jtu

from ._filters import is_array
from ._module import Module
from ._plumbing import CallKey


class _Entry:
    __slots__ = ("num_args", "kw_names", "refs", "template", "slots", "key")

    def __init__(
        self,
        num_args: int,
        kw_names: tuple[str, ...],
        refs: tuple[Any, ...],
        template: list[Any],
        slots: tuple[tuple[int, int], ...],
        key: CallKey,
    ):
        self.num_args = num_args
        self.kw_names = kw_names
        self.refs = refs  # per value: a weakref, or None for a bare-array slot
        self.template = template  # the dynamic leaves, bare-array slots to be filled
        self.slots = slots  # (position in dynamic, index in values)
        self.key = key


class CallMemo:
    """One-entry identity memo of a `filter_jit` wrapper (mutable, held in a static field)."""

    __slots__ = ("entry", "previous", "__weakref__")

    def __init__(self) -> None:
        self.entry: _Entry | None = None
        # The last call's pattern, and whether a memo was already tried for it.
        self.previous: tuple[Any, ...] | None = None

    def lookup(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], CallKey] | None:
        """``(dynamic, key)`` if this call matches the memo, else ``None``."""
        entry = self.entry
        if entry is None or len(args) != entry.num_args:
            return None
        if kwargs:
            if tuple(kwargs) != entry.kw_names:
                return None
            values = args + tuple(kwargs.values())
        elif entry.kw_names:
            return None
        else:
            values = args
        for value, ref in zip(values, entry.refs):
            if ref is None:
                if not is_array(value):
                    return None
            elif ref() is not value:
                return None
        dynamic = entry.template.copy()
        for position, index in entry.slots:
            dynamic[position] = values[index]
        return tuple(dynamic), entry.key

    def record(
        self,
        fun: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        dynamic: Sequence[Any],
        key: CallKey,
    ) -> None:
        """After an ordinary call: remember it, and build the memo if it repeats."""
        values = args + tuple(kwargs.values()) if kwargs else args
        identities = tuple(None if is_array(v) else id(v) for v in values)
        pattern = (len(args), tuple(kwargs), identities)
        previous = self.previous
        if previous is None or previous[0] != pattern:
            self.previous = (pattern, False)
        elif not previous[1]:  # repeated: try once (a failed try is not repeated)
            self.previous = (pattern, True)
            self.entry = _build_entry(self, fun, args, kwargs, values, dynamic, key)

    def forget(self, _ref: Any = None) -> None:
        """Drop the entry (called when a memoised argument is garbage-collected)."""
        self.entry = None


def _build_entry(
    memo: CallMemo,
    fun: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    values: tuple[Any, ...],
    dynamic: Sequence[Any],
    key: CallKey,
) -> _Entry | None:
    refs: list[Any] = []
    for value in values:
        if is_array(value):
            refs.append(None)
        elif _deeply_immutable(value):
            try:
                refs.append(weakref.ref(value, memo.forget))
            except TypeError:  # e.g. a tuple: not weak-referenceable
                return None
        else:
            return None
    # Where does each bare array land among the dynamic leaves? Flatten order is
    # fun, args in order, then kwargs by sorted name.
    order = list(range(len(args))) + sorted(
        range(len(args), len(values)), key=lambda i: list(kwargs)[i - len(args)]
    )
    position = sum(1 for leaf in jtu.tree_leaves(fun) if is_array(leaf))
    slots = []
    for index in order:
        if refs[index] is None:
            slots.append((position, index))
            position += 1
        else:
            position += sum(1 for leaf in jtu.tree_leaves(values[index]) if is_array(leaf))
    if position != len(dynamic):  # pragma: no cover - defensive: never memo a mismatch
        return None
    template = list(dynamic)
    for slot, _ in slots:
        template[slot] = None  # do not keep the caller's bare arrays alive
    return _Entry(len(args), tuple(kwargs), tuple(refs), template, tuple(slots), key)


_IMMUTABLE_NODES = (tuple, type(None))


def _deeply_immutable(tree: Any) -> bool:
    """Whether every node of ``tree`` is a Module, a tuple or None (leaves may be anything)."""
    if not isinstance(tree, Module):
        return False
    stack = [jtu.tree_structure(tree)]
    while stack:
        treedef = stack.pop()
        node = treedef.node_data()
        if node is None:
            continue  # a leaf
        if not issubclass(node[0], _IMMUTABLE_NODES + (Module,)):
            return False
        stack.extend(treedef.children())
    return True
