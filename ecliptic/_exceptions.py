"""ecliptic's exception types, and the translation of runtime check failures.

They live at the bottom of the package so that every layer (the transformations that
translate runtime failures, the services that raise them) can import them without cycles.

How a failed `error_if` reaches the user: the check's host callback raises an
`EclipticRuntimeError` whose text is the user's message between two markers (see
`mark_message`). Under `jax.jit`, JAX turns any exception raised in a callback into a
`jax.errors.JaxRuntimeError` whose text contains the original text, markers included.
`reraise_runtime_error` finds the markers again and raises a clean `EclipticRuntimeError`
carrying only the user's message; `filter_jit` calls it on every exception it sees.
"""

from __future__ import annotations


class EclipticRuntimeError(RuntimeError):
    """Raised at run time by `error_if`/`branched_error_if` when a check fails."""


class EclipticTracetimeError(RuntimeError):
    """Raised while tracing, when a check can already be decided from static information."""


# Equinox's names, so that `except eqx.EquinoxRuntimeError` keeps working after switching.
EquinoxRuntimeError = EclipticRuntimeError
EquinoxTracetimeError = EclipticTracetimeError

# The markers are plain ASCII and read naturally in JAX's error text, e.g.
# "EclipticRuntimeError: [ecliptic.error_if] x must be positive [end ecliptic.error_if]".
_MARK_START = "[ecliptic.error_if] "
_MARK_END = " [end ecliptic.error_if]"
_MAX_CHAIN = 4  # how far along `__cause__` to look for a marked message


def mark_message(msg: str) -> str:
    """Wrap `msg` in the markers that `reraise_runtime_error` looks for."""
    return f"{_MARK_START}{msg}{_MARK_END}"


def marked_message(exc: BaseException) -> str | None:
    """The user's message carried by `exc` (or its causes), or `None` if it has none."""
    for _ in range(_MAX_CHAIN):
        if exc is None:
            return None
        try:
            text = str(exc)
        except Exception:  # a broken __str__ is not ours to fix
            return None
        start = text.find(_MARK_START)
        if start >= 0:
            start += len(_MARK_START)
            end = text.find(_MARK_END, start)
            if end >= 0:
                return text[start:end]
        exc = exc.__cause__  # type: ignore[assignment]
    return None


def reraise_runtime_error(exc: BaseException) -> None:
    """Turn a failed runtime check hidden inside `exc` into a clean `EclipticRuntimeError`.

    Meant for the `except` clause around the call of a compiled function:

    ```python
    try:
        out = compiled(*args)
    except Exception as e:
        reraise_runtime_error(e)
        raise
    ```

    **Arguments:**

    - `exc`: the exception that was caught.

    **Returns:** `None` when `exc` does not come from `error_if`/`branched_error_if` (the
    caller then re-raises it). Otherwise it does not return: it raises
    `EclipticRuntimeError(<the user's message>)` with the noisy JAX context suppressed.
    """
    __tracebackhide__ = True  # pytest and IPython hide this frame
    msg = marked_message(exc)
    if msg is not None:
        raise EclipticRuntimeError(msg) from None
