"""The identity fast path of filter_jit (ecliptic/_call_memo.py) must never return a stale
result: it skips flattening Modules it has seen (the same model again, or the previous
call's outputs), so every way such a Module or its surroundings could change is tried."""

import gc
import weakref
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ecliptic as ec


class Scale(ec.Module):
    factor: jax.Array
    extra: object = None
    name: str = ec.field(static=True, default="s")

    def __call__(self, x):
        return self.factor * x


def fresh_wrapper():
    traces = []

    def fn(model, x, *, shift: Any = 0.0):
        traces.append(1)
        return model(x) + shift

    return ec.filter_jit(fn), traces


def fast(f, *args, **kwargs):
    """Whether this call would take the fast path."""
    return f.memo.lookup(f.fun, args, kwargs) is not None


def test_same_model_again_takes_fast_path_and_follows_inputs():
    f, traces = fresh_wrapper()
    model = Scale(jnp.array(2.0))
    for value in (1.0, 2.0, 3.0, 4.0):
        assert f(model, jnp.array(value)) == 2 * value
    assert fast(f, model, jnp.array(5.0))
    assert len(traces) == 1


def test_new_model_object_is_not_confused_with_old():
    f, _ = fresh_wrapper()
    a, b = Scale(jnp.array(2.0)), Scale(jnp.array(5.0))
    f(a, jnp.array(1.0)), f(a, jnp.array(1.0))
    assert not fast(f, b, jnp.array(1.0))
    assert f(b, jnp.array(1.0)) == 5.0
    assert f(a, jnp.array(1.0)) == 2.0
    assert f(b, jnp.array(1.0)) == 5.0


def test_static_change_on_new_object_retraces():
    f, traces = fresh_wrapper()
    a = Scale(jnp.array(2.0), name="a")
    f(a, jnp.array(1.0)), f(a, jnp.array(1.0))
    f(Scale(jnp.array(2.0), name="b"), jnp.array(1.0))
    assert len(traces) == 2


def test_modules_holding_lists_are_not_remembered():
    f, _ = fresh_wrapper()
    holder = Scale(jnp.array(2.0), extra=[1])
    f(holder, jnp.array(1.0)), f(holder, jnp.array(1.0))
    assert not fast(f, holder, jnp.array(1.0))
    assert id(holder) not in f.memo.known  # pyright: ignore[reportFunctionMemberAccess]


def test_numpy_leaf_mutated_in_place_is_seen():
    f, _ = fresh_wrapper()
    factor = np.array(2.0, dtype=np.float32)
    model = Scale(factor)
    f(model, jnp.array(1.0)), f(model, jnp.array(1.0))
    factor[...] = 7.0
    assert fast(f, model, jnp.array(1.0))
    assert f(model, jnp.array(1.0)) == 7.0


def test_kwargs_and_shape_changes():
    f, traces = fresh_wrapper()
    model = Scale(jnp.array(2.0))
    x = jnp.ones(3)
    f(model, x, shift=jnp.array(1.0)), f(model, x, shift=jnp.array(1.0))
    assert fast(f, model, x, shift=jnp.array(3.0))
    np.testing.assert_array_equal(f(model, x, shift=jnp.array(3.0)), 5.0 * np.ones(3))
    assert f(model, jnp.ones(4), shift=jnp.array(0.0)).shape == (4,)
    assert f(model, jnp.ones(3)).shape == (3,)  # kwargs dropped
    assert f(model, jnp.ones(3), shift=2.0)[0] == 4.0  # a static keyword value
    assert f(model, jnp.ones(3), shift=5.0)[0] == 7.0


def test_non_array_where_an_array_was_is_static_again():
    f, traces = fresh_wrapper()
    model = Scale(jnp.array(2.0))
    f(model, jnp.array(1.0)), f(model, jnp.array(1.0))
    assert f(model, 3.0) == 6.0  # a Python float: static, new trace
    assert f(model, 3.0) == 6.0 and f(model, 4.0) == 8.0
    assert len(traces) == 3


def test_scalar_types_are_told_apart():
    f = ec.filter_jit(lambda pair, x: (pair[1] * x, type(pair[1]).__name__))
    model = Scale(jnp.array(2.0))
    for _ in range(2):
        assert f((model, 2), jnp.array(1.0))[1] == "int"
    assert f((model, 2.5), jnp.array(1.0)) == (2.5, "float")
    assert f((model, True), jnp.array(3.0))[1] == "bool"


def test_entry_dropped_when_model_is_collected():
    f, _ = fresh_wrapper()
    model = Scale(jnp.array(2.0))
    f(model, jnp.array(1.0)), f(model, jnp.array(1.0))
    address = id(model)
    assert address in f.memo.known  # pyright: ignore[reportFunctionMemberAccess]
    del model
    gc.collect()
    assert address not in f.memo.known  # pyright: ignore[reportFunctionMemberAccess]


