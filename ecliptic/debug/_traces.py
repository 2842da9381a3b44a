"""`assert_max_traces` / `get_num_traces`: catch unintended recompilation."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from .._checks import check_callable, is_int
from .._module import Module, bind_partial, field, module_update_wrapper

_F = TypeVar("_F", bound=Callable[..., Any])


class MaxTracesExceededError(AssertionError, RuntimeError):
    """Raised when a function decorated with `assert_max_traces` is traced too often.

    Both an `AssertionError` (it is an assertion about your program) and a `RuntimeError`
    (what Equinox raises), so either `except` clause catches it.
    """


class _Counter:
    """The mutable trace count of one decorated function. Hashed by identity."""

    __slots__ = ("count", "lock")

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def increment(self) -> int:
        with self.lock:
            self.count += 1
            return self.count


def _fn_name(fn: Any) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{name}" if module else name


class _MaxTraces(Module):
    __ecliptic_no_method_wrapping__ = True
    fn: Callable[..., Any]
    max_traces: int | None = field(static=True)
    counter: _Counter = field(static=True)

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self.fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        count = self.counter.increment()
        if self.max_traces is not None and count > self.max_traces:
            raise MaxTracesExceededError(
                f"`{_fn_name(self.fn)}` can only be traced {self.max_traces} times: it was "
                f"traced {count} times, but assert_max_traces allows at most "
                f"{self.max_traces}. Each trace under jit means a "
                "recompilation: look for arguments whose shape, dtype or static (non-array) "
                "value changes between calls, or for a jitted function re-created on each "
                "call. `jax.config.update('jax_log_compiles', True)` shows why."
            )
        return self.fn(*args, **kwargs)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return bind_partial(self, instance)


@overload
def assert_max_traces(fn: _F, *, max_traces: int | None) -> _F: ...


@overload
def assert_max_traces(fn: None = None, *, max_traces: int | None) -> Callable[[_F], _F]: ...


def assert_max_traces(fn: Any = None, *, max_traces: int | None) -> Any:
    """Fail if `fn` is traced (i.e. called) more than `max_traces` times.

    Put it *inside* `jax.jit`/`filter_jit`: the wrapped function only runs when JAX
    traces it, so the count is the number of compilations. Each decorated function
    object has its own count (decorating the same function twice gives two counters).

    **Arguments:**

    - `fn`: the function to wrap. Omit it to use `assert_max_traces(max_traces=...)` as
        a decorator.
    - `max_traces`: keyword only; the largest allowed number of traces, or `None` to
        only count them.

    **Returns:** the wrapped function. Calling it for the `max_traces + 1`-th time raises
    `MaxTracesExceededError` (an `AssertionError` and a `RuntimeError`).

    ```python
    @jax.jit
    @ecliptic.debug.assert_max_traces(max_traces=1)
    def f(x):
        return x + 1
    f(jnp.ones(3)); f(jnp.zeros(3))  # fine: one compilation
    f(jnp.ones(4))                   # raises: a new shape means a second trace
    ```
    """
    if max_traces is not None and (not is_int(max_traces) or max_traces < 0):
        raise ValueError(
            "assert_max_traces: `max_traces` must be a non-negative int or None; "
            f"got {max_traces!r}."
        )
    if fn is None:
        return functools.partial(assert_max_traces, max_traces=max_traces)
    check_callable(fn, "assert_max_traces: `fn`")
    return module_update_wrapper(_MaxTraces(fn, max_traces, _Counter()), fn)


def _find_counter(fn: Any) -> _Counter | None:
    for _ in range(16):  # follow wrappers: jit, filter_jit, partials, bound methods
        if isinstance(fn, _MaxTraces):
            return fn.counter
        for attr in ("__wrapped__", "func", "__func__"):
            inner = getattr(fn, attr, None)
            if inner is not None and inner is not fn:
                fn = inner
                break
        else:
            return None
    return None


def get_num_traces(fn: Callable[..., Any]) -> int:
    """How many times a function wrapped by `assert_max_traces` has been traced.

    **Arguments:**

    - `fn`: the function returned by `assert_max_traces`, or a wrapper of it (e.g.
        `jax.jit(...)` or `filter_jit(...)` of it).

    **Returns:** the count, an int.

    ```python
    f = jax.jit(ecliptic.debug.assert_max_traces(lambda x: x * 2, max_traces=None))
    f(1.0); f(2.0)
    ecliptic.debug.get_num_traces(f)  # 1
    ```
    """
    counter = _find_counter(fn)
    if counter is None:
        raise ValueError(
            "get_num_traces: `fn` is not (a wrapper of) a function decorated with "
            f"ecliptic.debug.assert_max_traces; got {fn!r}."
        )
    return counter.count
