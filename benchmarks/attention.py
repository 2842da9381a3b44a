"""Attention core of `ecliptic.nn.MultiheadAttention`: the explicit softmax path (taken
when dropout needs the weights) against the fused path through
`jax.nn.dot_product_attention` (`MultiheadAttention` takes it by default on GPU only:
XLA's version of the call, the only one on CPU, is slower there), with a causal mask.
On CPU: projected heads `(seq, 4, 32)` in float32 for sequence lengths 128..4096. On a
GPU: a vmapped batch of 8 of `(seq, 8, 64)` for 128..8192, in float32 (XLA's version of
the fused call) and in bfloat16 (cuDNN's flash kernel). Reported: time per call
(jitted), the peak temporary memory of each compiled program
(`compiled.memory_analysis()`), the fused/explicit ratios, which kernel the fused program
calls and its largest difference from the explicit path.

Run: python benchmarks/attention.py [--smoke]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _timing import Row, interleaved, machine, print_rows, smoke_flag

from ecliptic.nn._attention_functions import multihead_attention

HEADS = 4
HEAD_SIZE = 32
SEQ_LENS = (128, 256, 512, 1024, 2048, 4096)
SMOKE_SEQ_LENS = (16,)
# On a GPU: a batch of 8 (vmapped, as a model calls the layer), 8 heads of 64, in float32
# (XLA's version of the fused call) and in bfloat16 (cuDNN's flash kernel).
GPU_BATCH, GPU_HEADS, GPU_HEAD_SIZE = 8, 8, 64
GPU_SEQ_LENS = (128, 512, 1024, 2048, 4096, 8192)


def on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def contenders(
    seq: int, dtype: Any = jnp.float32, batch: int = 0
) -> tuple[dict[str, Any], tuple[jax.Array, ...]]:
    """The two paths, jitted, with their arguments (`batch` > 0: vmapped over a batch)."""
    heads, size = (GPU_HEADS, GPU_HEAD_SIZE) if batch else (HEADS, HEAD_SIZE)
    kq, kk, kv = jax.random.split(jax.random.key(seq), 3)
    shape = ((batch,) if batch else ()) + (seq, heads, size)
    args = (
        jax.random.normal(kq, shape, dtype),
        jax.random.normal(kk, shape, dtype),
        jax.random.normal(kv, shape, dtype),
        jnp.tril(jnp.ones((seq, seq), bool)),
    )

    def path(fused: bool) -> Any:
        def attend(q: jax.Array, k: jax.Array, v: jax.Array, m: jax.Array) -> jax.Array:
            return multihead_attention(q, k, v, m, fused=fused)

        return jax.jit(jax.vmap(attend, (0, 0, 0, None)) if batch else attend)

    return {"explicit softmax": path(False), "fused dot_product_attention": path(True)}, args


def peak_temp_bytes(fn: Any, args: tuple[jax.Array, ...]) -> float:
    """Temporary (scratch) memory of the compiled program, in bytes (NaN if unknown)."""
    analysis = fn.lower(*args).compile().memory_analysis()
    return float(getattr(analysis, "temp_size_in_bytes", float("nan")))


def kernel_of(fn: Any, args: tuple[jax.Array, ...]) -> str:
    """Which attention kernel the compiled program calls."""
    text = fn.lower(*args).compile().as_text().lower()
    return "cuDNN flash" if "cudnn" in text and "fmha" in text else "XLA"


def cases(smoke: bool) -> list[tuple[int, Any, int]]:
    """(sequence length, dtype, batch) for each group."""
    if smoke:
        return [(n, jnp.float32, 0) for n in SMOKE_SEQ_LENS]
    if on_gpu():
        return [(n, dt, GPU_BATCH) for n in GPU_SEQ_LENS for dt in (jnp.float32, jnp.bfloat16)]
    return [(n, jnp.float32, 0) for n in SEQ_LENS]


def main(smoke: bool = False) -> list[Row]:
    """Time and size both paths for each sequence length (`smoke`: one tiny length)."""
    rows: list[Row] = []
    baseline = "explicit softmax"
    for seq, dtype, batch in cases(smoke):
        fns, args = contenders(seq, dtype, batch)
        calls = {name: (lambda f=f, args=args: f(*args)) for name, f in fns.items()}
        big = seq >= 2048 and not batch
        stats = interleaved(
            calls,
            number=1 if smoke or big else 5,
            rounds=1 if smoke else (3 if big else 7),
            warmup=1,
            batch_seconds=0.05,
        )
        memory = {name: peak_temp_bytes(f, args) for name, f in fns.items()}
        outs = {name: np.asarray(f(*args), np.float32) for name, f in fns.items()}
        diff = float(np.max(np.abs(outs[baseline] - outs["fused dot_product_attention"])))
        kernel = kernel_of(fns["fused dot_product_attention"], args)
        heads, size = (GPU_HEADS, GPU_HEAD_SIZE) if batch else (HEADS, HEAD_SIZE)
        group = f"attention, {heads} heads x {size}, causal, seq {seq}"
        if batch:
            group += f", batch {batch}, {jnp.dtype(dtype).name}"
        for name, s in stats.items():
            fused = name != baseline
            ratio = s.median / stats[baseline].median if fused else None
            min_ratio = s.min / stats[baseline].min if fused else None
            mem_ratio = memory[name] / memory[baseline] if fused and memory[baseline] else None
            note = f"min {s.min / 1e3:.3g} ms"
            if fused:
                note += f"; {kernel}; max abs diff {diff:.1e}"
            rows.append(
                Row(group, f"{name} time", s.median / 1e3, "ms/call", ratio, "", note, min_ratio)
            )
            rows.append(
                Row(
                    group,
                    f"{name} peak temp memory",
                    memory[name] / 2**20,
                    "MiB",
                    mem_ratio,
                    "",
                    "compiled memory_analysis()",
                )
            )
    return rows


if __name__ == "__main__":
    print(f"# Attention: explicit vs fused ({machine()})")
    print_rows(main(smoke_flag()))
