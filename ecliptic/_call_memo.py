"""An identity fast path for `filter_jit`: skip flattening Modules it has already seen.

Modules are immutable, so once `filter_jit` has flattened a Module (an argument) or built
it (an output), it knows that object's treedef, static leaves and arrays for as long as
the object lives. A call made only of such known Modules, bare arrays, tuples/namedtuples
of those, `None` and plain Python scalars needs no flattening: its dynamic leaves are
gathered from the known Modules, and its `CallKey` found from a small *signature* of the
call (which known structure sits where). This serves evaluation (`f(model, x)` again and
again) and training (`model, opt_state = step(model, opt_state, x, y)`, each call's
inputs being the previous call's outputs, found through tuples such as optax states).

Safety rules, so that the shortcut can never give a stale result:
- only Modules whose whole subtree is Modules, tuples and `None` (nothing mutable in
  place) are remembered, through weak references: an entry dies with its object, so a
  reused address never matches;
- a known Module's token stands for the exact treedef and static leaves it had when
  seen, and its arrays are passed as the very objects it holds (NumPy arrays mutated in
  place are read afresh);
- a signature is trusted only after an ordinary call produced the same dynamic leaves,
  in the same order, as the gathering does (checked object by object);
- anything else (lists, dicts, unknown objects, ...) misses, and the ordinary path runs.

The contract: Modules are immutable. A Module changed behind ecliptic's back (with
`object.__setattr__`, or through its `__dict__`) after a call is not seen by the next call
with that object. ``ECLIPTIC_FAST_PATH=0`` (read when a wrapper is created) turns the
fast path off. Nothing here keeps an array alive (entries are weak, `fun` is held weakly,
bare array arguments are never stored); the remembered `fun`, its arrays and signatures
are one tuple replaced in a single store, so a thread never pairs one `fun` with
another's arrays.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from typing import Any

from ._filters import is_array
from ._module import Module
from ._split import DYNAMIC, CallKey, StaticOutput

# Static leaves that may appear in a signature as (type, value): immutable and hashable.
_SCALARS = frozenset({int, float, bool, complex, str})
_ARRAY = object()  # signature marker of a bare array
_MAX_ENTRIES = 256  # caps on the per-wrapper tables, against unbounded growth
_MAX_SIGNATURES = 64
_PATIENCE = 16  # ordinary calls in a row before learning backs off ...
_RETRY_EVERY = 32  # ... to three calls (enough to learn a training loop) in this many
FAST_PATH_ENV_VAR = "ECLIPTIC_FAST_PATH"


def fast_path_enabled() -> bool:
    """Whether new `filter_jit` wrappers use the identity fast path: yes, unless the
    environment variable ``ECLIPTIC_FAST_PATH`` is ``0``, ``false``, ``no`` or ``off``
    (read when a wrapper is created)."""
    value = os.environ.get(FAST_PATH_ENV_VAR, "").strip().lower()
    return value not in ("0", "false", "no", "off")


def _dead() -> None:
    return None


_NO_FUN: tuple[Any, tuple[Any, ...], dict[tuple[Any, ...], CallKey]] = (_dead, (), {})


class _Known(weakref.ref):
    """What `filter_jit` knows about one live Module: a weak reference to it (calling
    the entry gives the Module, or None once it is gone), its arrays and its token."""

    __slots__ = ("address", "arrays", "token")
    address: int
    arrays: Sequence[Any]
    token: object


def _forgetter(known: dict[int, _Known]) -> Any:
    """The callback that drops a dead Module's entry (one per memo, shared by entries)."""

    def forget(entry: _Known) -> None:
        if known.get(entry.address) is entry:
            del known[entry.address]

    return forget


