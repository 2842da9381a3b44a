"""The public API carries jaxtyping annotations that resolve at run time.

Layers' calls are annotated with array types, every PRNG-key argument with
`PRNGKeyArray`, and pytree utilities with `PyTree`, so that editors, static checkers and
documentation see the real types. These checks walk `ecliptic.__all__` and
`ecliptic.nn.__all__`, so a new layer or a signature edited back to `Any` fails here.
"""

from __future__ import annotations

import inspect
import types
import typing

import jax
import jaxtyping
import numpy as np
import pytest

import ecliptic
import ecliptic.nn as nn

KEY_HINTS = (jaxtyping.PRNGKeyArray, jaxtyping.PRNGKeyArray | None)

# Layers whose call passes any input through to a wrapped layer or function: their input
# is whatever that layer takes, so `Any` is the honest annotation.
PASS_THROUGH = {"Identity", "Lambda", "Sequential", "Stacked", "SpectralNorm", "WeightNorm"}
# Layers that return `output` or `(output, state)` depending on whether a state is given.
RETURN_DEPENDS_ON_STATE = {"LayerNorm", "GroupNorm", "RMSNorm"}
# `key` here names the attention keys (an array of vectors), not a PRNG key.
KEY_IS_DATA = {"dot_product_attention_weights"}


def _public(module: types.ModuleType) -> list[tuple[str, object]]:
    return [(name, getattr(module, name)) for name in module.__all__]


def _layer_classes() -> list[tuple[str, type]]:
    found = [(n, o) for n, o in _public(nn) if inspect.isclass(o) and "__call__" in dir(o)]
    found.append(("LoRALinear", ecliptic.LoRALinear))
    return [(n, c) for n, c in found if issubclass(c, ecliptic.Module) and c.__call__]


def _callables() -> list[tuple[str, typing.Callable[..., object]]]:
    out: list[tuple[str, typing.Callable[..., object]]] = []
    for module in (ecliptic, nn):
        for name, obj in _public(module):
            if inspect.isclass(obj):
                if issubclass(obj, BaseException):
                    continue  # no keys or arrays (StateDictError imports its report type lazily)
                for method in ("__init__", "__call__"):
                    fn = getattr(obj, method, None)
                    if inspect.isfunction(fn) and fn.__module__.startswith("ecliptic"):
                        out.append((f"{name}.{method}", fn))
            elif inspect.isfunction(obj) or inspect.isfunction(getattr(obj, "__wrapped__", 0)):
                out.append((name, obj))  # pyright: ignore[reportArgumentType]
    return out


def _ids(value: object) -> str:
    return value if isinstance(value, str) else "_"


def _is_array_hint(hint: object) -> bool:
    """An array type: `Array`, `ArrayLike`, a dimension-annotated jaxtyping array, or a
    union of those (host values such as NumPy arrays and ints allowed alongside)."""
    if hint is jax.Array or hint == jaxtyping.ArrayLike:
        return True
    if isinstance(hint, type) and issubclass(hint, jaxtyping.AbstractArray):
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = typing.get_args(hint)
        host = (type(None), np.ndarray, np.integer, int, float)
        return any(_is_array_hint(m) for m in members) and all(
            _is_array_hint(m) or m in host for m in members
        )
    return False


def _is_array_or_tuple_hint(hint: object) -> bool:
    if typing.get_origin(hint) is tuple:
        return _is_array_hint(typing.get_args(hint)[0])
    return _is_array_hint(hint)


@pytest.mark.parametrize("name, fn", _callables(), ids=_ids)
def test_public_annotations_resolve(name: str, fn: typing.Callable[..., object]) -> None:
    # Annotations are strings at run time (`from __future__ import annotations`): the
    # names they use must be importable from the defining module, not only for checkers.
    typing.get_type_hints(fn)


@pytest.mark.parametrize("name, fn", _callables(), ids=_ids)
def test_key_arguments_are_prng_keys(name: str, fn: typing.Callable[..., object]) -> None:
    if name in KEY_IS_DATA or "key" not in inspect.signature(fn).parameters:
        return
    hint = typing.get_type_hints(fn).get("key")
    assert hint in KEY_HINTS, f"{name}: `key` is annotated {hint!r}, not PRNGKeyArray"


@pytest.mark.parametrize(
    "name, cls", _layer_classes(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_layer_calls_take_and_return_arrays(name: str, cls: type) -> None:
    call = cls.__call__
    hints = typing.get_type_hints(call)
    params = [p for p in inspect.signature(call).parameters.values() if p.name != "self"]
    if name in PASS_THROUGH or not params:
        return
    data = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "state"]
    for arg in data[:3]:  # query/key_/value or input/hidden or x
        if arg == "mask":
            continue
        assert _is_array_or_tuple_hint(hints.get(arg)), f"{name}.__call__ {arg}: {hints.get(arg)}"
    if name not in RETURN_DEPENDS_ON_STATE:
        assert _is_array_or_tuple_hint(hints.get("return")), f"{name}.__call__ returns {hints}"


@pytest.mark.parametrize(
    "fn, args",
    [
        (ecliptic.tree_at, ("pytree",)),
        (ecliptic.filter, ("pytree",)),
        (ecliptic.partition, ("pytree",)),
        (ecliptic.combine, ("pytrees",)),
        (ecliptic.tree_equal, ("pytrees",)),
        (ecliptic.save, ("pytree",)),
        (ecliptic.load, ("like",)),
        (ecliptic.state_dict, ("pytree",)),
        (ecliptic.load_state_dict, ("pytree",)),
        (ecliptic.tree_serialise_leaves, ("pytree",)),
        (ecliptic.tree_deserialise_leaves, ("like",)),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_tree_utilities_take_pytrees(fn: typing.Callable[..., object], args: tuple[str]) -> None:
    hints = typing.get_type_hints(fn)
    for arg in args:
        assert hints[arg] is jaxtyping.PyTree, f"{fn.__name__}({arg}) is {hints[arg]!r}"


def test_the_walk_covers_the_layers() -> None:
    # Guard against the walk silently finding nothing (e.g. if `__all__` changed shape).
    names = {n for n, _ in _layer_classes()}
    assert {"Linear", "Conv2d", "MultiheadAttention", "LSTMCell", "BatchNorm"} <= names
    assert ("Linear.__call__", nn.Linear.__call__) in _callables()
