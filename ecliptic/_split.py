"""Shared plumbing of the filtered transformations: flatten a call's inputs once, split the
leaves into *dynamic* ones (handed to the JAX transformation) and *static* ones (kept on
the Python side, hashed into cache keys), and merge them back inside and outside the
transformation, with as little Python work per leaf as possible (this is every call's
hot path).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import jax
import jax.tree_util as jtu

from ._caches import register_cache
from ._filters import is_array
from ._messages import type_name
from ._module._flatten import tuple_getter
from ._paths import flatten_one_level_with_path

# How the filtered transformations are typed: they keep the parameters (and, where the
# result has the same structure, the result) of the function they wrap.
Params = ParamSpec("Params")
Result = TypeVar("Result")
Decorator = Callable[[Callable[Params, Result]], Callable[Params, Result]]


class _Marker:
    """Stands in a static tuple where a leaf was taken out (pickled by its module name)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name.lower()}>"

    def __reduce__(self) -> str:
        return self.name


DYNAMIC = _Marker("DYNAMIC")  # a leaf handed to the JAX transformation
CARRIED = _Marker("CARRIED")  # an output array carried aside (not differentiated/batched)


def split(
    leaves: Sequence[Any], is_dynamic: Callable[[Any], bool] = is_array
) -> tuple[list[Any], tuple[Any, ...]]:
    """Split flat leaves into ``(dynamic, static)``: ``static`` holds each leaf, or `DYNAMIC`
    where it was moved to ``dynamic``. `merge` inverts this."""
    return split_by_mask(leaves, [is_dynamic(leaf) for leaf in leaves])


def split_by_mask(leaves: Sequence[Any], mask: Sequence[bool]) -> tuple[list[Any], tuple[Any, ...]]:
    """As `split`, with a precomputed bool per leaf."""
    static = tuple([DYNAMIC if m else leaf for leaf, m in zip(leaves, mask)])
    dynamic = [leaf for leaf, m in zip(leaves, mask) if m]
    return dynamic, static


def merge(dynamic: Sequence[Any], static: Sequence[Any]) -> list[Any]:
    """Inverse of `split`: the full list of leaves."""
    values = iter(dynamic)
    return [next(values) if s is DYNAMIC else s for s in static]


# Containers whose items are compared with `==` by their own `==`: their items' types
# are part of a static value's type signature (so that `(1,)` and `(1.0,)` differ).
_NESTED_TYPES = (tuple, frozenset)


def _type_of(value: Any) -> Any:
    kind = type(value)
    if isinstance(value, _NESTED_TYPES):
        return (kind, tuple(map(_type_of, value)))
    return kind


class SplitPlan:
    """Which of a call's leaves are dynamic, and the types of the other leaves; one
    interned object per ``(mask, static leaf types)``.

    Computed once per tuple of leaf types, so that a cache-hit call splits its leaves with
    two C-level ``itemgetter`` calls and no per-leaf Python work. As the plan stands for the
    static leaves' types, a `CallKey` comparing plans by identity tells ``1``, ``1.0`` and
    ``True`` apart at no cost (array types are left out: a NumPy and a JAX array of the same
    shape and dtype share a compiled function)."""

    __slots__ = ("mask", "nested", "take_dynamic", "take_static", "__weakref__")

    def __init__(self, mask: tuple[bool, ...], nested: bool = False):
        self.mask = mask
        # A static leaf is a tuple/frozenset (whose items' types the plan cannot hold).
        self.nested = nested
        self.take_dynamic = tuple_getter(tuple(i for i, m in enumerate(mask) if m))
        self.take_static = tuple_getter(tuple(i for i, m in enumerate(mask) if not m))

    def merge(self, dynamic: Sequence[Any], static: Sequence[Any]) -> list[Any]:
        dynamic_iter, static_iter = iter(dynamic), iter(static)
        return [next(dynamic_iter) if m else next(static_iter) for m in self.mask]


# Leaf types -> plan (for `is_array`, and per other predicate); and
# (mask, static leaf types) -> the interned plan.
_array_plans: dict[tuple[type, ...], SplitPlan] = {}
_plans_by_types: dict[Any, dict[tuple[type, ...], SplitPlan]] = {is_array: _array_plans}
_plans_by_static_types: dict[tuple[Any, ...], SplitPlan] = {}