class CallMemo:
    """Per-wrapper tables of the fast path (mutable, held in a static field)."""

    __slots__ = (
        "known",
        "forget",
        "current",
        "keys",
        "layouts",
        "disabled",
        "misses",
        "__weakref__",
    )

    def __init__(self) -> None:
        self.known: dict[int, _Known] = {}
        self.forget = _forgetter(self.known)
        # One CallKey object per distinct key, so that JAX's cache finds it by identity.
        self.keys: dict[CallKey, CallKey] = {}
        self.layouts: dict[Any, Any] = {}
        # ``(reference to fun, fun's arrays, signatures -> CallKey)`` for the `fun` the
        # signatures were learned for (wrappers copied by tree maps share this memo but
        # may hold other arrays in `fun`). Replaced as a whole, in one store, so another
        # thread never sees one `fun` with another's arrays or signatures; `fun` is held
        # weakly, and the entry is dropped when it dies, so its arrays die with it.
        self.current: tuple[Any, tuple[Any, ...], dict[tuple[Any, ...], CallKey]] = _NO_FUN
        self.disabled = not fast_path_enabled()
        self.misses = 0  # ordinary calls since the fast path last worked

    @property
    def signatures(self) -> dict[tuple[Any, ...], CallKey]:
        """The learned signatures of the current `fun` (for tests and debugging)."""
        return self.current[2]

    # -- the fast path ---------------------------------------------------------------------

    def lookup(
        self, fun: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], CallKey] | None:
        """``(dynamic, key)`` if every argument is known, else ``None``."""
        fun_ref, fun_arrays, signatures = self.current  # one read: a consistent triple
        if not signatures or fun_ref() is not fun:
            return None
        gathered = _gather(self.known, fun_arrays, args, kwargs)
        if gathered is None:
            return None
        dynamic, signature = gathered
        key = signatures.get(signature)
        if key is None:
            return None
        self.misses = 0
        # A tuple, as the ordinary path passes: a list would be a new pytree type to JAX.
        return tuple(dynamic), key

    # -- learning, after a successful call ------------------------------------------------

    def after_ordinary_call(
        self,
        fun: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        dynamic: Sequence[Any],
        key: CallKey,
        result: Any,
        out: Sequence[Any],
        out_static: StaticOutput,
    ) -> None:
        """Learn from a call that took the ordinary path. When that keeps happening (e.g.
        the model is rebuilt outside the jitted function every step), learn only in short
        windows, so that such loops do not pay for bookkeeping that never helps."""
        self.misses = misses = self.misses + 1
        if misses > _PATIENCE and misses % _RETRY_EVERY >= 3:
            return
        self.learn_call(fun, args, kwargs, dynamic, key)
        self.learn_output(result, out, out_static)

    def learn_call(
        self,
        fun: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        dynamic: Sequence[Any],
        key: CallKey,
    ) -> None:
        """After an ordinary call: remember its Modules and map its signature to `key`."""
        if self.disabled:
            return
        layout = self._layout(key)
        if layout is None:  # `fun` itself is not immutable: never use the fast path
            self.disabled = True
            self.current = _NO_FUN
            return
        num_fun_arrays, slots = layout
        current = self.current
        if current[0]() is not fun:
            fun_ref = self._reference(fun, num_fun_arrays)
            if fun_ref is None:
                return
            current = (fun_ref, tuple(dynamic[:num_fun_arrays]), {})
            self.current = current
        self._remember((fun, args, kwargs), slots, dynamic)
        gathered = _gather(self.known, current[1], args, kwargs)
        if gathered is None:
            return
        again, signature = gathered
        # Trust the signature only if gathering reproduces this call's leaves exactly.
        if len(again) == len(dynamic) and all(map(_same, again, dynamic)):
            signatures = current[2]
            if len(signatures) >= _MAX_SIGNATURES:
                signatures.clear()
                self.keys.clear()
            # The first equal key seen is the one JAX's cache holds: compare by identity.
            signatures[signature] = self.keys.setdefault(key, key)

    def _reference(self, fun: Any, num_fun_arrays: int) -> Any:
        """A weak reference to `fun` that drops `self.current` when `fun` dies; a strong
        one for a `fun` without arrays that takes no weak references (a builtin); None
        (no fast path for it) for one with arrays that takes none."""
        memo = weakref.ref(self)

        def forget_fun(dead: Any) -> None:
            alive = memo()
            if alive is not None and alive.current[0] is dead:
                alive.current = _NO_FUN

        try:
            return weakref.ref(fun, forget_fun)
        except TypeError:
            if num_fun_arrays:
                return None
            return lambda: fun

    def learn_output(self, result: Any, out: Sequence[Any], out_static: StaticOutput) -> None:
        """Remember the Modules of a call's output (the next call's likely inputs)."""
        if self.disabled:
            return
        slots = self.layouts.get(out_static)
        if slots is None:
            slots = self._output_layout(out_static)
        if slots:
            self._remember(result, slots, out)

    def _remember(self, root: Any, slots: Any, arrays: Sequence[Any]) -> None:
        known, forget = self.known, self.forget
        if len(known) >= _MAX_ENTRIES:
            known.clear()
        for path, start, stop, token in slots:
            obj = root
            for step in path:
                obj = obj[step]
            address = id(obj)
            entry = known.get(address)
            if entry is not None and entry() is obj:
                continue
            entry = _Known(obj, forget)
            entry.address, entry.arrays, entry.token = address, arrays[start:stop], token
            known[address] = entry

    def _layout(self, key: CallKey) -> tuple[int, list[Any]] | None:
        """``(number of arrays in fun, Module slots of args/kwargs)``, or None if `fun`
        holds mutable containers."""
        cached = self.layouts.get(key)
        if cached is None:
            fun_def, args_def, kwargs_def = key.treedef.children()
            if not _immutable(fun_def):
                return None
            mask = key.plan.mask
            num_fun_arrays = sum(mask[: fun_def.num_leaves])
            slots: list[Any] = []
            leaf, dyn = fun_def.num_leaves, num_fun_arrays
            for position, child in zip((1, 2), (args_def, kwargs_def)):
                names = child.node_data()[1] if position == 2 else None
                for i, grandchild in enumerate(child.children()):
                    path = (position, names[i] if names is not None else i)
                    dyn = _collect_slots(grandchild, path, mask, leaf, dyn, slots)
                    leaf += grandchild.num_leaves
            cached = (num_fun_arrays, slots)
            self._cache_layout(key, cached)
        return cached

    def _output_layout(self, out_static: StaticOutput) -> list[Any]:
        mask = tuple(s is DYNAMIC for s in out_static.static)
        slots: list[Any] = []
        _collect_slots(out_static.treedef, (), mask, 0, 0, slots)
        self._cache_layout(out_static, slots)
        return slots

    def _cache_layout(self, owner: Any, layout: Any) -> None:
        if len(self.layouts) >= _MAX_SIGNATURES:
            self.layouts.clear()
        self.layouts[owner] = layout


