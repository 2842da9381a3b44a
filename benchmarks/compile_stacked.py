"""Scan over layers: compile time and run time of N identical blocks written as a Python
loop over N layers ("unrolled") against `ecliptic.nn.Stacked` (one `lax.scan`, default
options), for a pre-norm residual MLP block (width 128, 128 tokens) and a pre-norm
transformer block (width 64, 4 heads, batch 8 x 16 tokens), N = 8, 16, 32. Both variants hold
the same weights (the unrolled layers are `stacked.unstack()`), and their outputs are
checked to agree (forward outputs; loss and gradients). Both the batched forward pass and
a training step's `filter_value_and_grad` are compiled and timed. Goals: Stacked
compiles >= 5x faster at N = 32 (ratio <= 0.2x) with run time <= 1.1x the unrolled loop's.

Compile time = trace + lower + XLA compile of a fresh `filter_jit` (`.lower().compile()`),
the best of a few repeats, alternating the variants. At the largest N the table also shows
one block compiled alone: the scan's program contains that block, so its compile-time ratio
can never beat that floor (on XLA CPU, identical fused kernels of the unrolled loop are
compiled once, which puts the floor close to 0.2x for small blocks).

Run: python benchmarks/compile_stacked.py [--smoke]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _timing import Row, interleaved, machine, print_rows, smoke_flag, wall

import ecliptic as ec

nn = ec.nn


class TransformerBlock(ec.Module):
    """Pre-norm transformer block on one sequence `(seq, dim)`."""

    norm1: nn.LayerNorm
    attention: nn.MultiheadAttention
    norm2: nn.LayerNorm
    mlp: nn.MLP

    def __init__(self, dim: int, heads: int, *, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(heads, dim, key=k1)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.MLP(dim, dim, 4 * dim, 1, activation=jax.nn.gelu, key=k2)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        h = jax.vmap(self.norm1)(x)
        x = x + self.attention(h, h, h)
        return x + jax.vmap(self.mlp)(jax.vmap(self.norm2)(x))


class ResidualMLPBlock(ec.Module):
    """Pre-norm residual MLP block on one token: `x + W2 gelu(W1 norm(x))`."""

    norm: nn.LayerNorm
    mlp: nn.MLP

    def __init__(self, dim: int, *, key: jax.Array):
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.MLP(dim, dim, 4 * dim, 1, activation=jax.nn.gelu, key=key)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.mlp(self.norm(x))


def _plain(layer: Any, x: jax.Array) -> jax.Array:
    return layer(x)


class Unrolled(ec.Module):
    """The baseline: a Python loop over separate layers (traced N times)."""

    layers: tuple[Any, ...]
    apply: Callable[..., Any]

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = self.apply(layer, x)
        return x


def _cases(smoke: bool) -> list[tuple[str, Callable[[jax.Array], Any], Callable[..., Any], Any]]:
    dim = 16 if smoke else 64
    x_mlp = jnp.ones((16, 16)) if smoke else jnp.ones((128, 2 * dim))
    x_tf = jnp.ones((8, 16, dim))
    mlp_dim = x_mlp.shape[-1]
    return [
        ("residual MLP", lambda k: ResidualMLPBlock(mlp_dim, key=k), _plain, x_mlp),
        ("transformer block", lambda k: TransformerBlock(dim, 4, key=k), _plain, x_tf),
    ]


def _make_fn(mode: str) -> Callable[..., Any]:
    """A fresh function (so no JAX cache can hit) for `mode`: the batched forward pass,
    or the loss and gradients of a training step."""

    def forward(model: Any, x: jax.Array) -> jax.Array:
        return jax.vmap(model)(x)

    def value_and_grad(model: Any, x: jax.Array) -> Any:
        return ec.filter_value_and_grad(lambda m: jnp.mean(forward(m, x) ** 2))(model)

    return forward if mode == "forward" else value_and_grad


def _compile_seconds(mode: str, model: Any, x: jax.Array) -> tuple[float, Any]:
    jitted = ec.filter_jit(_make_fn(mode))
    box: list[Any] = []
    seconds = wall(lambda: box.append(jitted.lower(model, x).compile()))  # pyright: ignore[reportFunctionMemberAccess]
    return seconds, box[0]


def _max_difference(mode: str, unrolled_out: Any, stacked_out: Any) -> tuple[float, float]:
    """Largest absolute difference between the two variants' outputs, and their scale."""
    if mode == "forward":
        a, b = [unrolled_out], [stacked_out]
    else:  # (loss, grads): line the unrolled per-layer grads up with the stacked ones
        (loss_u, grads_u), (loss_s, grads_s) = unrolled_out, stacked_out
        regrouped = nn.stack_layers(list(grads_u.layers)).layers
        a = [loss_u, *jax.tree.leaves(regrouped)]
        b = [loss_s, *jax.tree.leaves(grads_s.layers)]
    diff = max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(a, b))
    scale = max(float(jnp.max(jnp.abs(u))) for u in a)
    return diff, scale


