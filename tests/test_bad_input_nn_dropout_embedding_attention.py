"""The bad-input catalogue: nn Dropout, Embedding and MultiheadAttention.
See bad_input_helpers.py for what each row asserts."""

# Each row passes a wrong type on purpose to check the error: argument types are not checked.
# pyright: reportArgumentType=false, reportCallIssue=false

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bad_input_helpers import check_misuse, misuse
from bad_input_layers import KEY, VMAP_HINT, attend, call

import ecliptic as ec
from ecliptic import nn

DROPOUT_EMBEDDING_CASES = [
    misuse(
        "Dropout/inference-a-string",
        lambda: nn.Dropout(0.5, inference="no"),
        TypeError,
        r"Dropout: inference must be True or False; got 'no'",
    ),
    misuse(
        "Dropout/p-above-one",
        lambda: nn.Dropout(1.5),
        ValueError,
        r"Dropout: p must be in \[0, 1\]; got 1\.5",
    ),
    misuse(
        "Dropout/negative-p",
        lambda: nn.Dropout(-0.1),
        ValueError,
        r"Dropout: p must be in \[0, 1\]; got -0\.1",
    ),
    misuse(
        "Dropout/p-a-string",
        lambda: nn.Dropout("0.5"),
        TypeError,
        r"Dropout: p must be a float in \[0, 1\]; got '0\.5'",
    ),
    misuse(
        "Dropout/traced-p",
        lambda: jax.jit(lambda p: nn.Dropout(p))(0.5),
        TypeError,
        r"Dropout: p must be a float in \[0, 1\]; got .*Tracer",
    ),
    misuse(
        "Dropout/missing-key",
        lambda: nn.Dropout(0.5)(jnp.ones(3)),
        ValueError,
        r"Dropout needs a PRNG key when it is not in inference mode: pass key=",
    ),
    misuse(
        "Dropout/int-key",
        lambda: nn.Dropout(0.5)(jnp.ones(3), key=0),
        TypeError,
        r"Dropout: key must be a JAX PRNG key; got int",
    ),
    misuse(
        "Dropout/inference-and-deterministic-disagree",
        lambda: nn.Dropout(0.5)(jnp.ones(3), inference=True, deterministic=False),
        ValueError,
        r"inference=True and deterministic=False disagree",
    ),
    misuse(
        "Dropout/int-input",
        lambda: nn.Dropout(0.5)(jnp.ones(3, jnp.int32), key=KEY),
        TypeError,
        r"Dropout expects a floating-point input; got dtype int32",
    ),
    misuse(
        "Embedding/float-index",
        call("embedding", jnp.array(1.0)),
        TypeError,
        r"Embedding expects integer indices; got an array of dtype float32.*astype",
    ),
    misuse(
        "Embedding/python-float-index",
        call("embedding", 1.5),
        TypeError,
        r"Embedding expects an integer index .*got float 1\.5",
    ),
    misuse(
        "Embedding/index-too-large",
        call("embedding", 12),
        IndexError,
        r"Embedding: index 12 is out of range for num_embeddings=10; indices must be in "
        r"\[0, 9\]",
    ),
    misuse(
        "Embedding/negative-index",
        call("embedding", np.array([3, -1])),
        IndexError,
        r"Embedding: index -1 is out of range for num_embeddings=10",
    ),
    misuse(
        "Embedding/weight-shape-disagrees",
        lambda: nn.Embedding(10, 4, weight=jnp.ones((3, 4))),
        ValueError,
        r"Embedding: num_embeddings=10 does not match the weight of shape \(3, 4\)",
    ),
    misuse(
        "Embedding/zero-embeddings",
        lambda: nn.Embedding(0, 4, key=KEY),
        ValueError,
        r"Embedding: num_embeddings must be >= 1; got 0",
    ),
    misuse(
        "RotaryPositionalEmbedding/odd-size",
        lambda: nn.RotaryPositionalEmbedding(3),
        ValueError,
        r"RotaryPositionalEmbedding: embedding_size must be even",
    ),
    misuse(
        "RotaryPositionalEmbedding/wrong-size",
        lambda: nn.RotaryPositionalEmbedding(4)(jnp.ones((5, 6))),
        ValueError,
        r"RotaryPositionalEmbedding expects an input of shape \(seq_len, 4\).*got shape "
        r"\(5, 6\)",
    ),
]