def test_fast_path_inside_outer_trace():
    f, _ = fresh_wrapper()
    model = Scale(jnp.array(2.0))
    outer = jax.jit(lambda x: f(model, x) + f(model, x) + f(model, x))
    assert outer(jnp.array(1.0)) == 6.0
    assert jax.grad(lambda x: f(model, x))(jnp.array(1.0)) == 2.0
    assert f(model, jnp.array(2.0)) == 4.0


def test_tuple_of_arrays_needs_no_module():
    f = ec.filter_jit(lambda pair, x: pair[0] * x)
    pair = (jnp.array(2.0), jnp.array(3.0))
    for _ in range(3):
        assert f(pair, jnp.array(1.0)) == 2.0
    assert fast(f, (jnp.array(5.0), jnp.array(3.0)), jnp.array(1.0))
    assert f((jnp.array(5.0), jnp.array(3.0)), jnp.array(1.0)) == 5.0


def test_lists_and_dicts_always_take_the_ordinary_path():
    f = ec.filter_jit(lambda box, x: box[0] * x)
    for box in ([jnp.array(2.0)], {0: jnp.array(2.0)}):
        f(box, jnp.array(1.0)), f(box, jnp.array(1.0))
        assert not fast(f, box, jnp.array(1.0))


class Carry(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    model: Scale
    nothing: None


def test_training_loop_outputs_fed_back_match_plain_jax():
    optimiser = optax.adam(0.1)

    def loss(model, x):
        return jnp.sum((model(x) - 1.0) ** 2)

    @ec.filter_jit
    def step(model, opt_state, x):
        value, grads = ec.filter_value_and_grad(loss)(model, x)
        updates, opt_state = optimiser.update(grads, opt_state, model)
        return ec.apply_updates(model, updates), opt_state, value

    @jax.jit
    def reference(params, opt_state, x):
        value, grads = jax.value_and_grad(lambda p: loss(Scale(p), x))(params)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    model, x = Scale(jnp.array(2.0)), jnp.array([0.5, 1.5])
    opt_state = optimiser.init(model)
    params, ref_state = jnp.array(2.0), optimiser.init(jnp.array(2.0))
    fast_calls = []
    for _ in range(6):
        fast_calls.append(fast(step, model, opt_state, x))
        model, opt_state, value = step(model, opt_state, x)
        params, ref_state, ref_value = reference(params, ref_state, x)
        np.testing.assert_allclose(value, ref_value, rtol=1e-6)
        np.testing.assert_allclose(model.factor, params, rtol=1e-6)
    # Once JAX's weak types have settled (a retrace or two), the outputs of one step are
    # known inputs of the next.
    assert fast_calls[-2:] == [True, True]


def test_namedtuple_carry_and_output_modules():
    @ec.filter_jit
    def step(carry, x):
        return Carry(carry.count + 1, Scale(carry.model.factor * x), None)

    carry = Carry(jnp.array(0), Scale(jnp.array(1.0)), None)
    for i in range(5):
        carry = step(carry, jnp.array(2.0))
        assert carry.count == i + 1 and carry.model.factor == 2.0 ** (i + 1)
    assert fast(step, carry, jnp.array(2.0))


def test_output_modules_holding_lists_are_not_remembered():
    f = ec.filter_jit(lambda model: Scale(model.factor + 1, extra=[0]))
    out = f(Scale(jnp.array(1.0)))
    out = f(Scale(jnp.array(1.0)))
    assert id(out) not in f.memo.known  # pyright: ignore[reportFunctionMemberAccess]
    out.extra.append(1)
    assert f(out).factor == 3.0


def test_copies_of_a_wrapper_with_other_arrays_in_fun():
    g = ec.filter_jit(Scale(jnp.array(2.0)))  # a fun with arrays (and no dict/list)
    g3 = jax.tree.map(lambda a: a + 1 if ec.is_array(a) else a, g)  # shares the memo
    assert g3.memo is g.memo  # pyright: ignore[reportFunctionMemberAccess]
    x = jnp.array(1.0)
    for _ in range(3):  # each swap of the remembered `fun` is seen
        assert g(x) == 2.0 and g(x) == 2.0
        assert fast(g, x) and not fast(g3, x)  # learned for g: g3 may not borrow it
        assert g3(x) == 3.0 and g3(x) == 3.0
        assert fast(g3, x) and not fast(g, x)  # learned for g3, with g3's arrays
        assert g3(x) == 3.0


def test_a_dropped_copy_of_a_wrapper_frees_its_arrays():
    g = ec.filter_jit(Scale(jnp.array(2.0)))
    g(jnp.array(1.0))
    g3 = jax.tree.map(lambda a: a + 1 if ec.is_array(a) else a, g)
    assert g3(jnp.array(1.0)) == 3.0 and g3(jnp.array(1.0)) == 3.0  # remembered now
    assert fast(g3, jnp.array(1.0))
    scale = weakref.ref(g3.fun.factor)
    del g3
    gc.collect()
    assert scale() is None  # without calling g again
    assert g(jnp.array(1.0)) == 2.0


@pytest.mark.parametrize("make", [lambda: jnp.ones((512, 512)), lambda: np.ones((512, 512))])
def test_no_array_outlives_its_caller(make):
    f = ec.filter_jit(lambda model, x: (Scale(model.factor + x.sum()), model(x).sum()))
    big, small = make(), make()
    model = Scale(small)
    refs = [weakref.ref(big), weakref.ref(model), weakref.ref(small)]
    out, _ = f(model, big)
    out, _ = f(model, big)  # the fast path: model and big remembered or gathered
    out, _ = f(out, big)  # an output fed back
    refs.append(weakref.ref(out))
    refs.append(weakref.ref(out.factor))
    assert all(r() is not None for r in refs)
    del big, small, model, out
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    assert not f.memo.known  # and their entries are gone  # pyright: ignore[reportFunctionMemberAccess]


def test_fast_path_can_be_turned_off(monkeypatch):
    model = Scale(jnp.array(2.0))
    on = ec.filter_jit(lambda m, x: m(x))
    monkeypatch.setenv("ECLIPTIC_FAST_PATH", "0")
    off = ec.filter_jit(lambda m, x: m(x))
    for f in (on, off):
        f(model, jnp.array(1.0)), f(model, jnp.array(1.0))
    assert fast(on, model, jnp.array(1.0)) and not fast(off, model, jnp.array(1.0))
    # Bypassing immutability (the contract the fast path relies on) is only seen without it.
    object.__setattr__(model, "factor", jnp.array(5.0))
    assert off(model, jnp.array(1.0)) == 5.0
    assert on(model, jnp.array(1.0)) == 2.0  # documented: stale with the fast path on


def test_fun_swap_is_one_store():
    g = ec.filter_jit(Scale(jnp.array(2.0)))
    g(jnp.array(1.0)), g(jnp.array(1.0))
    current = g.memo.current  # pyright: ignore[reportFunctionMemberAccess]
    assert isinstance(current, tuple) and current[0]() is g.fun  # pyright: ignore[reportFunctionMemberAccess]
    assert len(current[1]) == 1 and current[1][0] is g.fun.factor  # pyright: ignore[reportFunctionMemberAccess]


class Holder(ec.Module):
    items: list

    def __call__(self, x):
        return x * self.items[0]


def test_fun_holding_a_list_never_takes_the_fast_path():
    f = ec.filter_jit(Holder([2.0]))
    assert f(jnp.array(1.0)) == 2.0 and f(jnp.array(1.0)) == 2.0
    f.fun.items[0] = 5.0  # a static leaf changed in place  # pyright: ignore[reportFunctionMemberAccess]
    assert f(jnp.array(1.0)) == 5.0
    assert f.memo.disabled  # pyright: ignore[reportFunctionMemberAccess]


def test_methods_and_bound_instances():
    class Model(ec.Module):
        factor: jax.Array

        @ec.filter_jit
        def apply(self, x):
            return self.factor * x

    a, b = Model(jnp.array(2.0)), Model(jnp.array(3.0))
    for _ in range(3):
        assert a.apply(jnp.array(1.0)) == 2.0
        assert b.apply(jnp.array(1.0)) == 3.0


def test_tables_stay_bounded():
    f = ec.filter_jit(lambda model, x: Scale(model.factor * x))
    keep = []
    model = Scale(jnp.array(1.0))
    for _ in range(300):
        model = f(model, jnp.array(1.0))
        keep.append(model)  # every output stays alive
    assert len(f.memo.known) <= 256  # pyright: ignore[reportFunctionMemberAccess]
    assert f(keep[0], jnp.array(2.0)).factor == 2.0


def test_learning_backs_off_when_it_never_helps_and_comes_back():
    f = ec.filter_jit(lambda model, x: Scale(model.factor * x))
    for i in range(100):  # a fresh, unknown model every call: the ordinary path
        assert f(Scale(jnp.array(float(i))), jnp.array(2.0)).factor == 2.0 * i
    assert f.memo.misses == 100  # pyright: ignore[reportFunctionMemberAccess]
    model, fast_calls = Scale(jnp.array(1.0)), []
    for _ in range(40):  # outputs fed back: the fast path is found again
        fast_calls.append(fast(f, model, jnp.array(1.0)))
        model = f(model, jnp.array(1.0))
    assert fast_calls[-5:] == [True] * 5 and f.memo.misses == 0  # pyright: ignore[reportFunctionMemberAccess]