def main(smoke: bool = False) -> list[Row]:
    """Compile and run both variants; return the table rows (`smoke`: N = 2, tiny
    blocks)."""
    sizes = (2,) if smoke else (8, 16, 32)
    # Compiles take longer on a GPU (and the lease is short): best of 2 there.
    repeats = 1 if smoke else (2 if jax.default_backend() == "gpu" else 3)
    rows: list[Row] = []
    key = jax.random.key(0)
    for name, make, apply, x in _cases(smoke):
        models = {}
        for n in sizes:
            stacked = nn.Stacked(make, n, key=key, apply=apply)
            models[n] = {"unrolled": Unrolled(tuple(stacked.unstack()), apply), "Stacked": stacked}
        # Smoke mode keeps the (slow to compile) transformer gradients out.
        modes = ("forward",) if smoke and name != "residual MLP" else ("forward", "value_and_grad")
        for mode in modes:
            if not smoke:  # warm JAX's caches of inner jitted helpers for both variants
                _compile_seconds(mode, nn.Stacked(make, 1, key=key, apply=apply), x)
                _compile_seconds(mode, Unrolled((make(key),), apply), x)
            runtime: dict[str, Callable[[], Any]] = {}
            group = f"{name} {mode}"
            for n in sizes:
                # At the largest N, also time one block alone: no scan can compile faster
                # than the program of one block, so its ratio is the floor of Stacked's.
                contenders = dict(models[n])
                if n == sizes[-1]:
                    contenders["one block"] = Unrolled((make(key),), apply)
                best = {variant: np.inf for variant in contenders}
                compiled: dict[str, Any] = {}
                for _ in range(repeats):
                    for variant, model in contenders.items():
                        seconds, compiled[variant] = _compile_seconds(mode, model, x)
                        best[variant] = min(best[variant], seconds)
                outs = {v: compiled[v](m, x) for v, m in models[n].items()}
                diff, scale = _max_difference(mode, outs["unrolled"], outs["Stacked"])
                # On a GPU, float32 products default to TensorFloat-32 (10-bit mantissa),
                # so the two programs agree less closely there.
                tolerance = 1e-2 if jax.default_backend() == "gpu" else 1e-4
                if not diff <= tolerance * max(1.0, scale):
                    raise AssertionError(f"{group}, N={n}: outputs differ by {diff}")
                rows.append(Row(f"compile {group}", f"N={n} unrolled", best["unrolled"], "s"))
                rows.append(
                    Row(
                        f"compile {group}",
                        f"N={n} Stacked",
                        best["Stacked"],
                        "s",
                        best["Stacked"] / best["unrolled"],
                        "<=0.2x" if n == 32 else "",
                        f"max abs diff {diff:.1e}",
                    )
                )
                if "one block" in best:
                    rows.append(
                        Row(
                            f"compile {group}",
                            "1 block, no loop (floor)",
                            best["one block"],
                            "s",
                            best["one block"] / best["unrolled"],
                            "",
                            f"lower bound on the N={n} Stacked ratio",
                        )
                    )
                for variant, model in models[n].items():
                    runtime[f"N={n} {variant}"] = lambda c=compiled[variant], m=model, x=x: c(m, x)
            stats = interleaved(
                runtime,
                number=2 if smoke else 50,
                rounds=1 if smoke else 21,
                warmup=1 if smoke else 3,
                batch_seconds=0.05,
            )
            for n in sizes:
                base, s = stats[f"N={n} unrolled"], stats[f"N={n} Stacked"]
                rows.append(
                    Row(
                        f"run time {group}",
                        f"N={n} unrolled",
                        base.median,
                        "us/call",
                        None,
                        "",
                        f"min {base.min:.3g}",
                    )
                )
                rows.append(
                    Row(
                        f"run time {group}",
                        f"N={n} Stacked",
                        s.median,
                        "us/call",
                        s.median / base.median,
                        "<=1.1x",
                        f"min {s.min:.3g} ({s.min / base.min:.2f}x)",
                    )
                )
    return rows


if __name__ == "__main__":
    print(f"# scan over layers ({machine()})")
    print_rows(main(smoke_flag()))