def plan_for(leaves: Sequence[Any], is_dynamic: Callable[[Any], bool] = is_array) -> SplitPlan:
    """The interned `SplitPlan` for these leaves. `is_dynamic` must depend on a leaf's
    type only (as `is_array` does): plans are cached by leaf types."""
    types = tuple(map(type, leaves))
    table = _array_plans if is_dynamic is is_array else _plans_by_types.get(is_dynamic)
    if table is None:
        table = _plans_by_types.setdefault(is_dynamic, {})
    try:
        return table[types]
    except KeyError:
        mask = tuple(is_dynamic(leaf) for leaf in leaves)
        static_types = tuple(kind for kind, m in zip(types, mask) if not m)
        nested = any(issubclass(kind, _NESTED_TYPES) for kind in static_types)
        plan = _plans_by_static_types.setdefault((mask, static_types), SplitPlan(mask, nested))
        table[types] = plan
        return plan


@register_cache
def clear_plan_caches() -> None:
    """Forget every interned plan (registered with `clear_caches`)."""
    _array_plans.clear()
    for table in _plans_by_types.values():
        table.clear()
    _plans_by_static_types.clear()


class CallKey:
    """The static half of a call (treedef, split plan and static leaves), hashed once: the one
    cache key of the filtered transformations, a static argument of the JAX transformation
    (and of our own caches). Compared cheapest-first (plan identity, which covers the static
    leaves' types, then static leaves, then the treedef). `context` names the transformation
    in the error for an unhashable static leaf."""

    __slots__ = ("treedef", "plan", "static", "nested_types", "_hash")

    def __init__(
        self,
        treedef: Any,
        plan: SplitPlan,
        static: tuple[Any, ...],
        context: Any = None,
        strict: bool = True,
    ):
        self.treedef = treedef
        self.plan = plan
        self.static = static
        # Items of static tuples/frozensets: their types, which the plan cannot stand for
        # (static leaves are compared with `==`, for which 1 == 1.0 == True).
        self.nested_types = tuple(map(_type_of, static)) if plan.nested else None
        try:
            self._hash = hash((treedef, static, id(plan), self.nested_types))
        except TypeError:
            if strict:
                raise unhashable_error(treedef, self.marked_static(), context) from None
            self._hash = None  # `strict=False`: usable to rebuild the call, not as a key

    @property
    def hashable(self) -> bool:
        """Whether the static leaves are hashable (always, unless made with `strict=False`)."""
        return self._hash is not None

    def marked_static(self) -> tuple[Any, ...]:
        """One entry per leaf: the static leaf, or `DYNAMIC`."""
        return tuple(self.plan.merge([DYNAMIC] * sum(self.plan.mask), self.static))

    def __hash__(self) -> int:
        # None (``strict=False``, unhashable leaves) makes Python raise a TypeError.
        return self._hash  # pyright: ignore[reportReturnType]

    def __eq__(self, other: Any) -> bool:
        if self is other:
            return True
        if (
            type(other) is not type(self)
            or self._hash != other._hash
            or self.plan is not other.plan
        ):
            return False
        try:
            return (
                self.static == other.static
                and self.nested_types == other.nested_types
                and self.treedef == other.treedef
            )
        except ValueError:  # e.g. an array in a static field: no boolean equality
            raise unhashable_error(self.treedef, self.marked_static(), None) from None

    def unflatten(self, dynamic: Sequence[Any]) -> Any:
        return self.treedef.unflatten(self.plan.merge(dynamic, self.static))


def split_call(
    tree: Any,
    is_dynamic: Callable[[Any], bool] = is_array,
    context: Any = None,
    strict: bool = True,
) -> tuple[tuple[Any, ...], CallKey]:
    """Flatten `tree` (usually ``(fun, args, kwargs)``) into its dynamic leaves and the
    `CallKey` of the rest; ``key.unflatten(dynamic)`` gives the tree back. With
    ``strict=False`` unhashable static leaves give a key that is not `hashable` instead
    of an error (for transformations that can run without caching)."""
    leaves, treedef = jtu.tree_flatten(tree)
    plan = plan_for(leaves, is_dynamic)
    key = CallKey(treedef, plan, plan.take_static(leaves), context, strict)
    return plan.take_dynamic(leaves), key


