"""`named_scope_call`: every layer's `__call__` runs in a `jax.named_scope` named after
the layer's class, so layer names show up in profiles, jaxprs and HLO metadata."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax
from jax.extend.core import get_opaque_trace_state

_F = TypeVar("_F", bound=Callable[..., Any])

_EAGER = get_opaque_trace_state(convention="flax")  # outside any transformation


def named_scope_call(call: _F) -> _F:
    """Decorate a layer's `__call__` to run under `jax.named_scope(type(self).__name__)`
    while it is traced (by `jit`, `grad`, `vmap`, ...). Eager calls, where a scope
    names nothing, skip it to stay as fast as before."""

    @functools.wraps(call)
    def scoped_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if get_opaque_trace_state(convention="flax") == _EAGER:
            return call(self, *args, **kwargs)
        with jax.named_scope(type(self).__name__):
            return call(self, *args, **kwargs)

    return scoped_call  # pyright: ignore[reportReturnType]
