"""Runtime checks: `error_if` and `branched_error_if` (docs/debugging.md: the user's view).

- The check is `lax.cond(failed, on_fail, on_pass, arrays_of_x, pred, index)`: the cheap
  branch passes `x` through, the other calls a host callback that raises. The returned
  `x` is the `cond`'s output, so anything using it keeps the check alive, and nothing
  talks to the host unless the check fails. A `jax.pure_callback` (not an effectful one)
  keeps JAX's C++ fast dispatch: a passing check costs one reduction and one `cond`.
- `failed` comes from `unvmap_any`, a `custom_vmap` reduction over every batch axis, so
  the `cond` stays a `cond` under `vmap` (not a `select` running the callback every
  step). The callback is batched with `vmap_method="expand_dims"`: it sees `pred` with
  every batch axis in front and reports which batch indices failed.
- A `custom_jvp` makes the check transparent to differentiation: the tangent of `x`
  passes through, multiplied by a runtime `1.0` that is another output of the same
  `cond`: exact, and it ties the backward pass to the check, so the check survives
  `jax.grad` even when the primal output is not needed.
- A failing callback raises `EclipticRuntimeError(mark_message(msg))`, turned back into a
  clean error for the user as `ecliptic._exceptions` describes. Un-jitted control flow
  (`lax.scan` & co.) is compiled and run by JAX itself, beyond our reach: there JAX's
  `JaxRuntimeError` reaches the user (documented).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax import lax

from ._checks import is_int
from ._exceptions import (
    EclipticRuntimeError,
    EclipticTracetimeError,
    mark_message,
    marked_message,
    reraise_runtime_error,
)
from ._filters import is_array
from ._messages import describe, short_repr

try:  # eager `grad` has tracers whose values are known: that is still run time
    from jax._src.core import is_concrete as _is_concrete
except ImportError:  # pragma: no cover - older/newer JAX

    def _is_concrete(x: Any) -> bool:
        return False


OnError = Literal["raise", "breakpoint", "nan", "off"]
_MODES = ("raise", "breakpoint", "nan", "off")
ENV_VARS = ("ECLIPTIC_ON_ERROR", "EQX_ON_ERROR")
_MAX_LISTED = 8  # batch indices listed in a vmap error message


# --------------------------------------------------------------------------------------
# Configuration


def resolve_on_error(on_error: str | None, caller: str = "error_if") -> str:
    """The effective mode: `on_error` if given, else the environment, else `"raise"`. The
    environment is read each time a check is traced (not at import), so a function that was
    already compiled keeps the mode it was compiled with."""
    if on_error is None or on_error == "default":
        for var in ENV_VARS:
            value = os.environ.get(var, "").strip()
            if value:
                mode = value.lower()
                if mode == "default":
                    return "raise"
                if mode not in _MODES:
                    raise ValueError(
                        f"The environment variable {var} must be one of "
                        f"{', '.join(map(repr, _MODES))}; got {value!r}."
                    )
                return mode
        return "raise"
    if not isinstance(on_error, str) or on_error not in _MODES:
        raise ValueError(
            f"{caller}: `on_error` must be one of {', '.join(map(repr, _MODES))} or None "
            f"(use the {ENV_VARS[0]} environment variable); got {short_repr(on_error)}."
        )
    return on_error


# JAX logs every exception raised inside a `pure_callback` before re-raising it. For a
# failed check that log is a second, noisier copy of the error the user gets anyway.
class _DropFailedChecks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        return not (info and isinstance(info[1], EclipticRuntimeError) and marked_message(info[1]))


def _install_log_filter() -> None:
    logger = logging.getLogger("jax._src.callback")
    if not any(isinstance(f, _DropFailedChecks) for f in logger.filters):
        logger.addFilter(_DropFailedChecks())


_install_log_filter()


# --------------------------------------------------------------------------------------
# Helpers shared with `ecliptic.debug`


@jax.custom_batching.custom_vmap
def unvmap_any(pred: jax.Array) -> jax.Array:
    """`jnp.any(pred)` over the array *and* over every `vmap` batch axis. The result is never
    batched, so a `lax.cond` on it stays a real conditional under `vmap` instead of becoming
    a `select` that evaluates both branches."""
    return jnp.any(pred)


@unvmap_any.def_vmap
def _unvmap_any_rule(axis_size: int, in_batched: Any, pred: jax.Array) -> Any:
    del axis_size, in_batched
    # Recursing handles nested vmaps: an outer batch axis re-enters this rule.
    return unvmap_any(pred), False


def check_pred(pred: Any, caller: str) -> Any:
    """Validate a predicate: a Python bool or a boolean array (possibly traced)."""
    if isinstance(pred, (bool, np.bool_)):
        return pred
    dtype = getattr(pred, "dtype", None)
    if dtype is None or not hasattr(pred, "shape") or dtype != np.bool_:
        raise TypeError(
            f"{caller}: `pred` must be a boolean array or a Python bool (e.g. `x < 0`); "
            f"got {describe(pred)}."
        )
    return pred


def concrete_any(pred: Any) -> bool | None:
    """`any(pred)` if it is known now (not traced), else `None`."""
    if isinstance(pred, (bool, np.bool_)):
        return bool(pred)
    if isinstance(pred, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
        return None
    return bool(np.any(np.asarray(pred)))


def batch_positions_text(failed: np.ndarray) -> str:
    """Describe which vmap batch positions of the boolean array `failed` are True."""
    positions = [tuple(int(i) for i in p) for p in np.argwhere(failed)]
    shown = [str(p[0]) if len(p) == 1 else str(p) for p in positions[:_MAX_LISTED]]
    more = len(positions) - len(shown)
    listed = ", ".join(shown) + (f", ... ({len(positions)} in total)" if more > 0 else "")
    noun = "index" if len(positions) == 1 else "indices"
    size = "x".join(map(str, failed.shape))
    return f"(under vmap, batch size {size}: failed at batch {noun} {listed})"


# --------------------------------------------------------------------------------------
# The check


@dataclasses.dataclass(frozen=True)
class _Spec:
    msgs: tuple[str, ...]
    mode: str
    pred_ndim: int


def _batch_shape(spec: _Spec, pred: np.ndarray, index: np.ndarray, probes: tuple) -> tuple:
    batch = pred.ndim - spec.pred_ndim  # expand_dims puts the same number of axes in front
    shapes = [pred.shape[:batch], index.shape, *(p.shape[:batch] for p in probes)]
    return np.broadcast_shapes(*shapes)


def _failure_text(spec: _Spec, pred: np.ndarray, index: np.ndarray, probes: tuple) -> str:
    """The user's message for a failed check; the arguments carry vmap axes in front."""
    batch = pred.ndim - spec.pred_ndim
    failed = pred.any(axis=tuple(range(batch, pred.ndim))) if spec.pred_ndim else pred
    shape = _batch_shape(spec, pred, index, probes)
    failed = np.broadcast_to(failed, shape)
    index = np.broadcast_to(index, shape)
    positions = np.argwhere(failed)
    first = tuple(positions[0]) if len(positions) else ()
    i = int(index[first]) if len(positions) else 0
    if 0 <= i < len(spec.msgs):
        text = spec.msgs[i]
    else:
        text = f"(invalid message index {i}; expected 0 <= index < {len(spec.msgs)})"
    if batch:
        text = f"{text}\n{batch_positions_text(failed)}"
    return text