class DonationKey(CallKey):
    """A `CallKey` that also records which leaves are not donated: those with index in
    ``range(*kept_leaves)``."""

    __slots__ = ("kept_leaves",)

    def __init__(
        self,
        treedef: Any,
        plan: SplitPlan,
        static: tuple[Any, ...],
        kept: tuple[int, int],
        context: Any = "filter_jit",
    ):
        super().__init__(treedef, plan, static, context)
        self.kept_leaves = kept
        self._hash = hash((self._hash, kept))

    def __eq__(self, other: Any) -> bool:
        return self is other or (super().__eq__(other) and self.kept_leaves == other.kept_leaves)

    __hash__ = CallKey.__hash__

    def split_donated(self, dynamic: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """``(kept, donated)``: the call's dynamic leaves, sorted by donation."""
        start, stop = self.kept_leaves
        kept: list[Any] = []
        donated: list[Any] = []
        values = iter(dynamic)
        for i, m in enumerate(self.plan.mask):
            if m:
                (kept if start <= i < stop else donated).append(next(values))
        return kept, donated

    def interleave(self, kept: Sequence[Any], donated: Sequence[Any]) -> list[Any]:
        """Inverse of `split_donated`: the dynamic leaves in call order."""
        start, stop = self.kept_leaves
        kept_iter, donated_iter = iter(kept), iter(donated)
        return [
            next(kept_iter) if start <= i < stop else next(donated_iter)
            for i, m in enumerate(self.plan.mask)
            if m
        ]


def donation_call(tree: Any, kept: tuple[int, int]) -> tuple[list[Any], list[Any], DonationKey]:
    """As `split_call`, with the dynamic leaves sorted into kept and donated ones."""
    leaves, treedef = jtu.tree_flatten(tree)
    plan = plan_for(leaves)
    key = DonationKey(treedef, plan, plan.take_static(leaves), kept)
    return (*key.split_donated(plan.take_dynamic(leaves)), key)


class StaticOutput:
    """Carries the non-array parts of a traced function's output out through the JAX
    transformation, and puts the arrays back.

    Registered as a pytree node with no children, so JAX stores it in the output treedef and
    hands the very same object back after the call, at no cost. ``static`` has one entry per
    leaf: `DYNAMIC` (the first group of arrays: traced, differentiated, batched), `CARRIED`
    (a second group, carried aside) or the static value itself. ``axes`` may hold per-array
    output axes (`filter_vmap`/`filter_pmap`). Rebuilding the output is one C-level
    permutation of ``(*first, *second, *static_values)``."""

    __slots__ = ("treedef", "static", "axes", "all_dynamic", "_static_values", "_order")

    def __init__(self, treedef: Any, static: tuple[Any, ...], axes: tuple[Any, ...] = ()):
        self.treedef = treedef
        self.static = static
        self.axes = axes
        self.all_dynamic = all(s is DYNAMIC for s in static)
        groups: tuple[list[int], list[int], list[int]] = ([], [], [])
        for i, s in enumerate(static):
            groups[0 if s is DYNAMIC else 1 if s is CARRIED else 2].append(i)
        self._static_values = tuple(static[i] for i in groups[2])
        # Leaf i takes item order[i] of ``(*first, *second, *static_values)``.
        order = [0] * len(static)
        for position, i in enumerate(groups[0] + groups[1] + groups[2]):
            order[i] = position
        self._order = tuple_getter(tuple(order))

    def unflatten(self, first: Sequence[Any], second: Sequence[Any] = ()) -> Any:
        """The output, with `first` at its `DYNAMIC` leaves and `second` at its `CARRIED`
        ones."""
        if self.all_dynamic:
            return self.treedef.unflatten(first)
        return self.treedef.unflatten(self._order((*first, *second, *self._static_values)))

    def fill(self, first: Sequence[Any], fill: Any = None) -> Any:
        """A tree like the output: `first` at its `DYNAMIC` leaves, `fill` elsewhere."""
        values = iter(first)
        return self.treedef.unflatten([next(values) if s is DYNAMIC else fill for s in self.static])


jtu.register_pytree_node(StaticOutput, lambda s: ((), s), lambda aux, _: aux)


def call_and_split(dynamic: Sequence[Any], key: CallKey) -> tuple[list[Any], StaticOutput]:
    """The body a filtered transformation traces: rebuild ``(fun, args, kwargs)`` from
    the dynamic leaves and the key, call, and split the output."""
    fun, args, kwargs = key.unflatten(dynamic)
    return split_output(fun(*args, **kwargs))


def split_output(
    out: Any, is_dynamic: Callable[[Any], bool] = is_array, carry: bool = False
) -> tuple[Any, ...]:
    """Flatten a traced function's output into ``(arrays, parts)``: a `StaticOutput` and
    the arrays for which `is_dynamic` holds. With ``carry=True``, the other arrays are
    `CARRIED` (``(dynamic, carried, parts)``; ``parts.unflatten(dynamic, carried)``)."""
    leaves, treedef = jtu.tree_flatten(out)
    static = tuple(
        [DYNAMIC if is_dynamic(x) else CARRIED if carry and is_array(x) else x for x in leaves]
    )
    parts = StaticOutput(treedef, static)
    dynamic = [x for x, s in zip(leaves, static) if s is DYNAMIC]
    if not carry:
        return dynamic, parts
    return dynamic, [x for x, s in zip(leaves, static) if s is CARRIED], parts


def is_array_or_struct(x: Any) -> bool:
    """An array or a `jax.ShapeDtypeStruct`: the dynamic leaves of an abstract call."""
    return is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def same_static(a: Any, b: Any) -> bool:
    """Whether two static values are the same: identical, or ``==`` with a true answer;
    `False` when ``==`` fails or gives something without a truth value (arrays)."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


# -- error reporting (slow path only) ------------------------------------------------------


def leaf_path(treedef: Any, index: int, root: str) -> str:
    """Name leaf number `index` of `treedef` as a path from `root`, e.g. ``args[0].weight``."""
    placeholder = treedef.unflatten(list(range(treedef.num_leaves)))
    for path, leaf in jtu.tree_flatten_with_path(placeholder)[0]:
        if leaf == index:
            return root + jtu.keystr(path)
    return f"{root} leaf #{index}"


_CALL_ROOTS = ("fun", "args", "kwargs")


def _describe_path(path: tuple[Any, ...]) -> str:
    """Name a path into the ``(fun, args, kwargs)`` tuple the way the user wrote it."""
    if path and isinstance(path[0], jtu.SequenceKey) and path[0].idx < 3:
        return _CALL_ROOTS[path[0].idx] + jtu.keystr(tuple(path[1:]))
    return "inputs" + jtu.keystr(tuple(path))


def unhashable_error(treedef: Any, static: tuple[Any, ...], context: Any) -> TypeError:
    """A clear error naming the path and type of the first unhashable static value."""
    where = context or "filter_jit"
    tree = treedef.unflatten(list(static))
    for path, leaf in jtu.tree_flatten_with_path(tree)[0]:
        if leaf is DYNAMIC:
            continue
        try:
            hash(leaf)
        except TypeError:
            return TypeError(
                f"{where}: the non-array leaf at {_describe_path(path)} is of "
                f"unhashable type {type_name(leaf)}. Non-array leaves are static (part of "
                "the compilation cache key) and must be hashable: convert it to an array, "
                "a tuple, or make it hashable."
            )
    for root, subtree in zip(_CALL_ROOTS, tree if isinstance(tree, tuple) else ()):
        found = _find_unhashable_static_field(subtree, root)
        if found is not None:
            path, value = found
            return TypeError(
                f"{where}: the static field at {path} holds a value of type "
                f"{type_name(value)}, which is unhashable or has no boolean equality "
                "(arrays). Static fields (field(static=True)) must be hashable: use a tuple "
                "instead of a list, or make the field non-static if it holds arrays."
            )
    return TypeError(f"{where}: the static part of the inputs is unhashable.")


# NumPy dtype kinds JAX cannot trace: object, strings, bytes, void (records), datetimes.
_UNTRACEABLE_KINDS = frozenset("OSUVMm")


def untraceable_array_error(call: Any, where: str) -> TypeError | None:
    """A clear error naming the first array argument JAX cannot trace (e.g. a NumPy
    array of dtype object), or None. `call` is the ``(fun, args, kwargs)`` tuple."""
    for path, leaf in jtu.tree_flatten_with_path(call)[0]:
        dtype = getattr(leaf, "dtype", None)
        if is_array(leaf) and getattr(dtype, "kind", None) in _UNTRACEABLE_KINDS:
            return TypeError(
                f"{where}: the argument at {_describe_path(path)} is a {type_name(leaf)} of "
                f"dtype {dtype} (shape {tuple(leaf.shape)}), which JAX cannot trace: arrays "
                "are traced, and only numeric and bool dtypes can be. Convert it (e.g. "
                "np.asarray(x, np.float32)), or pass it inside a non-array object (a tuple "
                "of Python values is static)."
            )
    return None


def _find_unhashable_static_field(tree: Any, path: str) -> tuple[str, Any] | None:
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        for f in dataclasses.fields(tree):
            value = tree.__dict__.get(f.name)
            sub = f"{path}.{f.name}"
            if f.metadata.get("static", False):
                try:
                    hash(value)
                except TypeError:
                    return sub, value
            else:
                found = _find_unhashable_static_field(value, sub)
                if found is not None:
                    return found
        return None
    pairs, treedef = flatten_one_level_with_path(tree)
    if jtu.treedef_is_leaf(treedef):
        return None
    for child_path, child in pairs:
        found = _find_unhashable_static_field(child, path + jtu.keystr(child_path))
        if found is not None:
            return found
    return None
