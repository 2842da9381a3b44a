"""ecliptic.debug: announce_transform, assert_max_traces, breakpoint_if, backward_nan,
store_dce / inspect_dce."""

import io
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ecl
from ecliptic import debug

JitError = (jax.errors.JaxRuntimeError, ValueError)


# -- announce_transform ---------------------------------------------------------------


def _announced(fn, *args, **kwargs):
    said = []
    fn(lambda x: debug.announce_transform(x, announce=said.append, **kwargs), *args)
    return said


def test_announce_transform_stages():
    x = jnp.arange(3.0)
    assert _announced(lambda g, x: g(x), x) == ["impl"]
    assert _announced(lambda g, x: jax.jit(g)(x), x) == ["trace", "lower"]
    assert "vmap:impl" in _announced(lambda g, x: jax.vmap(g)(x), x)
    grad = _announced(lambda g, x: jax.jit(jax.grad(lambda v: jnp.sum(g(v) ** 2)))(x), x)
    assert "jvp_primal:lower" in grad and "jvp_tangent:transpose:lower" in grad
    jvp = _announced(lambda g, x: jax.jvp(g, (x,), (x,)), x)
    assert jvp == ["jvp_primal:impl", "jvp_tangent:impl"]


def test_announce_transform_intermediates_name_and_identity():
    said = []

    def f(a):
        out = debug.announce_transform({"a": a, "b": "static"}, "t", True, said.append)
        assert out["b"] == "static"
        return out["a"]

    x = jnp.arange(3.0)
    np.testing.assert_array_equal(jax.jit(jax.vmap(f))(x), x)
    assert "(t) vmap" in said and "(t) vmap:trace" in said
    # The older signature: a bool in second position is `outer`.
    said.clear()
    debug.announce_transform(jnp.ones(2), False, announce=said.append)
    assert said == ["impl"]
    grads = jax.grad(lambda v: jnp.sum(debug.announce_transform(v, announce=said.append)))(
        jnp.ones(2)
    )
    np.testing.assert_array_equal(grads, jnp.ones(2))


# -- assert_max_traces / get_num_traces -----------------------------------------------


def test_assert_max_traces_counts_and_raises():
    @jax.jit
    @debug.assert_max_traces(max_traces=1)
    def f(x):
        return x + 1

    f(jnp.ones(3))
    f(jnp.zeros(3))
    assert debug.get_num_traces(f) == 1
    with pytest.raises(debug.MaxTracesExceededError) as info:
        f(jnp.ones(4))
    assert isinstance(info.value, AssertionError) and isinstance(info.value, RuntimeError)
    assert "test_debug" in str(info.value) and ".f`" in str(info.value)
    assert "traced 2 times" in str(info.value) and "at most 1" in str(info.value)
    assert "can only be traced 1 times" in str(info.value)  # Equinox's wording


def test_counts_are_per_function_object():
    def g(x):
        return x * 2

    a = jax.jit(debug.assert_max_traces(g, max_traces=None))
    b = jax.jit(debug.assert_max_traces(g, max_traces=None))
    a(1.0)
    a(jnp.ones(2))
    b(1.0)
    assert debug.get_num_traces(a) == 2
    assert debug.get_num_traces(b) == 1


def test_assert_max_traces_with_filter_jit_and_methods():
    class Scale(ecl.Module):
        w: jax.Array

        @debug.assert_max_traces(max_traces=1)
        def __call__(self, x):
            return self.w * x

    model = Scale(jnp.ones(2))
    f = ecl.filter_jit(model)
    f(jnp.array(2.0))
    f(jnp.array(3.0))
    assert debug.get_num_traces(Scale.__call__) == 1
    g = ecl.filter_jit(debug.assert_max_traces(lambda x, n: x * n, max_traces=5))
    g(jnp.ones(2), 1)
    g(jnp.ones(2), 2)  # a new static value: a new trace
    assert debug.get_num_traces(g) == 2


def test_assert_max_traces_validation():
    with pytest.raises(ValueError, match="non-negative int or None; got -1"):
        debug.assert_max_traces(lambda x: x, max_traces=-1)
    with pytest.raises(TypeError, match="must be callable"):
        debug.assert_max_traces(3, max_traces=1)  # pyright: ignore[reportArgumentType, reportCallIssue]
    with pytest.raises(ValueError, match="not .* decorated with"):
        debug.get_num_traces(jax.jit(lambda x: x))


# -- breakpoint_if --------------------------------------------------------------------


def test_breakpoint_if(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("c\nc\n"))
    f = jax.jit(lambda x: debug.breakpoint_if(x < 0))
    f(jnp.array([1.0, 2.0]))
    assert "Entering jdb" not in capsys.readouterr().out
    f(jnp.array([1.0, -2.0]))
    assert capsys.readouterr().out.count("Entering jdb") == 1
    debug.breakpoint_if(False)  # concrete: nothing to do
    with pytest.raises(TypeError, match="`pred` must be a boolean"):
        debug.breakpoint_if(jnp.ones(2))


