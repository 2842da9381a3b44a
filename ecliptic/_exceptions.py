"""ecliptic's exception types.

They live at the bottom of the package so that every layer (the transformations that
translate runtime failures, the services that raise them) can import them without cycles.
"""

from __future__ import annotations


class EclipticRuntimeError(RuntimeError):
    """Raised at run time by `error_if`/`branched_error_if` when a check fails."""


class EclipticTracetimeError(RuntimeError):
    """Raised while tracing, when a check can already be decided from static information."""


# Equinox's names, so that `except eqx.EquinoxRuntimeError` keeps working after switching.
EquinoxRuntimeError = EclipticRuntimeError
EquinoxTracetimeError = EclipticTracetimeError
