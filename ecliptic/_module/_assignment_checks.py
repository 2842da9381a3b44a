"""Warnings about values given to a Module's fields while it is built: a JAX-transformed
Module (whose parameters would then be invisible) and JAX/NumPy arrays in static fields."""

from __future__ import annotations

import types
import warnings
from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np

# What `jax.jit`, `jax.grad`, `jax.vmap`, `jax.checkpoint`, ... and `jax.custom_jvp` /
# `jax.custom_vjp` return: only values of these types can be such a wrapper.
TRANSFORM_RESULT_TYPES = frozenset(
    {types.FunctionType, type(jax.jit(lambda: None)), jax.custom_jvp, jax.custom_vjp}
)

# Static values that cannot hold an array, skipped without flattening them.
_ARRAY_FREE_TYPES = TRANSFORM_RESULT_TYPES | frozenset(
    (int, float, bool, complex, str, bytes, type(None), type)
)


def warn_if_transformed_module(owner: type, name: str, value: Any, module_type: type) -> None:
    """Warn if `value`, assigned to field `name` of `owner`, is a JAX transformation of a
    Module: the transformed callable is not a pytree, so the Module's parameters inside it
    are not leaves of the owner and would never be trained."""
    inner = value
    for _ in range(8):  # e.g. jax.hessian is jacfwd(jacrev(...)): two wrappers deep
        if isinstance(inner, (jax.custom_jvp, jax.custom_vjp)):
            inner = inner.fun
        else:
            inner = getattr(inner, "__wrapped__", None)
        if inner is None or isinstance(inner, module_type):
            break
    if isinstance(inner, module_type):
        warnings.warn(
            f"Possibly assigning a JAX-transformed callable as an attribute on "
            f"{owner.__module__}.{owner.__qualname__} (field `{name}`). This will not have "
            "any of its parameters updated: the callable returned by `jax.jit`, "
            "`jax.vmap`, ... is not a pytree, so the Module inside it is hidden. Apply the "
            "transformation when calling instead, or use the filtered transformation "
            "(`filter_jit`, `filter_vmap`, ...), which returns a pytree.",
            UserWarning,
            stacklevel=3,  # the assignment in __init__
        )


def warn_if_static_arrays(owner: type, names: tuple[str, ...], values: dict[str, Any]) -> None:
    """Warn if one of `owner`'s static fields `names` holds a JAX or NumPy array in `values`
    (the instance's ``__dict__``)."""
    for name in names:
        value = values.get(name)
        if type(value) in _ARRAY_FREE_TYPES:
            continue
        if any(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in jtu.tree_leaves(value)):
            warnings.warn(
                f"A JAX array is being set as static! {owner.__qualname__}.{name} is a "
                "static field (field(static=True)) but holds a JAX or NumPy array. Static "
                "values are compared and hashed, not traced: this is usually a mistake. "
                "Make the field non-static.",
                UserWarning,
                stacklevel=4,  # where the Module is built
            )
