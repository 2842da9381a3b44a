"""ecliptic's exception types, and the translation of runtime check failures. They live at
the bottom of the package so that every layer (the transformations that translate runtime
failures, the services that raise them) can import them without cycles.

How a failed `error_if` reaches the user: the check's host callback raises an
`EclipticRuntimeError` whose text is a short header followed by the user's message (see
`mark_message`), so that the message ends the text. Under `jax.jit`, JAX turns any
exception raised in a callback into a `jax.errors.JaxRuntimeError` whose text ends with
the original text. `reraise_runtime_error` finds the header again and raises a clean
`EclipticRuntimeError` that explains how to debug, then gives the user's message;
`filter_jit` calls it on every exception it sees.
"""

from __future__ import annotations

import re
from typing import Any


class EclipticRuntimeError(RuntimeError):
    """Raised at run time by `error_if`/`branched_error_if` when a check fails.

    `str(error)` ends with the check's message; `error.msg` is that message alone.

    **Arguments:** `message`, the full text; `msg`, the check's message alone (defaults
    to `message`).

    ```python
    try:
        ecliptic.filter_jit(lambda x: ecliptic.error_if(x, x < 0, "negative"))(-x)
    except ecliptic.EclipticRuntimeError as e:
        assert e.msg == "negative"
    ```
    """

    msg: str

    def __init__(self, message: Any = "", *args: Any, msg: str | None = None):
        super().__init__(message, *args)
        self.msg = str(message) if msg is None else msg


class EclipticTracetimeError(RuntimeError):
    """Raised while tracing, when a check can already be decided from static information."""


# Equinox's names, so that `except eqx.EquinoxRuntimeError` keeps working after switching.
EquinoxRuntimeError = EclipticRuntimeError
EquinoxTracetimeError = EclipticTracetimeError

# The header is plain ASCII and reads naturally in JAX's error text, e.g.
# "EclipticRuntimeError: [ecliptic.error_if failed; its message (22 characters) follows]
# x must be non-negative". The length makes the message recoverable whatever follows it.
_HEADER = "[ecliptic.error_if failed; its message ({} characters) follows]\n"
_HEADER_RE = re.compile(
    re.escape(_HEADER.split("{}")[0]) + r"(\d+)" + re.escape(_HEADER.split("{}")[1])
)
_MAX_CHAIN = 4  # how far along `__cause__` to look for a marked message

# What a failure inside compiled code says before the user's message. It keeps Equinox's
# wording (its first sentence and environment variable) inside ecliptic's own.
_COMPILED_HELP = (
    "Above is the stack outside of JIT: the check failed inside compiled code, whose "
    "Python frames cannot be shown.\n"
    "To debug it, set the environment variable ECLIPTIC_ON_ERROR=breakpoint (Equinox's "
    "EQX_ON_ERROR=breakpoint works too) to open a debugger where the check failed, or "
    "JAX_DISABLE_JIT=1 to run the program as plain Python.\n"
    "The failed check (ecliptic.error_if) says:\n"
)


def mark_message(msg: str) -> str:
    """`msg` behind the header that `reraise_runtime_error` looks for (`msg` stays last)."""
    return _HEADER.format(len(msg)) + msg


def marked_message(exc: BaseException) -> str | None:
    """The user's message carried by `exc` (or its causes), or `None` if it has none."""
    for _ in range(_MAX_CHAIN):
        if exc is None:
            return None
        try:
            text = str(exc)
        except Exception:  # a broken __str__ is not ours to fix
            return None
        found = _HEADER_RE.search(text)
        if found is not None:
            start = found.end()
            return text[start : start + int(found.group(1))]
        exc = exc.__cause__  # type: ignore[assignment]
    return None


def reraise_runtime_error(exc: BaseException, *, compiled: bool = True) -> None:
    """Turn a failed runtime check hidden inside `exc` into a clean `EclipticRuntimeError`.

    Meant for the `except` clause around the call of a compiled function:

    ```python
    try:
        out = compiled(*args)
    except Exception as e:
        reraise_runtime_error(e)
        raise
    ```

    Returns `None` when `exc` does not come from `error_if`/`branched_error_if` (the caller
    then re-raises it). Otherwise it raises an `EclipticRuntimeError` whose text ends with
    the user's message (`.msg` holds the message alone), with the noisy JAX context
    suppressed; with `compiled=True` the text starts with how to debug compiled code."""
    __tracebackhide__ = True  # pytest and IPython hide this frame
    msg = marked_message(exc)
    if msg is not None:
        text = _COMPILED_HELP + msg if compiled else msg
        raise EclipticRuntimeError(text, msg=msg) from None
