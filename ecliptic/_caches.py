"""``clear_caches``: drop every compilation and tracing cache, ours and JAX's."""

from __future__ import annotations

import jax

from ._filters import _array_type_cache
from ._pmap import clear_pmap_caches
from ._split import clear_plan_caches


def clear_caches() -> None:
    """Clear all compilation and tracing caches (ecliptic's and JAX's).

    Useful to free memory held by compiled executables, or in tests that count traces.

    **Returns:** `None`.
    """
    _array_type_cache.clear()
    clear_plan_caches()
    clear_pmap_caches()
    jax.clear_caches()
