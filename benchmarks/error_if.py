"""Overhead of a runtime check that never fires, in a small MLP training step.

Times `jax.jit(value_and_grad + manual SGD)` for an MLP, with and without
`ecliptic.error_if` on the loss (and, separately, on the input batch), and prints the
time per step and the ratio to the unchecked step (goal: <= 1.05).

    python benchmarks/error_if.py
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import ecliptic

SIZES = (32, 64, 64, 1)
BATCH = 64
STEPS = 100
REPEATS = 45


def init(key: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
    params = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (n_in, n_out)) / np.sqrt(n_in), jnp.zeros(n_out)))
    return params


def make_step(check: str):
    def loss_fn(params, x, y):
        if check == "input":
            x = ecliptic.error_if(x, ~jnp.isfinite(x), "input is not finite")
        h = x
        for w, b in params[:-1]:
            h = jax.nn.relu(h @ w + b)
        w, b = params[-1]
        loss = jnp.mean((h @ w + b - y) ** 2)
        if check == "loss":
            loss = ecliptic.error_if(loss, ~jnp.isfinite(loss), "loss is not finite")
        return loss

    @jax.jit
    def step(params, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        params = jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)
        return params, loss

    return step


def time_steps(step, params, x, y) -> float:
    start = time.perf_counter()
    for _ in range(STEPS):
        params, loss = step(params, x, y)
    loss.block_until_ready()  # pyright: ignore[reportPossiblyUnboundVariable]
    return (time.perf_counter() - start) / STEPS


def main() -> None:
    kp, kx, ky = jax.random.split(jax.random.key(0), 3)
    params = init(kp)
    x = jax.random.normal(kx, (BATCH, SIZES[0]))
    y = jax.random.normal(ky, (BATCH, SIZES[-1]))
    variants = {name: make_step(name) for name in ("none", "loss", "input")}
    for step in variants.values():  # compile and warm up
        for _ in range(20):
            params_out, loss = step(params, x, y)
        loss.block_until_ready()  # pyright: ignore[reportPossiblyUnboundVariable]
    best = {name: float("inf") for name in variants}
    names = list(variants)
    for r in range(REPEATS):  # interleaved, rotating order, best of: robust to load
        for name in names[r % 3 :] + names[: r % 3]:
            best[name] = min(best[name], time_steps(variants[name], params, x, y))
    print(f"device: {jax.devices()[0].device_kind}; MLP {SIZES}, batch {BATCH}")
    base = best["none"]
    for name, seconds in best.items():
        label = {"none": "no check", "loss": "error_if on loss", "input": "error_if on input"}
        print(f"{label[name]:>20}: {seconds * 1e6:8.1f} us/step   ratio {seconds / base:.3f}")


if __name__ == "__main__":
    main()
