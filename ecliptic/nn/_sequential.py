"""Composition: `Sequential` chains layers, `Lambda` turns a function into a layer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import jax
from jaxtyping import PRNGKeyArray

from .._module import Module
from ._arg_checks import check_key
from ._scope import named_scope_call
from ._stateful import MISSING_STATE, State, StatefulLayer


def split_key(key: jax.Array | None, n: int) -> Sequence[jax.Array | None]:
    """``n`` independent keys from ``key``, or ``n`` Nones when no key is given (layers
    that need randomness then complain themselves, naming what they need)."""
    if key is None:
        return (None,) * n
    check_key(key, "Sequential")
    return tuple(jax.random.split(key, n))


class Sequential(StatefulLayer):
    """Applies layers one after another, threading a PRNG key (and a `State`) through them.

    **Arguments:**

    - `layers`: a sequence of callables. Modules are called as `layer(x, key=k)`, each
      with its own key split from the one given to the call (or `key=None` if none was
      given). Plain functions (not Modules), such as `jax.nn.relu`, are called as
      `fn(x)`; wrap a function in `Lambda` to make it a layer explicitly. Stateful
      layers (a `StatefulLayer` whose `is_stateful()` is true, such as `BatchNorm`) are
      called as `x, state = layer(x, state, key=k)`: call the `Sequential` as
      `y, state = model(x, state)` then. `is_stateful()` is true iff a layer is.

    **Parameters:** `layers`, a tuple; those of each layer live inside it.

    **Input/output:** whatever the first layer takes and the last layer returns.
    `seq[i]` is the i-th layer, `seq[a:b]` a `Sequential` of a slice; `len` and
    iteration work as on the tuple.

    ```python
    model = ecliptic.nn.Sequential([ecliptic.nn.Linear(2, 3, key=k1), jax.nn.relu])
    y = model(jnp.ones(2))  # shape (3,)
    ```
    """

    layers: tuple[Callable[..., Any], ...]

    def __init__(self, layers: Sequence[Callable[..., Any]]):
        if isinstance(layers, Module) or not isinstance(layers, Sequence):
            raise TypeError(
                f"Sequential(layers) takes a list or tuple of layers; got {type(layers).__name__}."
            )
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(f"Sequential: layers[{i}] is not callable: {layer!r}.")
        self.layers = tuple(layers)

    # One layer application, kept apart from the loop.
    @staticmethod
    def _apply(
        layer: Callable[..., Any], x: Any, state: Any, key: jax.Array | None, i: int
    ) -> tuple[Any, Any]:
        if isinstance(layer, StatefulLayer) and layer.is_stateful():
            if state is MISSING_STATE:
                raise TypeError(
                    f"Sequential: layers[{i}] ({type(layer).__name__}) is stateful, so the "
                    "Sequential needs a state: call it as `y, state = model(x, state)`, "
                    "with the State from `ecliptic.nn.make_with_state`."
                )
            return layer(x, state, key=key)  # pyright: ignore[reportCallIssue]
        if isinstance(layer, Module):
            return layer(x, key=key), state  # pyright: ignore[reportCallIssue]
        return layer(x), state

    @named_scope_call
    def __call__(
        self, x: Any, state: State = MISSING_STATE, *, key: PRNGKeyArray | None = None
    ) -> Any:
        """**Arguments:** `x`, the input of the first layer; `state`, the model's `State`
        (needed when a layer is stateful); `key`, an optional PRNG key split into one
        key per layer. **Returns:** the output of the last layer, or `(output, state)`
        when a state was passed."""
        given = state
        for i, (layer, layer_key) in enumerate(zip(self.layers, split_key(key, len(self.layers)))):
            x, state = self._apply(layer, x, state, layer_key, i)
        return x if given is MISSING_STATE else (x, state)

    def is_stateful(self) -> bool:
        """Whether any layer takes and returns a `State`. **Returns:** a bool."""
        return any(
            isinstance(layer, StatefulLayer) and layer.is_stateful() for layer in self.layers
        )

    @overload
    def __getitem__(self, index: int) -> Callable[..., Any]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequential: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Sequential(self.layers[index])
        if isinstance(index, int):
            if not -len(self.layers) <= index < len(self.layers):
                raise IndexError(
                    f"Sequential index {index} is out of range for its {len(self.layers)} layer(s)."
                )
            return self.layers[index]
        raise TypeError(f"Sequential indices must be ints or slices; got {index!r}.")

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Callable[..., Any]]:
        return iter(self.layers)


class Lambda(Module):
    """Wraps a function as a layer, for use in `Sequential`.

    **Arguments:** `fn`, a callable of one argument. It is a normal (non-static) field,
    so a Module passed as `fn` keeps its parameters visible.

    **Parameters:** none of its own. **Input/output:** those of `fn`; the call's `key`
    is ignored.

    ```python
    layer = ecliptic.nn.Lambda(jax.nn.relu)
    layer(jnp.array([-1.0, 2.0]), key=None)  # [0., 2.]
    ```
    """

    fn: Callable[[Any], Any]

    def __init__(self, fn: Callable[[Any], Any]):
        if not callable(fn):
            raise TypeError(f"Lambda(fn): fn must be callable; got {fn!r}.")
        self.fn = fn

    @named_scope_call
    def __call__(self, x: Any, *, key: PRNGKeyArray | None = None) -> Any:
        """**Arguments:** `x`; `key` is ignored. **Returns:** `fn(x)`."""
        del key
        return self.fn(x)
