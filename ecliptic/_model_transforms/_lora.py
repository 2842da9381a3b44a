"""Low-rank adapters (LoRA, Hu et al. 2021) on the Linear layers of any model.

`lora(model, rank)` returns a copy of the model in which the chosen `Linear` layers are
`LoRALinear`s: the frozen base layer plus two small matrices, ``y = base(x) + (alpha /
rank) * lora_B @ (lora_A @ x)``. `lora_B` starts at zero, so the new model computes
exactly what the old one did. `lora_filter` marks the adapters (train only them with
`partition`/`filter_grad`), `merge_lora` folds them back into plain `Linear`s.

PyTorch interop follows PEFT's naming: in `state_dict(format="torch")` a LoRALinear at
``x`` has ``x.base_layer.weight``/``x.base_layer.bias``, ``x.lora_A.weight`` (rank, in)
and ``x.lora_B.weight`` (out, rank); `lora_state_dict`/`load_lora_state_dict` read and
write PEFT's adapter files (adapters only, keys prefixed with ``base_model.model.``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._checks import is_int, is_real
from .._io._errors import StateDictError
from .._io._state_dict import StateDictReport, check_state_dict, load_state_dict
from .._io._state_dict import state_dict as _full_state_dict
from .._io._torch_registry import register_torch_layout
from .._messages import short_repr
from .._module import Module, field
from .._tree import tree_at
from .._vmap import filter_vmap
from ..nn import Linear, Stacked

__all__ = [
    "PEFT_PREFIX",
    "LoRALinear",
    "load_lora_state_dict",
    "lora",
    "lora_filter",
    "lora_state_dict",
    "merge_lora",
]

#: The prefix PEFT puts before every key of an adapter file.
PEFT_PREFIX = "base_model.model."


def _features(size: Any) -> int:
    return 1 if size == "scalar" else int(size)


class LoRALinear(Module):
    """A `Linear` with a low-rank update: ``base(x) + scaling * lora_B @ (lora_A @ x)``.

    **Arguments:**

    - `base`: the `Linear` to adapt (kept as it is; freeze it with `lora_filter`).
    - `rank`: the rank `r` of the update, an int >= 1.
    - `alpha`: the scaling numerator: `scaling = alpha / rank` (PEFT's `lora_alpha`);
      default `rank` (scaling 1).
    - `key`: PRNG key for `lora_A` (keyword only).

    **Parameters:** `lora_A` `(rank, in_features)`, initialised as PyTorch's
    Kaiming-uniform default for a Linear (U(+-1/sqrt(in_features))), as PEFT does;
    `lora_B` `(out_features, rank)`, zeros, so the layer starts equal to `base`. Both in
    the base weight's dtype.

    **Input/output:** as `base`.

    ```python
    layer = ecliptic.LoRALinear(ecliptic.nn.Linear(16, 8, key=k1), rank=4, key=k2)
    layer(jnp.ones(16))  # == layer.base(jnp.ones(16)) until lora_B is trained
    ```
    """

    base: Linear
    lora_A: Array
    lora_B: Array
    rank: int = field(static=True)
    alpha: float = field(static=True)

    def __init__(self, base: Linear, rank: int, alpha: float | None = None, *, key: PRNGKeyArray):
        if not isinstance(base, Linear):
            raise TypeError(
                f"LoRALinear: base must be an ecliptic.nn.Linear; got {short_repr(base)}."
            )
        rank = _check_rank(rank)
        alpha = float(rank) if alpha is None else _check_alpha(alpha)
        n_in, n_out = _features(base.in_features), _features(base.out_features)
        dtype = base.weight.dtype
        bound = 1.0 / np.sqrt(n_in)
        self.base = base
        self.lora_A = jax.random.uniform(key, (rank, n_in), dtype, -bound, bound)
        self.lora_B = jnp.zeros((n_out, rank), dtype)
        self.rank = rank
        self.alpha = alpha

    def __getattr__(self, name: str) -> Any:
        # Reached only for missing attributes: code written for a Linear (e.g. PyTorch's
        # packed attention layout) asking for `weight`/`bias` gets a pointed message.
        if name in ("weight", "bias"):
            raise AttributeError(
                f"LoRALinear has no {name!r} of its own: the frozen layer's is "
                f"`.base.{name}` and the adapters are `lora_A`/`lora_B`. Code that needs "
                "plain Linears (e.g. MultiheadAttention's PyTorch layout) works on "
                "ecliptic.merge_lora(model)."
            )
        raise AttributeError(f"'LoRALinear' object has no attribute {name!r}")

    @property
    def scaling(self) -> float:
        """`alpha / rank`, the factor on the low-rank update."""
        return self.alpha / self.rank

    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """**Arguments:** `x` as for `base`; `key` is ignored. **Returns:** as `base`."""
        y = self.base(x)
        x = jnp.asarray(x).reshape(-1)  # "scalar" inputs are one feature
        update = self.lora_B @ (self.lora_A @ x.astype(self.lora_A.dtype))
        update = update * jnp.asarray(self.scaling, update.dtype)
        return y + update.reshape(y.shape).astype(y.dtype)


def _check_rank(rank: Any) -> int:
    if not is_int(rank) or rank < 1:
        raise ValueError(f"lora: rank must be an int >= 1; got {short_repr(rank)}.")
    return int(rank)


def _check_alpha(alpha: Any) -> float:
    if not is_real(alpha) or alpha <= 0:
        raise ValueError(f"lora: alpha must be a positive number; got {short_repr(alpha)}.")
    return float(alpha)


def _is_target(node: Any) -> bool:
    return isinstance(node, (LoRALinear, Linear, Stacked))


def _adapt_all(model: Any, rank: int, alpha: float | None, key: Any) -> Any:
    """Every Linear in `model` (not yet adapted) wrapped; inside a `Stacked`, the
    adapters are built per layer under vmap, so they are stacked like the layers."""
    nodes, treedef = jtu.tree_flatten(model, is_leaf=_is_target)
    keys = iter(jax.random.split(key, max(len(nodes), 1)))
    new = []
    for node in nodes:
        k = next(keys)
        if isinstance(node, LoRALinear):
            new.append(node)
        elif isinstance(node, Linear):
            new.append(LoRALinear(node, rank, alpha, key=k))
        elif isinstance(node, Stacked):
            layer_keys = jax.random.split(k, node.n)
            layers = filter_vmap(lambda layer, lk: _adapt_all(layer, rank, alpha, lk))(
                node.layers, layer_keys
            )
            new.append(tree_at(lambda s: s.layers, node, layers))
        else:
            new.append(node)
    return treedef.unflatten(new)


def lora(
    model: PyTree,
    rank: int,
    *,
    where: Any = None,
    alpha: float | None = None,
    key: PRNGKeyArray,
) -> PyTree:
    """Add low-rank adapters to a model's Linear layers.

    **Arguments:**

    - `model`: any pytree model.
    - `rank`: the adapters' rank `r`.
    - `where`: which layers: `None` (default) for every `nn.Linear` in the model,
      including `MultiheadAttention`'s projections and the layers of an `nn.Stacked`
      (whose adapters are stacked too); or a function `model -> Linear or tuple of
      Linears`, as for `tree_at` (e.g. `lambda m: (m.attn.query_proj, m.attn.value_proj)`).
    - `alpha`: PEFT's `lora_alpha`; the update is scaled by `alpha / rank` (default:
      `alpha = rank`, a scaling of 1).
    - `key`: PRNG key for the `lora_A` initialisations (keyword only).

    **Returns:** a copy of `model` with the chosen `Linear`s replaced by `LoRALinear`s;
    it computes the same outputs as `model` until the adapters are trained.

    ```python
    model = ecliptic.lora(model, rank=4, key=jax.random.key(0))
    trainable, frozen = ecliptic.partition(model, ecliptic.lora_filter(model))
    ```
    """
    rank = _check_rank(rank)
    alpha = None if alpha is None else _check_alpha(alpha)
    if where is None:
        return _adapt_all(model, rank, alpha, key)
    if not callable(where):
        raise TypeError(
            f"lora: where must be None or a function model -> Linear(s); got {short_repr(where)}."
        )

    def wrap(node: Any) -> Any:
        if not isinstance(node, Linear):
            raise TypeError(
                "lora: where must select ecliptic.nn.Linear layers; it selected a "
                f"{type(node).__name__}."
            )
        return node

    selected = where(model)
    single = not isinstance(selected, (tuple, list))
    nodes = [selected] if single else list(selected)
    keys = jax.random.split(key, max(len(nodes), 1))
    replacements = [LoRALinear(wrap(n), rank, alpha, key=k) for n, k in zip(nodes, keys)]
    return tree_at(where, model, replacements[0] if single else type(selected)(replacements))


def lora_filter(model: PyTree) -> PyTree:
    """A filter spec selecting only the adapters (`lora_A`, `lora_B`) of a model.

    **Arguments:** `model`, a model with `LoRALinear` layers (from `lora`).

    **Returns:** a pytree of bools with `model`'s structure: `True` at every adapter
    array, `False` everywhere else. Pass it to `partition`, `filter` or as
    `filter_grad`'s differentiated part.

    ```python
    adapters, frozen = ecliptic.partition(model, ecliptic.lora_filter(model))
    ```
    """

    def mark(node: Any) -> Any:
        if isinstance(node, LoRALinear):
            falses = jtu.tree_map(lambda _: False, node)
            return tree_at(lambda m: (m.lora_A, m.lora_B), falses, (True, True))
        return False

    return jtu.tree_map(mark, model, is_leaf=lambda n: isinstance(n, LoRALinear))


def _merged(layer: LoRALinear) -> Linear:
    base = layer.base
    delta = jnp.matmul(layer.lora_B, layer.lora_A) * jnp.asarray(layer.scaling, layer.lora_A.dtype)
    weight = base.weight + delta.reshape(base.weight.shape).astype(base.weight.dtype)
    return tree_at(lambda m: m.weight, base, weight)


def merge_lora(model: PyTree) -> PyTree:
    """Fold every adapter into its base layer: each `LoRALinear` becomes a plain `Linear`
    with weight `W + (alpha / rank) * lora_B @ lora_A` (also for stacked layers).

    **Arguments:** `model`, a model with `LoRALinear` layers.

    **Returns:** the model without adapters, computing the same outputs (up to float
    rounding), ready to save or export as an ordinary model.

    ```python
    plain = ecliptic.merge_lora(finetuned)
    ```
    """
    return jtu.tree_map(
        lambda n: _merged(n) if isinstance(n, LoRALinear) else n,
        model,
        is_leaf=lambda n: isinstance(n, LoRALinear),
    )


# ------------------------------------------------------------------ PyTorch (PEFT) layout


def _lora_export(layer: LoRALinear, state: Any) -> dict[str, Any]:
    out = {"base_layer.weight": np.asarray(layer.base.weight)}
    if layer.base.bias is not None:
        out["base_layer.bias"] = np.asarray(layer.base.bias)
    out["lora_A.weight"] = np.asarray(layer.lora_A)
    out["lora_B.weight"] = np.asarray(layer.lora_B)
    return out


def _lora_import(layer: LoRALinear, io: Any, state: Any) -> tuple[Any, Any]:
    base = layer.base
    fields: dict[str, Any] = {}
    w = io.get("base_layer.weight", tuple(base.weight.shape), base.weight.dtype)
    if w is not None:
        fields["weight"] = w
    if base.bias is not None:
        b = io.get("base_layer.bias", tuple(base.bias.shape), base.bias.dtype)
        if b is not None:
            fields["bias"] = b
    adapters: dict[str, Any] = {"base": io.replace(base, **fields)}
    for name in ("lora_A", "lora_B"):
        old = getattr(layer, name)
        value = io.get(f"{name}.weight", tuple(old.shape), old.dtype)
        if value is not None:
            adapters[name] = value
    return io.replace(layer, **adapters), state


# PyTorch's layout registry: state_dict/load_state_dict(format="torch") find it there.
register_torch_layout(LoRALinear, export=_lora_export, load=_lora_import)


def _is_adapter_key(name: str) -> bool:
    return ".lora_A." in f".{name}" or ".lora_B." in f".{name}"


def lora_state_dict(model: PyTree, *, prefix: str = PEFT_PREFIX) -> dict[str, np.ndarray]:
    """The adapters of a model as a PEFT adapter state dict.

    **Arguments:**

    - `model`: a model with `LoRALinear` layers.
    - `prefix`: put before every key; PEFT's is `"base_model.model."` (default).

    **Returns:** `{f"{prefix}{path}.lora_A.weight": (rank, in), ...lora_B.weight: (out,
    rank)}` as NumPy arrays, `path` being PyTorch's name of the adapted Linear: what
    `peft.get_peft_model_state_dict` returns and `set_peft_model_state_dict` loads.

    ```python
    safetensors.numpy.save_file(ecliptic.lora_state_dict(model), "adapter_model.safetensors")
    ```
    """
    entries = _full_state_dict(model, format="torch")
    return {prefix + k: v for k, v in entries.items() if _is_adapter_key(k)}


def load_lora_state_dict(model: PyTree, adapters: Any, *, prefix: str = PEFT_PREFIX) -> PyTree:
    """Load a PEFT adapter state dict into a model's `LoRALinear` layers, out of place.

    **Arguments:**

    - `model`: a model with `LoRALinear` layers of the matching ranks (build it with
      `lora(model, rank=...)`).
    - `adapters`: a mapping name -> array in PEFT's layout (NumPy, JAX or torch tensors).
    - `prefix`: stripped from every key (default PEFT's `"base_model.model."`).

    **Returns:** the model with the adapters replaced; the base weights are untouched.

    **Raises:** `StateDictError` listing missing adapter keys, keys that are not adapters
    of this model, and wrong shapes.

    ```python
    model = ecliptic.load_lora_state_dict(ecliptic.lora(base, rank=8, key=k), peft_sd)
    ```
    """
    if not hasattr(adapters, "keys"):
        raise TypeError(f"adapters must be a mapping name -> array; got {short_repr(adapters)}.")
    stripped = {}
    for k in adapters:
        if not isinstance(k, str) or not k.startswith(prefix):
            raise StateDictError(StateDictReport((), (repr(k),), ()))
        stripped[k[len(prefix) :]] = adapters[k]
    report = check_state_dict(model, stripped, format="torch")
    fits = StateDictReport(
        tuple(prefix + k for k in report.missing if _is_adapter_key(k)),
        tuple(prefix + k for k in report.unexpected),
        tuple(prefix + k for k in report.mismatched),
    )
    if not fits.ok:
        raise StateDictError(fits)
    return load_state_dict(model, stripped, strict=False, format="torch")