def _raise_on_host(spec: _Spec, pred: Any, index: Any, *probes: Any) -> Any:
    pred, index = np.asarray(pred), np.asarray(index)
    text = _failure_text(spec, pred, index, tuple(np.asarray(p) for p in probes))
    raise EclipticRuntimeError(mark_message(text)) from None


def _print_on_host(spec: _Spec, pred: Any, index: Any, *probes: Any) -> np.ndarray:
    pred, index = np.asarray(pred), np.asarray(index)
    probes = tuple(np.asarray(p) for p in probes)
    text = _failure_text(spec, pred, index, probes)
    print(f"ecliptic.error_if (on_error='breakpoint'): {text}\nOpening a breakpoint.")
    return np.ones(_batch_shape(spec, pred, index, probes), np.float32)


def _ignore(*args: Any) -> None:
    del args


def _nan_like(a: jax.Array) -> jax.Array:
    if jnp.issubdtype(a.dtype, jnp.inexact):
        return jnp.full_like(a, jnp.nan)
    return a


def _struct(a: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False))


def _run_check(spec: _Spec, arrays: list[Any], pred: Any, index: Any) -> tuple[list, Any]:
    """The check itself; returns (arrays, one) where `one` is a runtime 1.0 (or None)."""
    if spec.mode == "nan":
        bad = jnp.any(pred)
        return [jnp.where(bad, _nan_like(a), a) for a in arrays], None

    one_struct = jax.ShapeDtypeStruct((), jnp.float32)

    def on_pass(arrays: list, pred: Any, index: Any) -> tuple[list, Any]:
        return list(arrays), jnp.ones((), jnp.float32)

    def on_fail(arrays: list, pred: Any, index: Any) -> tuple[list, Any]:
        # Empty slices of x: free to send, and batched like x, so that the callback
        # sees the full batch shape even when `pred` is not batched.
        probes = [jnp.reshape(a, (-1,))[:0] for a in arrays]
        if spec.mode == "raise":
            out = jax.pure_callback(
                functools.partial(_raise_on_host, spec),
                [*map(_struct, arrays), one_struct],
                pred,
                index,
                *probes,
                vmap_method="expand_dims",
            )
            return out[:-1], out[-1]
        # breakpoint: say why (one call, with the batch indices), open the debugger, then
        # carry on with NaNs. The debugger's callback captures this frame's locals, so
        # `token` orders it after the message.
        token = jax.pure_callback(
            functools.partial(_print_on_host, spec),
            one_struct,
            pred,
            index,
            *probes,
            vmap_method="expand_dims",
        )
        jax.debug.breakpoint()
        bad = jnp.any(pred) & (token > 0)
        return [jnp.where(bad, _nan_like(a), a) for a in arrays], token

    return lax.cond(unvmap_any(pred), on_fail, on_pass, arrays, pred, index)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _checked(spec: _Spec, arrays: list[Any], pred: Any, index: Any) -> tuple[list, Any]:
    return _run_check(spec, arrays, pred, index)


