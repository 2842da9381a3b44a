"""ecliptic.summary: one row per submodule, totals, shared weights and State."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from persistence_helpers import abstract_zoo, fill

import ecliptic
import ecliptic.nn as enn


def mlp():
    make = lambda: enn.MLP(2, 3, 4, 1, key=jax.random.key(0))
    return ecliptic.filter_eval_shape(make)


def test_rows_and_totals():
    s = ecliptic.summary(fill(mlp()))
    assert [(r.path, r.type) for r in s.rows] == [
        ("", "MLP"),
        ("layers.0", "Linear"),
        ("layers.1", "Linear"),
    ]
    assert s.rows[1].params == ("weight f32[4,2]", "bias f32[4]")
    assert (s.rows[1].count, s.rows[1].bytes) == (12, 48)
    assert (s.rows[0].count, s.rows[0].params) == (0, ())
    assert (s.trainable_count, s.trainable_bytes) == (27, 108)
    assert (s.other_count, s.total_count, s.total_bytes) == (0, 27, 108)
    text = str(s)
    assert text.splitlines()[0].split() == ["path", "type", "params", "count", "bytes"]
    assert "<root>" in text and "layers.1" in text and "weight f32[3,4], bias f32[3]" in text
    assert "Trainable (floating-point) arrays: 27 elements, 108 B" in text
    assert "in_features" not in text and "width_size" not in text  # static fields
    assert repr(s) == text


def test_abstract_models_count_the_same():
    assert str(ecliptic.summary(mlp())) == str(ecliptic.summary(fill(mlp())))


def test_shared_arrays_counted_once():
    w = jnp.ones((10, 10))
    s = ecliptic.summary({"a": w, "b": [w, jnp.zeros(2, jnp.bfloat16)]})
    assert s.rows[0].params == ("a f32[10,10]", "b.0 f32[10,10] (shared with a)", "b.1 bf16[2]")
    assert (s.trainable_count, s.trainable_bytes) == (102, 404)


def test_state_and_other_arrays():
    model, state = fill(abstract_zoo()["batchnorm"])
    s = ecliptic.summary({"bn": model, "state": state, "step": np.int64(3)})
    types = {r.path: r.type for r in s.rows}
    assert types == {"": "dict", "bn": "BatchNorm", "state": "State"}
    assert s.rows[0].params == ("step i64[]",)
    state_row = next(r for r in s.rows if r.type == "State")
    assert state_row.count == 1 + 4 + 4
    assert (s.other_count, s.other_bytes) == (2, 4 + 8)  # the counter and the step
    assert s.trainable_count == 4 + 4 + 4 + 4


def test_layers_without_parameters_and_keys():
    tree = enn.Sequential([enn.Dropout(0.1), enn.Identity()])
    s = ecliptic.summary(tree)
    assert [r.type for r in s.rows] == ["Sequential", "Dropout", "Identity"]
    assert s.total_count == 0 and "0 elements, 0 B" in str(s)
    s = ecliptic.summary({"key": jax.random.split(jax.random.key(0), 3)})
    assert s.other_count == 3 and s.rows[0].params == ("key key<fry>[3]",)


def test_long_parameter_lists_wrap():
    tree = {f"p{i}": jnp.zeros((i + 1, 2)) for i in range(8)}
    lines = str(ecliptic.summary(tree)).splitlines()
    assert len(lines) > 4 and max(len(line) for line in lines) < 100
