"""Helpers shared by the filtered differentiation transformations, beyond `ecliptic._split`:
errors naming the first place where a user-supplied tree differs from the expected one
(`mismatch_message`), and the shared wording of "nothing to differentiate" errors.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.custom_derivatives import SymbolicZero

from ._filters import is_array
from ._messages import array_text, short_repr, type_name

_flatten = jtu.tree_flatten


def merge_none(values: Sequence[Any], mask: Sequence[bool]) -> list[Any]:
    """Leaves where ``mask`` is True come from ``values`` (in order); the rest are None."""
    it = iter(values)
    return [next(it) if m else None for m in mask]


def _one_level(tree: Any) -> tuple[list[tuple[Any, Any]], Any]:
    items, treedef = jtu.tree_flatten_with_path(tree, is_leaf=lambda n: n is not tree)
    return items, treedef


def _is_leaf_def(treedef: Any) -> bool:
    return treedef.num_nodes == 1 and treedef.num_leaves == 1


def _first_mismatch(expected: Any, given: Any, path: tuple[Any, ...] = ()) -> Any:
    """The key path of the first node where ``given`` does not have ``expected``'s
    structure (leaves of ``expected`` match anything), or None."""
    if expected is None:
        return None if given is None else path
    items, treedef = _one_level(expected)
    if _is_leaf_def(treedef):
        return None
    given_items, given_def = _one_level(given)
    if given_def != treedef:
        return path
    for (key, e), (_, g) in zip(items, given_items):
        found = _first_mismatch(e, g, path + tuple(key))
        if found is not None:
            return found
    return None


def mismatch_message(what: str, root: str, expected: Any, given: Any) -> str:
    path = _first_mismatch(expected, given)
    if path is None:
        return f"{what} must have the same pytree structure as {root}."
    e_node = _node_at(expected, path)
    g_node = _node_at(given, path)
    return (
        f"{what} must have the same pytree structure as {root}; at {root}{jtu.keystr(path)}: "
        f"expected {_describe_node(e_node)}, got {_describe_node(g_node)}."
    )


def _node_at(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = _child(tree, key)
    return tree


def _child(tree: Any, key: Any) -> Any:
    for path, child in _one_level(tree)[0]:
        if path[0] == key:
            return child
    return None


def describe_value(value: Any) -> str:
    """A short description for error messages that never prints tracer internals."""
    if is_array(value):
        return f"a {array_text(value.dtype, value.shape)} array"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"{type_name(value)}: {short_repr(value)}"


def _describe_node(node: Any) -> str:
    if node is None:
        return "None"
    if is_array(node):
        return describe_value(node)
    items, treedef = _one_level(node)
    if _is_leaf_def(treedef):
        return f"a leaf of type {type_name(node)}"
    if isinstance(node, dict):
        return f"a {type_name(node)} with keys {sorted(map(repr, node))}"
    return f"a {type_name(node)} with {len(items)} child(ren)"


def unpack_aux(out: Any, name: str) -> tuple[Any, Any]:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            f"{name}(has_aux=True): the function must return a pair (output, aux); got "
            f"{describe_value(out)}."
        )
    return out[0], out[1]


def _first_param(fun: Any) -> str:
    try:
        params = list(inspect.signature(fun).parameters)
    except (TypeError, ValueError):
        return "the first argument"
    return f"the first argument `{params[0]}`" if params else "the first argument"


def describe_leaf_kind(leaf: Any) -> str:
    if is_array(leaf):
        return f"{leaf.dtype} array"
    if isinstance(leaf, (bool, int, float, complex)):
        return f"Python {type(leaf).__name__}"
    return type_name(leaf)


def no_inexact_error(name: str, fun: Any, leaves: Sequence[Any]) -> TypeError:
    """The error for a first argument without floating-point arrays (shared wording)."""
    where = _first_param(fun)
    if not leaves:
        return TypeError(
            f"{name}: {where} has no floating-point arrays to differentiate (it has no "
            "pytree leaves at all). Pass the model/parameters to differentiate first."
        )
    counts = Counter(describe_leaf_kind(leaf) for leaf in leaves)
    found = ", ".join(f"{n} x {kind}" for kind, n in counts.most_common(6))
    hints = []
    if any(isinstance(x, (float, complex)) for x in leaves):
        hints.append(
            "Python floats are static constants and are never differentiated: convert "
            "them with jnp.asarray(x)"
        )
    if any(is_array(x) for x in leaves):
        hints.append(
            "integer/bool arrays are not differentiable: cast with x.astype(jnp.float32) "
            "if that is what you meant"
        )
    hint = (" " + "; ".join(hints) + ".") if hints else ""
    return TypeError(
        f"{name}: {where} has no floating-point arrays to differentiate; it holds only "
        f"{found}.{hint}"
    )


def check_scalar(value: Any, name: str, has_aux: bool) -> None:
    """A clear error unless ``value`` is a floating-point scalar (what grad needs)."""
    what = "the first element of the (value, aux) pair" if has_aux else "its output"
    if not (is_array(value) or isinstance(value, (float, int, bool))):
        hint = (
            " To return extra outputs, return (value, aux) and pass has_aux=True."
            if isinstance(value, (tuple, list)) and not has_aux
            else ""
        )
        raise TypeError(
            f"{name}: the function must return a floating-point scalar as {what}; got "
            f"{describe_value(value)}.{hint}"
        )
    shape = np.shape(value)
    if shape != ():
        raise TypeError(
            f"{name}: the function must return a scalar (shape ()) as {what}; got an "
            f"array of shape {shape}. Reduce it first, e.g. with jnp.sum or jnp.mean."
        )
    dtype = jnp.result_type(value)
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(
            f"{name}: the function must return a floating-point scalar as {what}; got "
            f"dtype {dtype}."
        )


def require_positional(name: str, args: tuple[Any, ...]) -> None:
    if not args:
        raise TypeError(
            f"{name}: the wrapped function must be called with at least one positional "
            f"argument. Functions wrapped with {name} must have their first argument "
            "passed by position, not keyword: it is the argument that is differentiated."
        )


class PerturbationProbe:
    """Finds which outputs of a function differentiated by `jax.jvp` have a tangent known to
    be zero (independent of the differentiated inputs), so that `filter_jvp` can report
    `None` for them rather than an array of zeros.

    Inside the differentiated function, `probe(outputs, anchor)` passes the outputs through
    an identity with a custom JVP rule; the rule sees JAX's symbolic zeros and records, in
    `perturbed`, which outputs carry a real tangent. `anchor` is an extra input of the
    `jax.jvp` call with a nonzero tangent: it makes that very `jax.jvp` (and not an
    enclosing one) run the rule, even when no output is perturbed."""

    def __init__(self) -> None:
        self.perturbed: list[bool] = []

        @jax.custom_jvp
        def identity(values: list[Any], anchor: Any) -> tuple[list[Any], Any]:
            return values, anchor

        def rule(primals: Any, tangents: Any) -> Any:
            (values, anchor), (t_values, t_anchor) = primals, tangents
            self.perturbed = [not isinstance(t, SymbolicZero) for t in t_values]
            return (values, anchor), (t_values, t_anchor)

        identity.defjvp(rule, symbolic_zeros=True)
        self._identity = identity

    def probe(self, values: list[Any], anchor: Any) -> list[Any]:
        """`values` unchanged; call it inside the function given to `jax.jvp`."""
        self.perturbed = [False] * len(values)
        return self._identity(values, anchor)[0]
