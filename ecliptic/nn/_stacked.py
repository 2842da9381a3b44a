"""`Stacked`: N layers of one structure stored as one layer with stacked arrays, run with
`jax.lax.scan`, so that deep models compile once per layer instead of once per depth.

Layout: `stacked.layers` is a single Module of the layers' type in which every array
leaf has a leading axis of size `n`; non-array leaves and static fields are shared by all
layers. Calling scans over that axis (`_stacked_scan`), slicing one layer's arrays per
step (and one layer's key and state when given); `_stacked_build` stacks separate layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.tree_util as jtu

from .._checks import is_int
from .._filters import is_array
from .._messages import short_repr, type_name
from .._module import Module, field, new_instance
from .._vmap_pmap import filter_vmap
from ._arg_checks import check_key
from ._scope import named_scope_call
from ._stacked_build import TRACER_ERRORS, check_layer, check_n, check_takes_one_key, stack_trees
from ._stacked_scan import check_scan_options, run_stacked
from ._stateful import MISSING_STATE, State, StatefulLayer


class Stacked(StatefulLayer):
    """`n` layers of identical structure applied one after another, run with `lax.scan`.

    The layers are stored as ONE layer whose array leaves carry a leading axis of size
    `n` (static fields and non-array leaves are shared), so a deep stack traces and
    compiles a single layer: compile time stays flat in `n`, where a Python loop over
    `n` separate layers grows linearly.

    **Arguments:**

    - `make_layer`: `key -> layer`, building one layer (any callable pytree, usually a
        Module). It is run once under `jax.vmap` over `n` keys; if it needs concrete
        values (Python control flow on arrays), the layers are built one by one instead,
        with the same result.
    - `n`: the number of layers, an int >= 1.
    - `key`: a PRNG key (keyword only), split into one key per layer.
    - `apply`: optional `(layer, x, ...) -> x` run in place of `layer(x, ...)` at each
        step, e.g. a residual connection `lambda layer, x: x + layer(x)`. It receives
        what the layer would: the layer's state (positionally, after `x`) when the
        layers are stateful (then it returns `(x, state)`), any extra keyword arguments
        of the call, and `key=` (the layer's key) when the call was given a key and
        `apply` has a `key` parameter (an `apply` without one is called without it).
    - `checkpoint`: what each layer keeps for the backward pass. `"auto"` (default):
        the outputs of matrix products and convolutions, recomputing the element-wise
        work between them (cheap, and it spares the scan from stacking every
        intermediate: in `benchmarks/compile_stacked.py` this made stacked training
        steps 1.4-1.7x faster than saving everything); `False`: every intermediate, as a
        plain `lax.scan`; `True`: nothing (the whole layer is recomputed, least memory);
        or any `jax.checkpoint` policy, e.g. `jax.checkpoint_policies.dots_saveable`.
    - `unroll`: how many layers each scan iteration runs (`lax.scan(unroll=...)`).

    **Parameters:** `layers`, a Module of the layers' type whose every array has shape
    `(n, *shape_in_one_layer)`. `stacked[i]` is layer `i` (a normal layer), `stacked[a:b]`
    a `Stacked` of a slice, `len(stacked) == n`, `stacked.unstack()` the list of layers;
    `stack_layers(list)` builds a `Stacked` from separate layers (e.g. loaded weights).

    **Input/output:** the first layer's input; each layer's output is the next layer's
    input, so it must keep the input's shape, dtype and pytree structure.

    **Randomness:** `stacked(x, key=k)` splits `k` into one key per layer and passes
    `key=` to each; without a key no random operation is added and layers are called
    as `layer(x)`.

    **State:** if the layers are stateful (`StatefulLayer`, e.g. containing
    `BatchNorm`), call `y, state = stacked(x, state)`: each layer's entries in the state
    have a leading axis `n` and are threaded through the scan. Build the model with
    `make_with_state(Stacked)(...)` or `State(stacked)`.

    ```python
    block = lambda k: ecliptic.nn.MLP(64, 64, 128, 1, key=k)
    stack = ecliptic.nn.Stacked(block, 32, key=jax.random.key(0),
                                apply=lambda layer, x: x + layer(x))
    y = stack(jnp.ones(64))      # shape (64,)
    stack.layers.layers[0].weight.shape  # (32, 128, 64)
    ```
    """

    layers: Any
    apply: Callable[..., Any] | None
    n: int = field(static=True)
    checkpoint: Any = field(static=True)
    unroll: int = field(static=True)

    def __init__(
        self,
        make_layer: Callable[[jax.Array], Any],
        n: int,
        *,
        key: jax.Array,
        apply: Callable[..., Any] | None = None,
        checkpoint: bool | str | Callable[..., Any] = "auto",
        unroll: int = 1,
    ):
        if not callable(make_layer):
            raise TypeError(
                f"Stacked(make_layer, n): make_layer must be a callable key -> layer; got "
                f"{short_repr(make_layer)}."
            )
        check_takes_one_key(make_layer, "Stacked")
        n = check_n(n, "Stacked")
        check_key(key, "Stacked")
        check_scan_options(apply, checkpoint, unroll, "Stacked")
        keys = jax.random.split(key, n)
        try:
            layers = filter_vmap(make_layer)(keys)
        except TRACER_ERRORS:
            # The constructor needs concrete values: build the layers one by one.
            layers = stack_trees([make_layer(k) for k in keys], "Stacked")
        check_layer(layers, "Stacked: make_layer(key)")
        self.layers = layers
        self.apply = apply
        self.n = n
        self.checkpoint = checkpoint
        self.unroll = unroll

    def is_stateful(self) -> bool:
        """Whether the stacked layers take and return a `State`. **Returns:** a bool."""
        layer = self.layers
        return isinstance(layer, StatefulLayer) and bool(layer.is_stateful())

    @named_scope_call
    def __call__(
        self,
        x: Any,
        state: State = MISSING_STATE,
        *,
        key: jax.Array | None = None,
        **kwargs: Any,
    ) -> Any:
        """**Arguments:**

        - `x`: the input of the first layer (any pytree of arrays).
        - `state`: the model's `State`, only when the layers are stateful.
        - `key`: optional PRNG key, split into one key per layer.
        - `**kwargs`: passed unchanged to every layer (e.g. `mask=...`,
            `inference=True`).

        **Returns:** the last layer's output; `(output, state)` when stateful.
        """
        return run_stacked(self, x, state, key, kwargs)[0]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int | slice) -> Any:
        """`stacked[i]`: layer `i` (negative indices count from the end);
        `stacked[a:b:c]`: a `Stacked` of those layers."""
        if isinstance(index, slice):
            chosen = range(self.n)[index]
            if len(chosen) == 0:
                raise IndexError(f"Stacked[{index}]: the slice selects no layers (n={self.n}).")
            layers = _map_arrays(lambda a: a[index], self.layers)
            return _make(layers, len(chosen), self.apply, self.checkpoint, self.unroll)
        if is_int(index):
            if not -self.n <= index < self.n:
                raise IndexError(f"Stacked index {index} is out of range for n={self.n} layers.")
            i = int(index) % self.n
            return _map_arrays(lambda a: a[i], self.layers)
        raise TypeError(f"Stacked indices must be ints or slices; got {short_repr(index)}.")

    def __iter__(self) -> Iterator[Any]:
        return iter(self.unstack())

    def unstack(self) -> list[Any]:
        """The `n` layers as separate Modules (layer `i`'s arrays are `layers[i]`).

        **Returns:** a list of `n` layers; `stack_layers` turns it back into a `Stacked`.
        Stateful layers keep the stacked model's `StateIndex`es, so they share state
        keys: layer `i`'s state is `jax.tree.map(lambda v: v[i],
        state.substate(stacked))`.

        ```python
        blocks = stacked.unstack()
        same = ecliptic.nn.stack_layers(blocks)
        ```
        """
        leaves, treedef = jtu.tree_flatten(self.layers)
        split = [list(leaf) if is_array(leaf) else None for leaf in leaves]
        return [
            treedef.unflatten([s[i] if s is not None else leaf for s, leaf in zip(split, leaves)])
            for i in range(self.n)
        ]


def _map_arrays(fn: Callable[[Any], Any], tree: Any) -> Any:
    return jtu.tree_map(lambda leaf: fn(leaf) if is_array(leaf) else leaf, tree)


def _make(layers: Any, n: int, apply: Any, checkpoint: Any, unroll: int) -> Stacked:
    """A `Stacked` around already stacked layers (no building, no vmap)."""
    return new_instance(
        Stacked, layers=layers, apply=apply, n=n, checkpoint=checkpoint, unroll=unroll
    )


def stack_layers(
    layers: Sequence[Any],
    *,
    apply: Callable[..., Any] | None = None,
    checkpoint: bool | str | Callable[..., Any] = "auto",
    unroll: int = 1,
) -> Stacked:
    """Stack separate layers of identical structure into one `Stacked`.

    The inverse of `Stacked.unstack`, e.g. to load per-layer weights into a scanned model.

    **Arguments:**

    - `layers`: a non-empty list/tuple of layers with the same type, tree structure,
        static fields, non-array values, and array shapes and dtypes.
    - `apply`, `checkpoint`, `unroll`: as for `Stacked`.

    **Returns:** a `Stacked` whose `layers` holds each array of the layers stacked along a
    new leading axis (layer `i` at index `i`). `StateIndex`es of stateful layers are
    unified to the first layer's; build the state from the result (`State(stacked)`).

    **Raises:** `ValueError` naming the first field that differs between two layers.

    ```python
    blocks = [ecliptic.nn.Linear(8, 8, key=k) for k in jax.random.split(key, 4)]
    stack = ecliptic.nn.stack_layers(blocks)   # stack.layers.weight.shape == (4, 8, 8)
    ```
    """
    if isinstance(layers, Module) or not isinstance(layers, Sequence):
        raise TypeError(
            f"stack_layers(layers): layers must be a list or tuple of layers; got "
            f"{type_name(layers)}."
        )
    check_n(len(layers), "stack_layers")
    check_scan_options(apply, checkpoint, unroll, "stack_layers")
    for i, layer in enumerate(layers):
        check_layer(layer, f"stack_layers: layers[{i}]")
    return _make(stack_trees(layers, "stack_layers"), len(layers), apply, checkpoint, unroll)
