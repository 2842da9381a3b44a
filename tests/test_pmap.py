"""filter_pmap, on 8 virtual CPU devices (see conftest.py)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as eqx

N = 8


class Affine(eqx.Module):
    weight: jax.Array
    bias: jax.Array
    activation: Callable = jax.nn.tanh
    name: str = eqx.field(static=True, default="affine")

    def __call__(self, x):
        return self.activation(self.weight @ x + self.bias)


@pytest.fixture(scope="module")
def model():
    kw, kb = jax.random.split(jax.random.key(0))
    return Affine(jax.random.normal(kw, (3, 4)), jax.random.normal(kb, (3,)))


@pytest.fixture(scope="module")
def xs():
    return jax.random.normal(jax.random.key(1), (N, 4))


def test_matches_jax_pmap_on_the_partitioned_tree(model, xs):
    out = eqx.filter_pmap(lambda m, x: m(x), in_axes=(None, 0))(model, xs)
    params, static = eqx.partition(model, eqx.is_array)
    expected = jax.pmap(lambda p, x: eqx.combine(p, static)(x), in_axes=(None, 0))(params, xs)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(out, jax.vmap(model)(xs), rtol=1e-5, atol=1e-6)


def test_one_model_per_device_by_default(model, xs):
    keys = jax.random.split(jax.random.key(2), N)
    weights = jax.vmap(lambda k: jax.random.normal(k, (3, 4)))(keys)
    models = Affine(weights, jnp.broadcast_to(model.bias, (N, 3)))
    out = eqx.filter_pmap(lambda m, x: m(x))(models, xs)  # every array mapped on axis 0
    params, static = eqx.partition(models, eqx.is_array)
    expected = jax.pmap(lambda p, x: eqx.combine(p, static)(x))(params, xs)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_module_as_the_function_is_broadcast(model, xs):
    np.testing.assert_allclose(eqx.filter_pmap(model)(xs), jax.vmap(model)(xs), rtol=1e-5)


def test_static_arguments_compile_once_per_value(xs):
    traces = []

    @eqx.filter_pmap
    def f(x, scale, mode):
        traces.append(mode)
        return x * scale if mode == "mul" else x + scale

    # Each compilation traces twice, as in Equinox: abstract evaluation, then jax.pmap.
    np.testing.assert_allclose(f(xs, 2.0, "mul"), xs * 2)
    np.testing.assert_allclose(f(xs + 1, 2.0, "mul"), (xs + 1) * 2)
    assert len(traces) == 2
    np.testing.assert_allclose(f(xs, 2.0, "add"), xs + 2)
    np.testing.assert_allclose(f(xs, 3.0, "mul"), xs * 3)
    assert len(traces) == 6
    f(xs, 2.0, "mul")
    assert len(traces) == 6


def test_axis_name_collectives_and_unmapped_outputs(xs):
    @eqx.filter_pmap(axis_name="devices", out_axes=(0, None, None))
    def f(x):
        total = jax.lax.psum(x, "devices")
        return x - jax.lax.pmean(x, "devices"), total, "label"

    centred, total, label = f(xs)
    np.testing.assert_allclose(centred, xs - xs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(total, xs.sum(0), rtol=1e-5)
    assert total.shape == (4,) and label == "label"


def test_in_axes_and_out_axes_prefixes():
    x = jnp.arange(3.0 * N).reshape(3, N)
    y = jnp.arange(3.0)
    f = eqx.filter_pmap(lambda x, y: x + y, in_axes=(1, None), out_axes=1)
    np.testing.assert_allclose(f(x, y), x + y[:, None])
    g = eqx.filter_pmap(lambda t: t["a"] * t["b"], in_axes=({"a": 0, "b": None},))
    np.testing.assert_allclose(g({"a": x.T, "b": y}), x.T * y)
    h = eqx.filter_pmap(lambda x: 2 * x, in_axes=-1, out_axes=-1)
    np.testing.assert_allclose(h(x), 2 * x)
    named = eqx.filter_pmap(lambda x, y: x * y, in_axes={"y": None})
    np.testing.assert_allclose(named(x.T, y), x.T * y)
    callable_spec = eqx.filter_pmap(
        lambda x, y: x * y, in_axes=lambda leaf: 0 if leaf.ndim == 2 else None
    )
    np.testing.assert_allclose(callable_spec(x.T, y), x.T * y)


def test_axis_size_without_mapped_inputs():
    out = eqx.filter_pmap(lambda c: jnp.full(2, c), in_axes=None, axis_size=4)(jnp.float32(3))
    np.testing.assert_allclose(out, jnp.full((4, 2), 3.0))


def test_method_decorator(xs):
    class Scaler(eqx.Module):
        scale: jax.Array

        @eqx.filter_pmap(in_axes=(None, 0))
        def apply(self, x):
            return self.scale * x

    np.testing.assert_allclose(Scaler(jnp.float32(3)).apply(xs), 3 * xs)


@pytest.mark.filterwarnings("ignore:Some donated buffers")
@pytest.mark.parametrize("donate", ["none", "all", "all-except-first", "warn"])
def test_donation(donate, xs):
    f = eqx.filter_pmap(lambda a, b: (a * b + 1, b), donate=donate)
    a, b = f(xs, jnp.full_like(xs, 2.0))  # outputs already laid out over the devices
    # (Not read on the host before the second call: from JAX 0.11, jax.pmap itself
    # keeps an array it has copied to the host alive when it is donated.)
    out, _ = f(a, b)
    np.testing.assert_allclose(out, (xs * 2 + 1) * 2 + 1, rtol=1e-6)
    assert a.is_deleted() == (donate in ("all", "warn"))
    assert b.is_deleted() == (donate != "none")


def test_lower_and_compile(xs):
    f = eqx.filter_pmap(lambda x, k: x * k, axis_name="i")
    lowered = f.lower(xs, 3)  # pyright: ignore[reportFunctionMemberAccess]
    assert "stablehlo" in lowered.as_text() or "func" in lowered.as_text()
    compiled = lowered.compile()
    np.testing.assert_allclose(compiled(xs, 3), xs * 3)


def test_errors(xs):
    with pytest.raises(ValueError, match="size 16, but only 8 device"):
        eqx.filter_pmap(lambda x: x)(jnp.ones((16, 2)))
    with pytest.raises(ValueError, match="inconsistent sizes"):
        eqx.filter_pmap(lambda x, y: x + y)(jnp.ones(8), jnp.ones(4))
    with pytest.raises(ValueError, match="only arrays can be batched"):
        eqx.filter_pmap(lambda x, y: x, in_axes=(0, 0))(xs, 3)
    with pytest.raises(RuntimeError, match="positional arguments only"):  # also a TypeError
        eqx.filter_pmap(lambda x: x)(x=xs)
    with pytest.raises(ValueError, match="donate"):
        eqx.filter_pmap(lambda x: x, donate="some")
    with pytest.raises(TypeError, match="static_broadcasted_argnums"):
        eqx.filter_pmap(lambda x: x, static_broadcasted_argnums=1)
    with pytest.raises(TypeError, match="callable"):
        eqx.filter_pmap(3)  # pyright: ignore[reportArgumentType, reportCallIssue]


def test_unhashable_static_argument_is_named(xs):
    class Options:
        __hash__ = None  # pyright: ignore[reportAssignmentType]

    with pytest.raises(TypeError, match=r"filter_pmap: the non-array leaf .* unhashable type"):
        eqx.filter_pmap(lambda x, options: x)(xs, Options())


def test_a_fresh_wrapper_per_call_does_not_retrace(xs):
    traces = []

    class Counted(eqx.Module):
        offset: jax.Array

        def apply(self, x):
            traces.append("apply")
            return x + self.offset

    def step(x):
        traces.append("step")
        return 2.0 * x

    model = Counted(jnp.float32(1.0))
    for _ in range(3):
        np.testing.assert_allclose(eqx.filter_pmap(step)(xs), 2.0 * xs)
        # a fresh bound method each time, too
        np.testing.assert_allclose(eqx.filter_pmap(model.apply)(xs), xs + 1.0)
    assert traces == ["step", "step", "apply", "apply"]  # abstract evaluation + pmap


def test_python_number_output_with_an_output_axis_is_batched():
    out = eqx.filter_pmap(lambda: 3, out_axes=0, axis_size=N)()
    assert isinstance(out, jax.Array)
    np.testing.assert_array_equal(out, np.full(N, 3))
    # with the default out_axes, it is returned as it is
    assert eqx.filter_pmap(lambda: 3, axis_size=N)() == 3


class _TraceCounter:
    """A function that records how many times its body runs, i.e. how often it is traced."""

    def __init__(self, body):
        self.body = body
        self.count = 0

    def __call__(self, *args):
        self.count += 1
        return self.body(*args)

    def new_traces(self, call):
        before = self.count
        call()
        return self.count - before


def test_each_compilation_traces_twice_as_in_equinox(xs):
    # Equinox traces the function once abstractly (to learn its output) and once under
    # jax.pmap for every new compilation, and not at all for a cached call. Code that
    # counts traces must see the same numbers under ecliptic.
    f = _TraceCounter(lambda x, scale: x * scale)
    g = eqx.filter_pmap(f)
    assert f.new_traces(lambda: g(xs, 2)) == 2
    assert f.new_traces(lambda: g(xs + 1.0, 2)) == 0  # same shapes and static value
    assert f.new_traces(lambda: eqx.filter_pmap(f)(xs, 2)) == 0  # a fresh wrapper
    assert f.new_traces(lambda: g(xs, 3)) == 2  # a new static value
    assert f.new_traces(lambda: g(xs[:, :2], 3)) == 2  # a new shape
    assert f.new_traces(lambda: g(xs.astype(jnp.float16), 3)) == 2  # a new dtype
    assert f.new_traces(lambda: g(xs[:, :2], 3)) == 0
    # ahead-of-time: lowering compiles like a call, and the compiled call traces nothing
    assert f.new_traces(lambda: g.lower(xs, 2).compile()) == 0  # pyright: ignore[reportFunctionMemberAccess]
    lowered = f.new_traces(lambda: g.lower(xs[:, :1], 2))  # pyright: ignore[reportFunctionMemberAccess]
    assert lowered == 2
    assert f.new_traces(lambda: g(xs[:, :1], 2)) == 0
    # clear_caches forgets the abstract evaluations too
    eqx.clear_caches()
    assert f.new_traces(lambda: g(xs, 2)) == 2


@pytest.mark.filterwarnings("ignore:Some donated buffers")
@pytest.mark.parametrize("donate", ["none", "all", "all-except-first", "warn"])
def test_trace_count_with_donation_methods_and_unmapped_inputs(donate):
    f = _TraceCounter(lambda a, b: a * b)
    g = eqx.filter_pmap(f, donate=donate)
    assert f.new_traces(lambda: g(jnp.ones((N, 2)), jnp.ones((N, 2)))) == 2
    assert f.new_traces(lambda: g(jnp.ones((N, 2)), jnp.ones((N, 2)))) == 0

    # no mapped input: the device count comes from axis_size
    h = eqx.filter_pmap(f, in_axes=None, axis_size=4, donate=donate)
    assert f.new_traces(lambda: h(jnp.ones(3), jnp.float32(2))) == 2
    out = h(jnp.ones(3), jnp.float32(2))
    np.testing.assert_allclose(out, np.full((4, 3), 2.0))
    assert f.count == 4

    counter = _TraceCounter(lambda self, x: x + self.offset)

    class Shifted(eqx.Module):
        offset: int

        @eqx.filter_pmap(donate=donate)
        def apply(self, x):
            return counter(self, x)

    x = jnp.arange(float(N))
    assert counter.new_traces(lambda: Shifted(1).apply(x)) == 2
    assert counter.new_traces(lambda: Shifted(1).apply(x + 1)) == 0
    assert counter.new_traces(lambda: Shifted(2).apply(x)) == 2  # a new static field
    np.testing.assert_allclose(Shifted(2).apply(x), np.arange(N) + 2.0)


def test_collectives_trace_twice_and_out_axes_are_placed_by_pmap(xs):
    f = _TraceCounter(lambda x: (x, jax.lax.psum(x, "d")))
    g = eqx.filter_pmap(f, axis_name="d", out_axes=(1, None))
    assert f.new_traces(lambda: g(xs)) == 2  # the abstract evaluation knows the axis name
    spread, total = g(xs)
    np.testing.assert_allclose(spread, np.asarray(xs).T)
    np.testing.assert_allclose(total, np.asarray(xs).sum(0), rtol=1e-6)
    # a negative out_axes counts from the end of the output with its device axis
    h = eqx.filter_pmap(lambda x: x[:, None] * 2, out_axes=-1)
    np.testing.assert_allclose(h(xs), 2 * np.asarray(xs)[:, :, None].transpose(1, 2, 0))
    expected = jax.pmap(lambda x: x[:, None] * 2, out_axes=2)(xs)
    np.testing.assert_allclose(h(xs), expected)


def test_out_axes_out_of_range_fails_before_compiling(xs):
    f = _TraceCounter(lambda x: x)
    with pytest.raises(ValueError, match=r"out_axes must be in \[-2, 1\]"):
        eqx.filter_pmap(f, out_axes=2)(xs)
    assert f.count == 1  # only the abstract evaluation ran


def test_an_output_structure_that_changes_between_traces_is_named():
    traces = []

    def grows(x):  # returns one more output each time it is traced
        traces.append(None)
        return tuple(x for _ in traces)

    with pytest.raises(RuntimeError, match="different output structure when traced again"):
        eqx.filter_pmap(grows)(jnp.ones(N))
