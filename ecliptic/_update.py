"""`apply_updates`: add an optimiser's updates to a model, leaf by leaf."""

from __future__ import annotations

from typing import Any

import jax.tree_util as jtu
from jaxtyping import PyTree

from ._messages import type_name


def _is_none(x: Any) -> bool:
    return x is None


def apply_updates(model: PyTree, updates: PyTree) -> PyTree:
    """Return `model + updates`, leaf by leaf, leaving alone wherever `updates` is `None`.

    `updates` is typically the output of an optax optimiser applied to the gradients from
    `filter_grad`, so it has `None` in place of the model's non-differentiable leaves
    (activation functions, integer arrays, ...). A `None` may also stand for a whole
    subtree of `model`, which is then kept as it is.

    **Arguments:**

    - `model`: the pytree (e.g. a Module) to update.
    - `updates`: a pytree of the same structure, except that `None` may appear in place
        of any leaf or subtree of `model`.

    **Returns:** a new pytree of the same structure as `model`: a Module for a Module.

    ```python
    grads = ecliptic.filter_grad(loss)(model, x, y)
    updates, opt_state = optim.update(grads, opt_state, model)
    model = ecliptic.apply_updates(model, updates)
    ```
    """
    update_leaves, update_def = jtu.tree_flatten_with_path(updates, is_leaf=_is_none)
    try:
        model_parts = update_def.flatten_up_to(model)
    except (ValueError, TypeError) as e:
        raise ValueError(
            "apply_updates: `updates` must have the structure of `model` (with None allowed "
            "in place of any leaf or subtree); got updates with structure "
            f"{jtu.tree_structure(updates, is_leaf=_is_none)} for a model with structure "
            f"{jtu.tree_structure(model)}."
        ) from e
    new_parts = []
    for (path, update), part in zip(update_leaves, model_parts):
        if update is None:
            new_parts.append(part)
            continue
        try:
            new_parts.append(part + update)
        except Exception as e:
            raise TypeError(
                f"apply_updates: cannot add the update at {jtu.keystr(path) or '<root>'} "
                f"({type_name(update)}) to the model leaf there ({type_name(part)}): {e}"
            ) from e
    # `updates`' nodes equal the model's (flatten_up_to checked types and static data).
    return update_def.unflatten(new_parts)
