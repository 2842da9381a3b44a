"""`Partial`: a `functools.partial` that is a pytree; and `FunctionWrapper`, which binds
its instance through one when used as a method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .._checks import check_callable
from ._copy import new_instance
from ._module import Module

_Return = TypeVar("_Return")


class Partial(Module, Generic[_Return]):
    """A `functools.partial` that is a pytree: the function and the arguments are children.

    Generic in the function's return type, so ``Partial[float]`` works in annotations.

    **Arguments:**

    - `func`: the callable (itself may be a pytree, such as a Module).
    - `*args`, `**kwargs`: arguments bound ahead of the call's own.

    ```python
    add_one = ecliptic.Partial(jnp.add, jnp.array(1.0))
    jax.jit(lambda f, x: f(x))(add_one, 2.0)  # 3.0
    ```
    """

    func: Callable[..., _Return]
    args: tuple[Any, ...]
    keywords: dict[str, Any]

    def __init__(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any):
        check_callable(func, "Partial(func, ...): func")
        self.func = func
        self.args = args
        self.keywords = kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> _Return:
        return self.func(*self.args, *args, **self.keywords, **kwargs)


def bind_partial(func: Callable[..., Any], *args: Any) -> Partial:
    """`Partial(func, *args)` without the checks of `__init__`: for internal hot paths
    such as binding a transformed method to its instance."""
    return new_instance(Partial, func=func, args=args, keywords={})


class FunctionWrapper(Module):
    """Base of the callables the filtered transformations return: a Module whose child
    `fun` is the wrapped function. Used as a class attribute, it binds the instance like
    a method, through a `Partial` (a pytree, so the instance's arrays stay visible to
    other transformations)."""

    __ecliptic_no_method_wrapping__ = True
    fun: Callable[..., Any]

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self.fun

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return bind_partial(self, instance)  # pyright: ignore[reportArgumentType]
