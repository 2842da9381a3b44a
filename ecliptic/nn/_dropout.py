"""Dropout: randomly zero elements while training, identity at inference."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._checks import is_real
from .._module import Module
from ._arg_checks import MissingKeyError, check_key
from ._scope import named_scope_call


def _check_probability(p: Any, layer: str, name: str = "p") -> float:
    """A dropout probability as a Python float in [0, 1], or a clear error."""
    if not is_real(p):
        raise TypeError(f"{layer}: {name} must be a float in [0, 1]; got {p!r}.")
    p = float(p)
    # `not (0 <= p <= 1)` also rejects NaN.
    if not (0.0 <= p <= 1.0) or math.isnan(p):
        raise ValueError(f"{layer}: {name} must be in [0, 1]; got {p}.")
    return p


def resolve_inference(
    default: bool, inference: bool | None, deterministic: bool | None, where: str
) -> bool:
    """Merge the `inference` flag with its original name `deterministic` (shared by the
    layers that have both: Dropout, MultiheadAttention).

    **Arguments:** `default`, the layer's own flag; `inference`, `deterministic`: the
    call's (either may be `None`); `where`, the name used in the message.

    **Returns:** whether to run in inference mode. **Raises:** `ValueError` if the two
    given flags disagree.

    ```python
    resolve_inference(False, None, True, "Dropout()")  # True
    ```
    """
    if (
        inference is not None
        and deterministic is not None
        and bool(inference) != bool(deterministic)
    ):
        raise ValueError(
            f"{where}: inference={inference!r} and deterministic={deterministic!r} disagree; "
            "`deterministic` is the older name of `inference`, pass only one of them."
        )
    if inference is not None:
        return bool(inference)
    if deterministic is not None:
        return bool(deterministic)
    return bool(default)


class Dropout(Module):
    """Inverted dropout, as `torch.nn.Dropout`: while training each element is zeroed with
    probability `p` and the survivors are scaled by `1/(1 - p)`, so the expected value of
    every element is unchanged; at inference the layer is the identity.

    **Arguments:**

    - `p`: probability of zeroing an element, in [0, 1].
    - `inference`: if `True` the layer does nothing. Toggle it for a whole model with
        `ecliptic.nn.inference_mode`, or override it per call.
    - `deterministic`: the original name of `inference`; either may be used.

    **Parameters:** none. `p` and `inference` are Python-scalar leaves, as in Equinox (so
    checkpoints line up); `filter_jit` treats them as static, so changing them retraces.
    Under plain `jax.jit` they would be traced: use `filter_jit`.

    **Shapes:** input any shape; output the same shape and dtype.

    ```python
    dropout = ecliptic.nn.Dropout(p=0.1)
    y = dropout(x, key=jax.random.key(0))  # y = dropout(x, inference=True) is x
    ```
    """

    # Plain (non-static) fields, as in Equinox, so that Equinox checkpoints (which store
    # Python-scalar leaves) line up leaf for leaf. filter_jit treats them as static.
    p: float
    inference: bool

    def __init__(
        self, p: float = 0.5, inference: bool = False, *, deterministic: bool | None = None
    ):
        self.p = _check_probability(p, "Dropout")
        for flag_name, flag in (("inference", inference), ("deterministic", deterministic)):
            if flag is not None and not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"Dropout: {flag_name} must be True or False; got {flag!r}.")
        # `inference` has a default, so a given `deterministic` simply takes precedence.
        self.inference = bool(inference if deterministic is None else deterministic)

    @property
    def deterministic(self) -> bool:
        """The original name of `inference`."""
        return self.inference

    @named_scope_call
    def __call__(
        self,
        x: ArrayLike,
        *positional: Any,
        key: PRNGKeyArray | None = None,
        inference: bool | None = None,
        deterministic: bool | None = None,
    ) -> Array:
        """**Arguments:**

        - `x`: an array of any shape.
        - `key`: a PRNG key choosing which elements to drop; needed unless the layer is
            in inference mode or `p == 0` (or `p == 1`, which always gives zeros).
        - `inference`, `deterministic`: override `self.inference` for this call.

        **Returns:** an array of the shape and dtype of `x`.
        """
        if positional:
            raise TypeError(
                f"Dropout takes one positional argument, x; got {1 + len(positional)}. key "
                "(and inference/deterministic) are keyword-only: call dropout(x, key=key)."
            )
        inference = resolve_inference(self.inference, inference, deterministic, "Dropout()")
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            # Scaling by 1/(1-p) has no meaning for integers (PyTorch refuses them too).
            raise TypeError(f"Dropout expects a floating-point input; got dtype {x.dtype}.")
        concrete_p = isinstance(self.p, (int, float))
        if inference or (concrete_p and self.p == 0.0):
            return x
        if concrete_p and self.p == 1.0:
            # Everything is dropped: no randomness involved, and no 0/0 in the gradient.
            return jnp.zeros_like(x)
        if key is None:
            raise MissingKeyError(
                "Dropout needs a PRNG key when it is not in inference mode: pass "
                "key=jax.random.key(...) to the call, or set inference=True (for a whole "
                "model: ecliptic.nn.inference_mode(model))."
            )
        check_key(key, "Dropout")
        keep_prob = 1.0 - self.p
        keep = jax.random.bernoulli(key, keep_prob, x.shape)
        # Scaling the kept values (rather than scaling at inference) keeps inference free.
        return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros((), x.dtype))
