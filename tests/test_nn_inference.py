"""inference_mode (and the deprecated ecliptic.tree_inference)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import pytest

import ecliptic
from ecliptic import nn


class Custom(ecliptic.Module):
    inference: bool  # a plain (non-static) field works too
    inner: nn.Dropout

    def __call__(self, x):
        return x


def build() -> dict:
    k1, k2 = jax.random.split(jax.random.key(0))
    return {
        "dropout": nn.Dropout(0.5),
        "bn": nn.BatchNorm(3, "batch", mode="torch"),
        "sn": [nn.SpectralNorm(nn.Linear(2, 2, key=k1), key=k2)],
        "attention": nn.MultiheadAttention(2, 4, dropout_p=0.1, key=k1),
        "custom": Custom(False, nn.Dropout(0.2)),
        "linear": nn.Linear(2, 2, key=k2),
        "other": (None, 3, "text"),
    }


def test_flips_every_layer_with_an_inference_field() -> None:
    model = build()
    eval_model = nn.inference_mode(model)
    assert eval_model["dropout"].inference
    assert eval_model["bn"].inference
    assert eval_model["sn"][0].inference
    assert eval_model["attention"].dropout.inference  # kept on its Dropout
    assert eval_model["custom"].inference and eval_model["custom"].inner.inference
    # nothing else changed; arrays are shared, not copied
    assert eval_model["linear"].weight is model["linear"].weight
    assert eval_model["other"] == (None, 3, "text")
    assert not model["dropout"].inference  # the input is untouched
    back = nn.inference_mode(eval_model, value=False)
    assert not back["bn"].inference and not back["custom"].inner.inference
    assert jtu.tree_structure(back) == jtu.tree_structure(model)


def test_changes_behaviour() -> None:
    dropout = nn.inference_mode(nn.Sequential([nn.Dropout(0.9)]))
    x = jnp.ones(5)
    assert (dropout(x) == x).all()  # no key needed at inference


def test_rejects_non_bool() -> None:
    with pytest.raises(TypeError, match="must be a bool"):
        nn.inference_mode(build(), value=1)  # pyright: ignore[reportArgumentType]


def test_tree_inference_is_deprecated_alias() -> None:
    with pytest.warns(DeprecationWarning, match="inference_mode"):
        out = ecliptic.tree_inference(nn.Dropout(0.5), True)
    assert out.inference
