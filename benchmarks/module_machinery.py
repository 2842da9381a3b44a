"""Module machinery: flatten + unflatten of the MLP, and building `nn.MLP(32, 32, 64, 3)`,
against Equinox (the baseline here; goals: ecliptic <= 1.0x Equinox) and Flax NNX
(`nnx.split` + `nnx.merge`; building an equivalent NNX MLP). Also: validation in
`__check_init__` costs nothing after construction -- the filter_jit call of a 20-block
model whose blocks validate themselves in `__check_init__` against the same model
without (goal: <= 1.1x, i.e. equal within noise).

Run: python benchmarks/module_machinery.py [--smoke]
"""

from __future__ import annotations

from typing import Any

import _models as models
import jax
import jax.tree_util as jtu
from _timing import Row, interleaved, machine, print_rows, rows_from_stats, smoke_flag

import ecliptic as ec


class _Block(ec.Module):
    weight: jax.Array
    bias: jax.Array
    name: str = ec.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.numpy.tanh(self.weight @ x + self.bias)


class _CheckedBlock(_Block):
    def __check_init__(self) -> None:
        if self.weight.ndim != 2 or self.bias.shape != self.weight.shape[:1]:
            raise ValueError(f"{self.name}: weight/bias shapes do not match")
        if not str(self.name).startswith("block"):
            raise ValueError("bad name")


class _Chain(ec.Module):
    blocks: tuple[Any, ...]

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x


def _check_init_contenders() -> dict[str, Any]:
    w, b = jax.numpy.eye(4), jax.numpy.zeros(4)
    x = jax.numpy.ones(4)
    call = ec.filter_jit(lambda model, x: model(x))
    plain = _Chain(tuple(_Block(w, b, f"block{i}") for i in range(20)))
    checked = _Chain(tuple(_CheckedBlock(w, b, f"block{i}") for i in range(20)))
    return {
        "no __check_init__": lambda: call(plain, x),
        "with __check_init__": lambda: call(checked, x),
    }


def _round_trip(model: Any) -> Any:
    leaves, treedef = jtu.tree_flatten(model)
    return jtu.tree_unflatten(treedef, leaves)


def main(smoke: bool = False) -> list[Row]:
    """Time every contender; return the table rows (`smoke`: a few calls only)."""
    key = jax.random.key(0)
    eqx, nnx = models.eqx, models.nnx
    model = models.ecliptic_mlp(key)
    flatten = {"ecliptic": lambda: _round_trip(model)}
    build = {"ecliptic nn.MLP": lambda: models.ecliptic_mlp(key)}
    if eqx is not None:
        eqx_model = models.equinox_mlp(key)
        flatten["equinox"] = lambda: _round_trip(eqx_model)
        build["equinox nn.MLP"] = lambda: models.equinox_mlp(key)
    if nnx is not None:
        nnx_model = models.nnx_mlp()
        flatten["flax nnx.split+merge"] = lambda: nnx.merge(*nnx.split(nnx_model))
        build["flax nnx (4 nnx.Linear)"] = lambda: models.nnx_mlp()
    fast: dict[str, Any] = dict(
        number=2 if smoke else 2000, rounds=1 if smoke else 31, warmup=1 if smoke else 5
    )
    slow: dict[str, Any] = dict(
        number=1 if smoke else 50,
        rounds=1 if smoke else 21,
        warmup=1 if smoke else 3,
        batch_seconds=0.05,
    )
    flat_base = "equinox" if eqx is not None else "ecliptic"
    build_base = "equinox nn.MLP" if eqx is not None else "ecliptic nn.MLP"
    rows = rows_from_stats(
        "flatten+unflatten MLP",
        interleaved(flatten, **fast),
        flat_base,
        goals={"ecliptic": "<=1.0x"},
    )
    rows += rows_from_stats(
        "filter_jit call, 20 blocks",
        interleaved(_check_init_contenders(), **fast),
        "no __check_init__",
        goals={"with __check_init__": "<=1.1x"},
    )
    rows += rows_from_stats(
        "build nn.MLP(32,32,64,3)",
        interleaved(build, **slow),
        build_base,
        goals={"ecliptic nn.MLP": "<=1.0x"},
    )
    return rows


if __name__ == "__main__":
    print(f"# module machinery ({machine()})")
    print_rows(main(smoke_flag()))
