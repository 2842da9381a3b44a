"""Shared helpers for the tests of Linear, Sequential, convolutions and pooling: PyTorch
goldens and parameter injection.

The goldens come from tests/torch_goldens/gen_linear_conv_pool.py (run with the torch virtualenv);
this module only reads the saved .npz, so the test suite never imports torch.
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

import ecliptic

PATH = pathlib.Path(__file__).parent / "torch_goldens" / "linear_conv_pool.npz"
RTOL = 1e-5
ATOL = 1e-5


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, np.ndarray]:
    with np.load(PATH) as data:
        return {k: data[k] for k in data.files}


def case_names(prefix: str) -> list[str]:
    return sorted({k.split(".")[0] for k in _load() if k.split(".")[0].startswith(prefix)})


def case(name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The case's configuration and its arrays (x, weight, bias, out, ct, grad.*)."""
    data = _load()
    cfg = json.loads(str(data[f"{name}.cfg"]))
    arrays = {
        k[len(name) + 1 :]: v
        for k, v in data.items()
        if k.startswith(name + ".") and not k.endswith(".cfg")
    }
    return cfg, arrays


def abstract(make: Callable[[], Any]) -> Any:
    """The layer ``make()`` builds, with shape-only leaves: no initialisation is run or
    compiled (use `set_params` to fill in the parameters)."""
    return ecliptic.filter_eval_shape(make)  # non-array leaves (functions) pass through


def materialise(make: Callable[[], Any], seed: int = 0, scale: float = 0.3) -> Any:
    """The layer ``make()`` builds, with its array leaves drawn from a NumPy normal
    distribution instead of running (and compiling) the layer's own initialisation."""
    rng = np.random.default_rng(seed)

    def fill(leaf: Any) -> Any:
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return jnp.asarray((scale * rng.standard_normal(leaf.shape)).astype(leaf.dtype))
        return leaf

    return jtu.tree_map(fill, abstract(make))


def set_params(module: Any, **values: Any) -> Any:
    """A copy of ``module`` with its top-level array fields replaced (by name)."""
    leaves, treedef = jtu.tree_flatten_with_path(module)
    new = []
    for path, leaf in leaves:
        name = path[0].name if len(path) == 1 and isinstance(path[0], jtu.GetAttrKey) else None
        if name in values:
            value = jnp.asarray(values[name])
            assert value.shape == leaf.shape, (name, value.shape, leaf.shape)
            new.append(value)
        else:
            new.append(leaf)
    return jtu.tree_unflatten(treedef, new)


def check_against_golden(
    fn: Callable[..., jax.Array], arrays: dict[str, np.ndarray], wrt: tuple[str, ...]
) -> None:
    """``fn(*[arrays[k] for k in wrt])`` must give the golden output, and its VJP with
    the golden cotangent the golden gradients."""
    args = [jnp.asarray(arrays[k]) for k in wrt]

    # One compiled program per case: much cheaper than compiling every op eagerly.
    @jax.jit
    def value_and_vjp(args, ct):
        out, vjp = jax.vjp(fn, *args)
        return out, vjp(ct)

    out, grads = value_and_vjp(args, jnp.asarray(arrays["ct"]))
    np.testing.assert_allclose(out, arrays["out"], rtol=RTOL, atol=ATOL)
    for k, g in zip(wrt, grads):
        np.testing.assert_allclose(
            g, arrays[f"grad.{k}"], rtol=RTOL, atol=ATOL, err_msg=f"gradient w.r.t. {k}"
        )


def check_init_uniform(samples: np.ndarray, bound: float) -> None:
    """Samples look like U(-bound, bound): within bounds, mean ~ 0, std ~ bound/sqrt(3)."""
    samples = np.asarray(samples, np.float64).ravel()
    n = samples.size
    assert np.all(np.abs(samples) <= bound)
    std = bound / np.sqrt(3)
    assert abs(samples.mean()) < 5 * std / np.sqrt(n)
    assert abs(samples.std() - std) < 0.05 * std
    # Both ends of the interval are reached, not a narrower distribution.
    assert samples.max() > 0.95 * bound and samples.min() < -0.95 * bound