@_checked.defjvp
def _checked_jvp(spec: _Spec, primals: tuple, tangents: tuple) -> tuple[tuple, tuple]:
    out, one = _checked(spec, *primals)  # through the custom_jvp again: higher orders work
    t_out = []
    for t in tangents[0]:
        if one is not None and t.dtype != jax.dtypes.float0:
            t = t * one.astype(t.dtype)  # exact; keeps the check alive in the backward pass
        t_out.append(t)
    return (out, one), (t_out, None if one is None else jnp.zeros_like(one))


def _is_staged(leaf: Any) -> bool:
    """Whether `leaf` is being traced into a jaxpr (jit, vmap, ...) rather than computed."""
    if not isinstance(leaf, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
        return False
    return not _is_concrete(leaf)


def _check_index(index: Any, num_msgs: int, caller: str) -> Any:
    if is_int(index):
        if not 0 <= index < num_msgs:
            raise ValueError(
                f"{caller}: `index` must satisfy 0 <= index < len(msgs) = {num_msgs}; got {index}."
            )
        return int(index)
    dtype = getattr(index, "dtype", None)
    if dtype is None or not np.issubdtype(dtype, np.integer) or np.shape(index) != ():
        raise TypeError(
            f"{caller}: `index` must be a Python int or an integer scalar array; "
            f"got {describe(index)}."
        )
    if not isinstance(index, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
        return _check_index(int(index), num_msgs, caller)
    return index


def _impl(x: Any, pred: Any, index: Any, msgs: tuple[str, ...], mode: str, caller: str) -> Any:
    __tracebackhide__ = True
    pred = check_pred(pred, caller)
    index = _check_index(index, len(msgs), caller)
    if mode == "off":
        return x
    known = concrete_any(pred)
    if known is False:
        return x
    leaves, treedef = jtu.tree_flatten(x)
    if known and mode == "raise" and isinstance(index, int):
        tracing = any(_is_staged(leaf) for leaf in leaves)
        error = EclipticTracetimeError if tracing else EclipticRuntimeError
        raise error(msgs[index]) from None
    positions = [i for i, leaf in enumerate(leaves) if is_array(leaf)]
    arrays = [leaves[i] for i in positions]
    if not arrays:
        # Nothing for the check to attach to: use a dummy scalar and keep it alive under
        # jit with an effect (slower dispatch; pass an array as `x` to avoid this).
        arrays = [jnp.zeros((), jnp.bool_)]
    spec = _Spec(msgs, mode, np.ndim(pred))
    try:
        out, _ = _checked(spec, arrays, pred, index)
        if not positions:
            jax.debug.callback(_ignore, out[0])
    except Exception as e:  # eager execution: the callback raised right here
        reraise_runtime_error(e, compiled=False)
        raise
    for i, leaf in zip(positions, out):
        leaves[i] = leaf
    return jtu.tree_unflatten(treedef, leaves)


# --------------------------------------------------------------------------------------
# Public API


def error_if(x: Any, pred: Any, msg: str, *, on_error: OnError | None = None) -> Any:
    """Raise `msg` at run time if `pred` is True anywhere; works under jit/vmap/grad.

    `x` is returned unchanged, and the check is tied to the returned value: use the
    return value (`x = error_if(x, ...)`), or under `jax.jit` the check may be compiled
    away together with the unused value.

    Under `vmap` the message says which batch index (or indices) failed. Under `grad`
    the check runs in the forward pass and the cotangent of `x` passes through unchanged.
    With `ecliptic.filter_jit` (or eagerly) a failure is an `EclipticRuntimeError` whose
    text ends with `msg` (its `.msg` is `msg` alone). With `jax.jit`, or inside a
    `lax.scan`/`fori_loop`/`while_loop`/`cond`/`jax.checkpoint` run outside any jit (JAX
    compiles and runs those itself), it surfaces as JAX's `JaxRuntimeError`, whose text
    ends with `msg`. If `pred` is already known to be True while tracing,
    `EclipticTracetimeError` is raised at once.

    **Arguments:**

    - `x`: any pytree; its array leaves carry the check.
    - `pred`: a boolean array (any shape) or Python bool; the check fails if any element
        is True.
    - `msg`: the error message.
    - `on_error`: `"raise"` (default), `"breakpoint"` (print `msg`, open
        `jax.debug.breakpoint`, then continue with NaNs), `"nan"` (no error; inexact
        arrays of `x` become NaN where the check fails) or `"off"`. `None` reads the
        environment variable `ECLIPTIC_ON_ERROR` (or Equinox's `EQX_ON_ERROR`) when the
        check is traced.

    **Returns:** `x`, unchanged (or NaN-filled in `"nan"`/`"breakpoint"` modes on failure).

    ```python
    @jax.jit
    def safe_log(x):
        x = ecliptic.error_if(x, x <= 0, "safe_log needs positive inputs")
        return jnp.log(x)
    ```
    """
    __tracebackhide__ = True
    if not isinstance(msg, str):
        raise TypeError(f"error_if: `msg` must be a str; got {describe(msg)}.")
    return _impl(x, pred, 0, (msg,), resolve_on_error(on_error), "error_if")


def branched_error_if(
    x: Any,
    pred: Any,
    index: Any,
    msgs: Sequence[str],
    *,
    on_error: OnError | None = None,
) -> Any:
    """Like `error_if`, with the message chosen at run time: `msgs[index]`.

    **Arguments:**

    - `x`: any pytree; its array leaves carry the check.
    - `pred`: a boolean array or Python bool; the check fails if any element is True.
    - `index`: a Python int or integer scalar array (may be traced or batched) choosing
        the message.
    - `msgs`: a non-empty sequence of message strings.
    - `on_error`: as for `error_if`.

    **Returns:** `x`, unchanged.

    ```python
    code = jnp.where(x < 0, 0, 1)
    x = ecliptic.branched_error_if(x, (x < 0) | (x > 9), code, ["negative", "too big"])
    ```
    """
    __tracebackhide__ = True
    if isinstance(msgs, str) or not isinstance(msgs, Sequence) or len(msgs) == 0:
        raise TypeError(
            "branched_error_if: `msgs` must be a non-empty sequence of strings; "
            f"got {short_repr(msgs)}."
        )
    for i, m in enumerate(msgs):
        if not isinstance(m, str):
            raise TypeError(f"branched_error_if: `msgs[{i}]` must be a str; got {describe(m)}.")
    mode = resolve_on_error(on_error, "branched_error_if")
    return _impl(x, pred, index, tuple(msgs), mode, "branched_error_if")