def test_breakpoint_if_under_vmap_is_silent_when_false(capsys):
    jax.jit(jax.vmap(lambda x: debug.breakpoint_if(x < 0)))(jnp.ones(3))
    assert "Entering jdb" not in capsys.readouterr().out


# -- backward_nan ---------------------------------------------------------------------


def _loss(x, **kwargs):
    h = debug.backward_nan(x, name="h", **kwargs)
    return jnp.sum(jnp.sqrt(h))  # d sqrt / dh is NaN for h < 0


def test_backward_nan_forward_identity_and_clean_backward(capsys):
    x = jnp.array([1.0, 4.0])
    np.testing.assert_array_equal(debug.backward_nan(x), x)
    np.testing.assert_allclose(jax.jit(jax.grad(_loss))(x), [0.5, 0.25])
    assert capsys.readouterr().out == ""
    tree = (x, jnp.arange(2), "s")
    assert debug.backward_nan(tree)[2] == "s"


def test_backward_nan_terminates():
    x = jnp.array([-1.0, 4.0])
    with pytest.raises(ecl.EclipticRuntimeError, match=r"backward_nan 'h'.*contains NaN"):
        jax.grad(_loss)(x)
    with pytest.raises(JitError, match="backward_nan 'h'"):
        jax.jit(jax.grad(_loss))(x)
    with pytest.raises(ecl.EclipticRuntimeError, match=r"leaf 0 \(f32\[2\]\): 1 NaN"):
        ecl.filter_jit(jax.grad(_loss))(x)


def test_backward_nan_reports_without_terminating(capsys):
    x = jnp.array([[-1.0, 4.0], [1.0, 1.0]])
    f = jax.jit(jax.vmap(jax.grad(lambda v: _loss(v, terminate=False))))
    g = f(x)
    assert np.isnan(g[0, 0]) and not np.isnan(g[1]).any()
    out = capsys.readouterr().out
    # Equinox's layout, for the one batch position with a NaN
    assert out == (
        "(batch position (0,))\n"
        "h:\n   primals=array([-1.,  4.], dtype=float32)\n"
        "cotangents=array([ nan, 0.25], dtype=float32)\n"
    )


def test_backward_nan_report_layout_is_equinox_and_scalar_cotangents_work(capsys):
    @ecl.filter_custom_vjp
    def nan_gradient(x):
        return x

    @nan_gradient.def_fwd
    def nan_gradient_fwd(perturbed, x):
        return nan_gradient(x), None

    @nan_gradient.def_bwd
    def nan_gradient_bwd(residual, grad_x, perturbed, x):
        return jnp.nan  # a Python float as the cotangent

    def loss(x, terminate):
        return nan_gradient(debug.backward_nan(x, name="foo", terminate=terminate))

    jax.grad(loss)(jnp.array(1.0), False)
    jax.effects_barrier()
    out = capsys.readouterr().out
    expected = "foo:\n   primals=array(1., dtype=float32)\ncotangents=array(nan, dtype=float32)\n"
    assert out == expected
    tree = {"w": jnp.array([1.0, -1.0]), "n": jnp.arange(2)}
    jax.grad(lambda t: jnp.sqrt(debug.backward_nan(t, terminate=False)["w"]).sum(), allow_int=True)(
        tree
    )
    jax.effects_barrier()
    out = capsys.readouterr().out
    assert out.startswith("   primals={") and "'n': None" in out and "nan" in out
    with pytest.raises(ecl.EclipticRuntimeError, match=r"Encountered NaN: backward_nan 'foo'"):
        jax.grad(loss)(jnp.array(1.0), True)


# -- store_dce / inspect_dce ----------------------------------------------------------


def test_store_dce_and_inspect(capsys):
    @jax.jit
    def f(x):
        a, b, label = debug.store_dce((x * 2, x + 1, "label"), name="test-f")
        return a

    f(jnp.ones(3))
    assert debug.inspect_dce("test-f") == [(False, True, "label")]
    printed = capsys.readouterr().out
    assert "Found 1 store_dce call named 'test-f'" in printed
    assert "(f32[3], <DCE'd>, 'label')" in printed
    assert debug.inspect_dce("test-f", clear=True) == [(False, True, "label")]
    assert debug.inspect_dce("test-f") == []


def test_store_dce_under_vmap_and_outside_jit():
    g = jax.jit(jax.vmap(lambda x: debug.store_dce(x, name="test-g") * 2))
    np.testing.assert_array_equal(g(jnp.ones((2, 3))), 2 * jnp.ones((2, 3)))
    assert debug.inspect_dce("test-g", clear=True) == [False]
    with pytest.raises(RuntimeError, match="inside a jax.jit"):
        debug.store_dce(jnp.ones(2))
    with pytest.raises(TypeError, match="hashable"):
        jax.jit(lambda x: debug.store_dce(x, name=[1]))(jnp.ones(2))  # pyright: ignore[reportArgumentType]
