"""Attention core of `ecliptic.nn.MultiheadAttention`: the explicit softmax path (taken
when dropout needs the weights) against the fused path through
`jax.nn.dot_product_attention` (cuDNN's flash attention on GPU, XLA's fallback on CPU;
`MultiheadAttention` takes it by default on GPU only, as the CPU fallback is slower),
on projected heads `(seq, heads, head_size)` with a causal mask, for sequence lengths
128..4096. Reported: time per call (jitted), and the peak temporary memory of each
compiled program (`compiled.memory_analysis()`), with the fused/explicit ratios.

Run: python benchmarks/attention.py [--smoke]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from _timing import Row, interleaved, machine, print_rows, smoke_flag

from ecliptic.nn._attention_functions import multihead_attention

HEADS = 4
HEAD_SIZE = 32
SEQ_LENS = (128, 256, 512, 1024, 2048, 4096)
SMOKE_SEQ_LENS = (16,)


def contenders(seq: int) -> tuple[dict[str, Any], tuple[jax.Array, ...]]:
    kq, kk, kv = jax.random.split(jax.random.key(seq), 3)
    shape = (seq, HEADS, HEAD_SIZE)
    args = (
        jax.random.normal(kq, shape),
        jax.random.normal(kk, shape),
        jax.random.normal(kv, shape),
        jnp.tril(jnp.ones((seq, seq), bool)),
    )
    fns = {
        "explicit softmax": jax.jit(
            lambda q, k, v, m: multihead_attention(q, k, v, m, fused=False)
        ),
        "fused dot_product_attention": jax.jit(
            lambda q, k, v, m: multihead_attention(q, k, v, m, fused=True)
        ),
    }
    return fns, args


def peak_temp_bytes(fn: Any, args: tuple[jax.Array, ...]) -> float:
    """Temporary (scratch) memory of the compiled program, in bytes (NaN if unknown)."""
    analysis = fn.lower(*args).compile().memory_analysis()
    return float(getattr(analysis, "temp_size_in_bytes", float("nan")))


def main(smoke: bool = False) -> list[Row]:
    """Time and size both paths for each sequence length (`smoke`: one tiny length)."""
    rows: list[Row] = []
    baseline = "explicit softmax"
    for seq in SMOKE_SEQ_LENS if smoke else SEQ_LENS:
        fns, args = contenders(seq)
        calls = {name: (lambda f=f, args=args: f(*args)) for name, f in fns.items()}
        big = seq >= 2048
        stats = interleaved(
            calls,
            number=1 if smoke or big else 5,
            rounds=1 if smoke else (3 if big else 7),
            warmup=1,
            batch_seconds=0.05,
        )
        memory = {name: peak_temp_bytes(f, args) for name, f in fns.items()}
        group = f"attention, {HEADS} heads x {HEAD_SIZE}, causal, seq {seq}"
        for name, s in stats.items():
            ratio = None if name == baseline else s.median / stats[baseline].median
            mem_ratio = (
                None
                if name == baseline or not memory[baseline]
                else memory[name] / memory[baseline]
            )
            rows.append(
                Row(
                    group,
                    f"{name} time",
                    s.median / 1e3,
                    "ms/call",
                    ratio,
                    "",
                    f"min {s.min / 1e3:.3g} ms",
                )
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
