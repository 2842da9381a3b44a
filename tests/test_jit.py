import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec


class Counter:
    """Counts traces of the function it wraps."""

    def __init__(self, fn):
        self.fn = fn
        self.count = 0

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.fn(*args, **kwargs)


class Affine(ec.Module):
    weight: jax.Array
    bias: jax.Array
    activation: Callable = ec.field(static=True, default=jnp.tanh)

    def __call__(self, x):
        return self.activation(self.weight @ x + self.bias)

    @ec.filter_jit
    def jitted_call(self, x):
        return self(x)


def make_affine(scale=1.0):
    return Affine(scale * jnp.ones((2, 3)), jnp.zeros(2))


def test_arrays_traced_everything_else_static():
    counter = Counter(lambda x, n, flag, name: (x * n if flag else x, name))
    f = ec.filter_jit(counter)
    out, name = f(jnp.ones(3), 2, True, "hello")
    np.testing.assert_array_equal(out, 2 * np.ones(3))
    assert name == "hello"
    f(jnp.zeros(3), 2, True, "hello")
    assert counter.count == 1  # new array values: no retrace
    f(jnp.zeros(3), 3, True, "hello")
    assert counter.count == 2  # new static value: retrace
    f(jnp.zeros(4), 3, True, "hello")
    assert counter.count == 3  # new shape: retrace


def test_numpy_arrays_are_traced_python_scalars_static():
    seen = []
    f = ec.filter_jit(lambda a, b: seen.append((type(a), type(b))) or a * b)
    f(np.ones(2), 2.0)
    assert issubclass(seen[0][0], jax.core.Tracer)  # pyright: ignore[reportAttributeAccessIssue]
    assert seen[0][1] is float


def test_non_array_outputs_returned_as_is():
    sentinel = object()
    out = ec.filter_jit(lambda x: {"y": x + 1, "s": sentinel, "f": jnp.sin})(jnp.ones(2))
    assert out["s"] is sentinel and out["f"] is jnp.sin
    assert isinstance(out["y"], jax.Array)


def test_kwargs_and_modules():
    model = make_affine()
    f = ec.filter_jit(lambda m, x, *, shift: m(x) + shift)
    np.testing.assert_allclose(f(model, jnp.ones(3), shift=jnp.ones(2)), model(jnp.ones(3)) + 1)


def test_decorator_with_and_without_arguments():
    @ec.filter_jit
    def a(x):
        return x + 1

    @ec.filter_jit(donate="none")
    def b(x):
        return x + 2

    assert a(jnp.array(1.0)) == 2.0 and b(jnp.array(1.0)) == 3.0
    assert a.__name__ == "a" and a.__wrapped__.__name__ == "a"  # pyright: ignore[reportFunctionMemberAccess]
    assert a.fn is a.__wrapped__  # Equinox's name for the wrapped function  # pyright: ignore[reportFunctionMemberAccess]


def test_method_decorator_binds_instance_as_pytree():
    model = make_affine()
    np.testing.assert_allclose(model.jitted_call(jnp.ones(3)), model(jnp.ones(3)))
    bound = model.jitted_call
    assert isinstance(bound, ec.Partial)
    # instance arrays are traced, not baked in: a new model gives new results
    other = make_affine(2.0)
    np.testing.assert_allclose(other.jitted_call(jnp.ones(3)), other(jnp.ones(3)))


def test_bound_method_as_fun_is_traced():
    counter = Counter(lambda m, x: m(x))

    class Wrapper(ec.Module):
        inner: Affine

        def __call__(self, x):
            return counter(self.inner, x)

    f1 = ec.filter_jit(Wrapper(make_affine()).__call__)
    f2 = ec.filter_jit(Wrapper(make_affine(3.0)).__call__)
    np.testing.assert_allclose(f2(jnp.ones(3)), make_affine(3.0)(jnp.ones(3)))
    f1(jnp.ones(3))
    assert counter.count == 1  # compiled code shared between wrappers of equal structure


def test_nested_filter_jit_and_inside_jax_jit():
    inner = ec.filter_jit(lambda x, n: x * n)
    outer = ec.filter_jit(lambda x: inner(x, 3))
    assert outer(jnp.array(2.0)) == 6.0
    assert jax.jit(lambda x: inner(x, 2))(jnp.array(2.0)) == 4.0
    assert jax.grad(lambda x: inner(x, 5))(jnp.array(1.0)) == 5.0
    assert jax.vmap(lambda x: inner(x, 2))(jnp.arange(3.0)).tolist() == [0.0, 2.0, 4.0]


