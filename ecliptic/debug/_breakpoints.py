"""`breakpoint_if`: open JAX's debugger only when a condition holds."""

from __future__ import annotations

from typing import Any

import jax
from jax import lax

from .._errors import check_pred, concrete_any, unvmap_any


def breakpoint_if(pred: Any, **kwargs: Any) -> None:
    """Open a `jax.debug.breakpoint` if `pred` is True anywhere; works under jit and vmap.

    The condition is reduced over the whole array (and over `vmap` batch axes), so the
    debugger opens only when something is wrong, and not at all otherwise. Under `vmap`
    JAX then opens it once per batch element.

    **Arguments:**

    - `pred`: a boolean array (any shape) or Python bool.
    - `**kwargs`: passed on to `jax.debug.breakpoint` (e.g. `num_frames`, `backend`).

    **Returns:** `None`.

    ```python
    @jax.jit
    def f(x):
        y = jnp.log(x)
        ecliptic.debug.breakpoint_if(jnp.isnan(y))
        return y
    ```
    """
    pred = check_pred(pred, "breakpoint_if")
    if "token" in kwargs or "ordered" in kwargs:
        raise TypeError(
            "breakpoint_if: `token`/`ordered` are not supported; the breakpoint already "
            "runs only when `pred` holds."
        )
    known = concrete_any(pred)
    if known is False:
        return None
    if known:
        jax.debug.breakpoint(**kwargs)
        return None

    def open_debugger() -> None:
        jax.debug.breakpoint(**kwargs)

    lax.cond(unvmap_any(pred), open_debugger, lambda: None)
    return None