def _gather(
    known: dict[int, _Known],
    fun_arrays: Sequence[Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[list[Any], tuple[Any, ...]] | None:
    """The call's arrays and signature, or None if an argument is not made of known parts."""
    dynamic = list(fun_arrays)
    signature: list[Any] = [len(args)]
    for value in args:
        if not _gather_one(value, known, dynamic, signature):
            return None
    if kwargs:
        for name in sorted(kwargs):  # flatten order of a dict
            signature.append(name)
            if not _gather_one(kwargs[name], known, dynamic, signature):
                return None
    return dynamic, tuple(signature)


def _same(a: Any, b: Any) -> bool:
    return a is b


def _gather_one(
    value: Any, known: dict[int, _Known], dynamic: list[Any], signature: list[Any]
) -> bool:
    """Append `value`'s arrays and signature; False if it is not made of known parts."""
    entry = known.get(id(value))
    if entry is not None and entry() is value:
        dynamic.extend(entry.arrays)
        signature.append(entry.token)
        return True
    kind = type(value)
    if kind in _SCALARS:
        signature.append(kind)
        signature.append(value)
        return True
    if value is None:
        signature.append(None)
        return True
    if is_array(value):
        dynamic.append(value)
        signature.append(_ARRAY)
        return True
    if kind is tuple or _is_namedtuple(kind):
        signature.append(kind)
        signature.append(len(value))
        for item in value:  # noqa: SIM110 (a loop is faster than all() over a generator)
            if not _gather_one(item, known, dynamic, signature):
                return False
        return True
    return False


def _collect_slots(
    treedef: Any,
    path: tuple[Any, ...],
    mask: Sequence[bool],
    leaf: int,
    dyn: int,
    slots: list[Any],
) -> int:
    """Append ``(path, start, stop, token)`` for each immutable Module reachable through
    tuples from `treedef` (whose first leaf is leaf number `leaf` and first array is
    array number `dyn`); returns the array number after this subtree."""
    num_arrays = sum(mask[leaf : leaf + treedef.num_leaves])
    node = treedef.node_data()
    if node is not None:
        kind = node[0]
        if issubclass(kind, Module):
            if _immutable(treedef):
                slots.append((path, dyn, dyn + num_arrays, object()))
        elif kind is tuple or _is_namedtuple(kind):
            child_leaf, child_dyn = leaf, dyn
            for i, child in enumerate(treedef.children()):
                child_dyn = _collect_slots(child, (*path, i), mask, child_leaf, child_dyn, slots)
                child_leaf += child.num_leaves
    return dyn + num_arrays


def _is_namedtuple(kind: type) -> bool:
    return issubclass(kind, tuple) and hasattr(kind, "_fields")


_IMMUTABLE_NODES = (tuple, type(None), Module)


def _immutable(treedef: Any) -> bool:
    """Whether every node of `treedef` is a Module, a tuple or None."""
    stack = [treedef]
    while stack:
        node = stack.pop()
        data = node.node_data()
        if data is None:
            continue  # a leaf
        if not issubclass(data[0], _IMMUTABLE_NODES):
            return False
        stack.extend(node.children())
    return True