ATTENTION_CASES = [
    misuse(
        "MultiheadAttention/heads-do-not-divide",
        lambda: nn.MultiheadAttention(3, 4, key=KEY),
        ValueError,
        r"MultiheadAttention: query_size \(4\) must be divisible by num_heads \(3\)",
    ),
    misuse(
        "MultiheadAttention/zero-heads",
        lambda: nn.MultiheadAttention(0, 4, key=KEY),
        ValueError,
        r"MultiheadAttention: num_heads must be >= 1; got 0",
    ),
    misuse(
        "MultiheadAttention/dropout_p-above-one",
        lambda: ec.filter_eval_shape(nn.MultiheadAttention, 2, 4, dropout_p=2.0, key=KEY),
        ValueError,
        r"p must be in \[0, 1\]; got 2\.0",
    ),
    misuse(
        "MultiheadAttention/query-wrong-size",
        attend((5, 3), (5, 4), (5, 4)),
        ValueError,
        r"MultiheadAttention expects query of shape \(q_seq, 4\); got shape \(5, 3\)",
    ),
    misuse(
        "MultiheadAttention/key-value-lengths-differ",
        attend((5, 4), (6, 4), (7, 4)),
        ValueError,
        r"key_ and value must have the same sequence length; got shapes "
        r"\(6, 4\) and \(7, 4\)",
    ),
    misuse(
        "MultiheadAttention/unsequenced-input",
        attend((4,), (4,), (4,)),
        ValueError,
        r"MultiheadAttention expects query of shape \(q_seq, 4\); got shape \(4,\)",
    ),
    misuse(
        "MultiheadAttention/batched-input",
        attend((2, 5, 4), (2, 5, 4), (2, 5, 4)),
        ValueError,
        r"expects query of shape \(q_seq, 4\); got shape \(2, 5, 4\)" + VMAP_HINT,
    ),
    misuse(
        "MultiheadAttention/mask-transposed",
        attend((5, 4), (6, 4), (6, 4), mask=jnp.ones((6, 5), bool)),
        ValueError,
        r"mask must have shape \(q_seq, kv_seq\) = \(5, 6\) or \(num_heads, q_seq, "
        r"kv_seq\) = \(2, 5, 6\); got shape \(6, 5\)",
    ),
    misuse(
        "MultiheadAttention/float-mask",
        attend((5, 4), (6, 4), (6, 4), mask=jnp.ones((5, 6))),
        TypeError,
        r"MultiheadAttention: mask must be boolean \(True = may attend\); got "
        r"dtype float32",
    ),
    misuse(
        "MultiheadAttention/process_heads-not-callable",
        attend((5, 4), (5, 4), (5, 4), process_heads=3),
        TypeError,
        r"MultiheadAttention: process_heads must be a function \(q, k, v\) -> \(q, k, v\); "
        r"got 3",
    ),
    misuse(
        "MultiheadAttention/process_heads-returns-one-array",
        attend((5, 4), (5, 4), (5, 4), process_heads=lambda q, k, v: q),
        TypeError,
        r"process_heads must return a tuple of three arrays \(q, k, v\)",
    ),
    misuse(
        "MultiheadAttention/process_heads-changes-head-count",
        attend((5, 4), (5, 4), (5, 4), process_heads=lambda q, k, v: (q[:, :1], k, v)),
        ValueError,
        r"process_heads must return heads of shapes \(q_seq, 2, d_qk\)",
    ),
    misuse(
        "MultiheadAttention/dropout-without-key",
        attend((5, 4), (5, 4), (5, 4), name="mha_dropout"),
        ValueError,
        r"MultiheadAttention\(dropout_p=0\.5\) needs a PRNG key",
    ),
]

CASES = DROPOUT_EMBEDDING_CASES + ATTENTION_CASES


@pytest.mark.parametrize("fn, exception, regex", CASES)
def test_misuse(fn: Any, exception: type[BaseException], regex: str) -> None:
    check_misuse(fn, exception, regex)
