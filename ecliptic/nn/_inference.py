"""`inference_mode`: switch every layer of a model between training and inference."""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

import jax.tree_util as jtu

from .._module import Module, replace_fields
from .._tree import tree_flatten_one_level

_T = TypeVar("_T")


def _has_inference_field(node: Any) -> bool:
    return "inference" in getattr(type(node), "__ecliptic_field_map__", {})


def _set_inference(node: Any, value: bool) -> Any:
    if isinstance(node, Module):
        changes = {
            name: _set_inference(node.__dict__[name], value)
            for name in type(node).__ecliptic_dynamic_fields__
        }
        if _has_inference_field(node):
            changes["inference"] = value
        return replace_fields(node, **changes)
    children, treedef = tree_flatten_one_level(node)
    if jtu.treedef_is_leaf(treedef):
        return node
    return jtu.tree_unflatten(treedef, [_set_inference(c, value) for c in children])


def inference_mode(pytree: _T, value: bool = True) -> _T:
    """A copy of `pytree` in which every layer with an `inference` field has it set.

    Layers that behave differently while training and at inference (`Dropout`,
    `BatchNorm`, `SpectralNorm`, `MultiheadAttention`, and any Module of your own with a
    field named `inference`) are found anywhere in the tree, however deeply nested.

    **Arguments:**

    - `pytree`: the model (any pytree).
    - `value`: `True` for inference, `False` to go back to training.

    **Returns:** a copy of `pytree` with `inference=value` in every such layer; nothing
    else changes (arrays are shared, not copied).

    ```python
    eval_model = ecliptic.nn.inference_mode(model)
    train_model = ecliptic.nn.inference_mode(eval_model, value=False)
    ```
    """
    if not isinstance(value, bool):
        raise TypeError(f"inference_mode(pytree, value): value must be a bool; got {value!r}.")
    return _set_inference(pytree, value)


def tree_inference(pytree: _T, value: bool) -> _T:
    """Deprecated name of `ecliptic.nn.inference_mode`.

    **Arguments:** as `inference_mode` (`value` is required here, as it was).

    **Returns:** as `inference_mode`.

    ```python
    eval_model = ecliptic.tree_inference(model, value=True)  # DeprecationWarning
    ```
    """
    warnings.warn(
        "ecliptic.tree_inference is deprecated; use ecliptic.nn.inference_mode instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return inference_mode(pytree, value)
