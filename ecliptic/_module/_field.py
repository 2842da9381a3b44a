"""``field``: dataclass fields with ecliptic's two extras, ``static`` and ``converter``."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

STATIC = "static"
CONVERTER = "converter"


def field(
    *,
    converter: Callable[[Any], Any] | None = None,
    static: bool = False,
    **dataclass_kwargs: Any,
) -> Any:
    """Declare a Module field, like `dataclasses.field`, with two extras.

    **Arguments:**

    - `converter`: a function applied to the value when it is assigned in `__init__`
        (e.g. `converter=jnp.asarray`).
    - `static`: if `True`, the value is kept in the pytree structure (the treedef) rather
        than as a leaf: it is never traced, differentiated or batched, and must be
        hashable.
    - `**dataclass_kwargs`: passed on to `dataclasses.field` (`default`,
        `default_factory`, `init`, `repr`, `metadata`, ...).

    **Returns:** a `dataclasses.Field`.

    ```python
    class Scale(ecliptic.Module):
        factor: jax.Array = ecliptic.field(converter=jnp.asarray)
        name: str = ecliptic.field(static=True, default="scale")
    ```
    """
    if converter is not None and not callable(converter):
        raise TypeError(f"field(converter=...) must be callable; got {converter!r}.")
    if not isinstance(static, bool):
        raise TypeError(f"field(static=...) must be a bool; got {static!r}.")
    metadata = dict(dataclass_kwargs.pop("metadata", None) or {})
    if converter is not None:
        metadata[CONVERTER] = converter
    if static:
        metadata[STATIC] = True
    return dataclasses.field(metadata=metadata, **dataclass_kwargs)


def static_field(**kwargs: Any) -> Any:
    """Deprecated alias of `field(static=True, ...)`.

    **Arguments:** as for `field`.

    **Returns:** a `dataclasses.Field`.
    """
    warnings.warn(
        "static_field(...) is deprecated; use field(static=True, ...).",
        DeprecationWarning,
        stacklevel=2,
    )
    return field(static=True, **kwargs)