@pytest.mark.parametrize("donate", ["all", "all-except-first", "warn", "warn-except-first"])
def test_donation_modes_compute_the_same(donate):
    f = ec.filter_jit(lambda a, b: (a + b, a * b), donate=donate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s, p = f(jnp.arange(3.0), jnp.ones(3))
    np.testing.assert_array_equal(s, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(p, [0.0, 1.0, 2.0])


def test_lower_and_compile_ahead_of_time():
    f = ec.filter_jit(lambda m, x, n: m(x) * n)
    model = make_affine()
    lowered = f.lower(model, jnp.ones(3), 2)  # pyright: ignore[reportFunctionMemberAccess]
    assert "stablehlo" in lowered.as_text() or "func" in lowered.as_text()
    compiled = lowered.compile()
    np.testing.assert_allclose(compiled(model, jnp.ones(3), 2), 2 * model(jnp.ones(3)))


def test_unhashable_static_leaf_error_names_path_and_type():
    f = ec.filter_jit(lambda x, config: x)
    with pytest.raises(TypeError, match=r"args\[1\].*unhashable type set"):
        f(jnp.ones(2), {1, 2})


def test_unhashable_static_field_error_names_field():
    class Holder(ec.Module):
        data: object = ec.field(static=True)

    f = ec.filter_jit(lambda h, x: x * h.data[0])
    # lists compare by value, so they work as static data
    assert f(Holder([2]), jnp.ones(())) == 2.0 and f(Holder([3]), jnp.ones(())) == 3.0
    with pytest.raises(TypeError, match=r"args\[0\]\.data.*jax.*Array"):
        f(Holder(jnp.array([2.0])), jnp.ones(()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="donate"):
        ec.filter_jit(lambda x: x, donate="some")
    with pytest.raises(TypeError, match="static_argnums"):
        ec.filter_jit(lambda x: x, static_argnums=0)
    with pytest.raises(TypeError, match="callable"):
        ec.filter_jit(3)  # pyright: ignore[reportArgumentType, reportCallIssue]


def test_wrapper_is_a_pytree():
    model = make_affine()
    f = ec.filter_jit(model.__call__)
    leaves = jax.tree_util.tree_leaves(f)
    assert len(leaves) == 2
    g = ec.filter_jit(lambda h, x: h(x))
    np.testing.assert_allclose(g(f, jnp.ones(3)), model(jnp.ones(3)))


def test_changing_treedef_retraces_and_stays_correct():
    f = ec.filter_jit(lambda tree: sum(jax.tree_util.tree_leaves(tree)))
    assert f((jnp.array(1.0), jnp.array(2.0))) == 3.0
    assert f([jnp.array(1.0)]) == 1.0
    assert f({"a": jnp.array(4.0), "b": 1.0}) == 5.0


def test_clear_caches_runs():
    f = ec.filter_jit(lambda x: x + 1)
    f(jnp.ones(1))
    ec.clear_caches()
    assert f(jnp.ones(1))[0] == 2.0


def test_unhashable_static_leaf_with_donation_is_reported_clearly():
    f = ec.filter_jit(lambda x, config: x, donate="all")
    with pytest.raises(TypeError, match=r"args\[1\].*unhashable type set"):
        f(jnp.ones(2), {1, 2})


class Accumulator(ec.Module):
    total: jax.Array

    def __call__(self, x):
        return Accumulator(self.total + x), 2.0 * x  # two outputs: room for two donations

    def add(self, x):
        return self(x)


@pytest.mark.filterwarnings("ignore:Some donated buffers")
@pytest.mark.parametrize("donate", ["all", "all-except-first"])
@pytest.mark.parametrize("how", ["instance", "bound method"])
def test_donation_frees_the_buffers_of_the_wrapped_instance(donate, how):
    acc, x = Accumulator(jnp.zeros(1000)), jnp.ones(1000)
    fun = acc if how == "instance" else acc.add
    new, doubled = ec.filter_jit(fun, donate=donate)(x)
    np.testing.assert_array_equal(new.total, np.ones(1000))
    np.testing.assert_array_equal(doubled, np.full(1000, 2.0))
    assert acc.total.is_deleted()  # the instance's arrays are donated in both modes
    assert x.is_deleted() == (donate == "all")  # the first argument is kept by -except-first
