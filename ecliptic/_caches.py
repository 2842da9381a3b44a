"""The one registry of ecliptic's caches, and ``clear_caches``, which empties them all.

Every module-level cache registers the function that empties it (`register_cache`), so
that `clear_caches` needs to know none of them: it calls every registered function, then
clears JAX's own caches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax

_Clear = TypeVar("_Clear", bound=Callable[[], object])
_clear_functions: list[Callable[[], object]] = []


def register_cache(clear: _Clear) -> _Clear:
    """Register a function of no arguments that empties a cache, for `clear_caches` to call;
    returns it, so that this also works as a decorator."""
    if not callable(clear):
        raise TypeError(f"register_cache(clear): clear must be callable; got {clear!r}.")
    _clear_functions.append(clear)
    return clear


def clear_caches() -> None:
    """Clear all compilation and tracing caches (ecliptic's and JAX's).

    Useful to free memory held by compiled executables, or in tests that count traces.

    **Returns:** `None`.

    ```python
    ecliptic.clear_caches()
    ```
    """
    for clear in _clear_functions:
        clear()
    jax.clear_caches()
