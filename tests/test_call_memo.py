"""The identity fast path of filter_jit must never return a stale result."""

import gc

import jax
import jax.numpy as jnp
import numpy as np

import ecliptic as ec


class Scale(ec.Module):
    factor: jax.Array
    extra: object = None
    name: str = ec.field(static=True, default="s")

    def __call__(self, x):
        return self.factor * x


def fresh_wrapper():
    traces = []

    def fn(model, x, *, shift=0.0):
        traces.append(1)
        return model(x) + shift

    return ec.filter_jit(fn), traces


def test_memo_built_after_repeat_and_results_follow_inputs():
    f, traces = fresh_wrapper()
    model = Scale(jnp.array(2.0))
    for value in (1.0, 2.0, 3.0, 4.0):
        assert f(model, jnp.array(value)) == 2 * value
    assert f.memo.entry is not None
    assert len(traces) == 1


def test_new_model_object_is_not_confused_with_old():
    f, _ = fresh_wrapper()
    a, b = Scale(jnp.array(2.0)), Scale(jnp.array(5.0))
    f(a, jnp.array(1.0)), f(a, jnp.array(1.0))
    assert f(b, jnp.array(1.0)) == 5.0
    assert f(a, jnp.array(1.0)) == 2.0


def test_static_change_on_new_object_retraces():
    f, traces = fresh_wrapper()
    a = Scale(jnp.array(2.0), name="a")
    f(a, jnp.array(1.0)), f(a, jnp.array(1.0))
    f(Scale(jnp.array(2.0), name="b"), jnp.array(1.0))
    assert len(traces) == 2


def test_modules_holding_lists_are_not_memoised():
    f, _ = fresh_wrapper()
    holder = Scale(jnp.array(2.0), extra=[1])
    f(holder, jnp.array(1.0)), f(holder, jnp.array(1.0))
    assert f.memo.entry is None


def test_numpy_leaf_mutated_in_place_is_seen():
    f, _ = fresh_wrapper()
    factor = np.array(2.0, dtype=np.float32)
    model = Scale(factor)
    f(model, jnp.array(1.0)), f(model, jnp.array(1.0))
    factor[...] = 7.0
    assert f(model, jnp.array(1.0)) == 7.0


def test_kwargs_and_shape_changes():
    f, traces = fresh_wrapper()
    model = Scale(jnp.array(2.0))
    x = jnp.ones(3)
    f(model, x, shift=jnp.array(1.0)), f(model, x, shift=jnp.array(1.0))
    np.testing.assert_array_equal(f(model, x, shift=jnp.array(3.0)), 5.0 * np.ones(3))
    assert f(model, jnp.ones(4), shift=jnp.array(0.0)).shape == (4,)
    assert f(model, jnp.ones(3)).shape == (3,)  # kwargs dropped: back to the slow path


def test_non_array_where_an_array_was_misses_the_memo():
    f, traces = fresh_wrapper()
    model = Scale(jnp.array(2.0))
    f(model, jnp.array(1.0)), f(model, jnp.array(1.0))
    assert f(model, 3.0) == 6.0  # a Python float: static, new trace
    assert len(traces) == 2


def test_entry_dropped_when_model_is_collected():
    f, _ = fresh_wrapper()
    model = Scale(jnp.array(2.0))
    f(model, jnp.array(1.0)), f(model, jnp.array(1.0))
    assert f.memo.entry is not None
    del model
    gc.collect()
    assert f.memo.entry is None


def test_memo_inside_outer_trace():
    f, _ = fresh_wrapper()
    model = Scale(jnp.array(2.0))
    outer = jax.jit(lambda x: f(model, x) + f(model, x) + f(model, x))
    assert outer(jnp.array(1.0)) == 6.0
    assert jax.grad(lambda x: f(model, x))(jnp.array(1.0)) == 2.0


def test_unmemoisable_repeated_pattern_is_tried_once():
    f = ec.filter_jit(lambda pair, x: pair[0] * x)
    pair = (jnp.array(2.0), jnp.array(3.0))  # a tuple: not weak-referenceable
    for _ in range(3):
        assert f(pair, jnp.array(1.0)) == 2.0
    assert f.memo.entry is None and f.memo.previous[1] is True
