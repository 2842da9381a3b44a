"""filter_grad / value_and_grad / jvp / vjp / jacfwd / jacrev / hessian.

Every numerical result is checked against an independent reference: the plain JAX
transformation applied to the partitioned tree, finite differences, or calculus by hand.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec


class Net(ec.Module):
    weight: jax.Array
    bias: jax.Array
    count: int  # Python int leaf
    activation: Callable  # function leaf
    mask: jax.Array  # bool array
    index: jax.Array  # int array
    name: str = ec.field(static=True, default="net")

    def __call__(self, x):
        y = self.activation(self.weight @ x + self.bias) * self.count
        return jnp.where(self.mask, y, 0.0)[self.index]

    def loss(self, x):
        return jnp.sum(self(x) ** 2)

    @ec.filter_grad
    def grad_loss(self, x):
        return jnp.sum(self(x) ** 2)


def make_net():
    w = jnp.array([[0.3, -0.2, 0.5], [0.1, 0.4, -0.6]])
    return Net(w, jnp.array([0.1, -0.3]), 2, jnp.tanh, jnp.array([True, True]), jnp.array([1, 0]))


X = jnp.array([0.5, -1.0, 2.0])


def reference_grad(fun, tree, *args):
    """jax.grad w.r.t. the inexact arrays of `tree`, done by hand with partition/combine."""
    params, rest = ec.partition(tree, ec.is_inexact_array)
    return jax.grad(lambda p: fun(ec.combine(p, rest), *args))(params)


def assert_tree_close(a, b, **kw):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, **kw)


def loss_fn(model, x):
    return model.loss(x)


# -- filter_grad / filter_value_and_grad ---------------------------------------------------


def test_grad_matches_partitioned_jax_grad_and_none_for_nondifferentiable():
    net = make_net()
    grads = ec.filter_grad(loss_fn)(net, X)
    assert isinstance(grads, Net)
    assert grads.count is None and grads.activation is None
    assert grads.mask is None and grads.index is None
    assert grads.name == "net"  # static fields stay in the structure
    assert_tree_close(grads, reference_grad(loss_fn, net, X))


def test_grad_matches_finite_differences():
    def f(tree, scale):
        return jnp.sum(jnp.sin(tree["a"]) * tree["b"][0]) * scale

    tree = {"a": jnp.array([0.3, -1.2]), "b": (jnp.array(0.7), 3), "c": "text"}
    grads = ec.filter_grad(f)(tree, 2.0)
    assert grads["b"][1] is None and grads["c"] is None
    eps = 1e-3
    for i in range(2):
        bump = jnp.zeros(2).at[i].set(eps)
        hi = f({**tree, "a": tree["a"] + bump}, 2.0)
        lo = f({**tree, "a": tree["a"] - bump}, 2.0)
        np.testing.assert_allclose(grads["a"][i], (hi - lo) / (2 * eps), rtol=1e-2)
    # analytic: d/db0 = 2 * sum(sin(a))
    np.testing.assert_allclose(grads["b"][0], 2 * jnp.sum(jnp.sin(tree["a"])), rtol=1e-6)


def test_python_floats_in_first_argument_are_not_differentiated():
    grads = ec.filter_grad(lambda t: jnp.sum(t[0] * t[1]))((jnp.array([1.0, 2.0]), 3.0))
    np.testing.assert_allclose(grads[0], [3.0, 3.0])
    assert grads[1] is None


def test_value_and_grad_and_has_aux():
    net = make_net()
    value, grads = ec.filter_value_and_grad(loss_fn)(net, X)
    np.testing.assert_allclose(value, loss_fn(net, X), rtol=1e-6)
    assert_tree_close(grads, reference_grad(loss_fn, net, X))

    def with_aux(model, x):
        return model.loss(x), {"out": model(x), "tag": "aux"}

    (value2, aux), grads2 = ec.filter_value_and_grad(with_aux, has_aux=True)(net, X)
    np.testing.assert_allclose(value2, value, rtol=1e-6)
    assert aux["tag"] == "aux"
    np.testing.assert_allclose(aux["out"], net(X), rtol=1e-6)
    assert_tree_close(grads2, grads)
    grads3, aux3 = ec.filter_grad(with_aux, has_aux=True)(net, X)
    assert aux3["tag"] == "aux"
    assert_tree_close(grads3, grads)


def test_decorator_forms():
    @ec.filter_grad
    def a(x):
        return jnp.sum(x**2)

    @ec.filter_grad()
    def b(x):
        return jnp.sum(x**2)

    @ec.filter_grad(has_aux=True)
    def c(x):
        return jnp.sum(x**2), 1

    @ec.filter_value_and_grad(has_aux=True)
    def d(x):
        return jnp.sum(x**2), 1

    x = jnp.array([1.0, -2.0])
    for g in (a(x), b(x), c(x)[0], d(x)[1]):
        np.testing.assert_allclose(g, 2 * x)
    assert c(x)[1] == 1 and a.__name__ == "a"


def test_methods_and_bound_methods():
    net = make_net()
    reference = reference_grad(loss_fn, net, X)
    # decorated method: differentiates w.r.t. the instance
    assert_tree_close(net.grad_loss(X), reference)
    # a bound method is a pytree: filter_grad(net.loss) differentiates w.r.t. x
    grad_x = ec.filter_grad(net.loss)(X)
    np.testing.assert_allclose(grad_x, jax.grad(net.loss)(X), rtol=1e-6)
    # the unbound function differentiates w.r.t. the instance
    assert_tree_close(ec.filter_grad(Net.loss)(net, X), reference)


def test_other_arguments_may_be_traced():
    # d/dy sum(d/dx sum(x * y**2)) = d/dy sum(y**2) = 2 y: y is a tracer inside filter_grad
    def inner(x, y):
        return jnp.sum(x * y**2)

    x, y = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.5])
    mixed = jax.grad(lambda y: jnp.sum(ec.filter_grad(inner)(x, y)))(y)
    np.testing.assert_allclose(mixed, 2 * y)
    # keyword arguments pass through too
    g = ec.filter_grad(lambda x, *, k: jnp.sum(x * k))(x, k=y)
    np.testing.assert_allclose(g, y)


def test_nesting_grad_of_grad_jit_and_vmap():
    cube_grad = ec.filter_grad(lambda x: jnp.sum(x**3))
    second = ec.filter_grad(lambda x: jnp.sum(cube_grad(x)))
    x = jnp.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(second(x), 6 * x, rtol=1e-6)

    net = make_net()
    jitted = ec.filter_jit(ec.filter_grad(loss_fn))
    assert_tree_close(jitted(net, X), reference_grad(loss_fn, net, X))

    @ec.filter_jit
    def step(model, x):
        return ec.filter_grad(loss_fn)(model, x)

    assert_tree_close(step(net, X), reference_grad(loss_fn, net, X))

    xs = jnp.stack([X, 2 * X, -X])
    per_example = jax.vmap(ec.filter_grad(lambda x, m: m.loss(x)), in_axes=(0, None))(xs, net)
    for i in range(3):
        np.testing.assert_allclose(per_example[i], jax.grad(net.loss)(xs[i]), rtol=1e-5)


def test_grad_wrapper_is_a_pytree_holding_the_function():
    net = make_net()
    wrapped = ec.filter_grad(net.loss)
    leaves = jax.tree_util.tree_leaves(wrapped)
    assert any(leaf is net.weight for leaf in leaves)


def test_grad_errors():
    with pytest.raises(TypeError, match=r"first argument `x`.*1 x Python float.*jnp.asarray"):
        ec.filter_grad(lambda x: x * 2)(1.0)
    with pytest.raises(TypeError, match=r"int32 array.*astype"):
        ec.filter_grad(lambda x: jnp.sum(x))(jnp.arange(3))
    with pytest.raises(TypeError, match="no pytree leaves"):
        ec.filter_grad(lambda x: 1.0)(None)
    with pytest.raises(TypeError, match="at least one positional argument"):
        ec.filter_grad(lambda x=1.0: x)()
    with pytest.raises(TypeError, match=r"scalar \(shape \(\)\).*shape \(3,\)"):
        ec.filter_grad(lambda x: x)(jnp.ones(3))
    with pytest.raises(TypeError, match="has_aux=True"):
        ec.filter_grad(lambda x: (jnp.sum(x), 1))(jnp.ones(3))
    with pytest.raises(TypeError, match="must return a pair"):
        ec.filter_grad(lambda x: jnp.sum(x), has_aux=True)(jnp.ones(3))
    with pytest.raises(TypeError, match="dtype int32"):
        ec.filter_grad(lambda x: jnp.sum(x).astype(jnp.int32))(jnp.ones(3))
    with pytest.raises(TypeError, match="argnums"):
        ec.filter_grad(lambda x: x, argnums=1)
    with pytest.raises(TypeError, match="callable"):
        ec.filter_value_and_grad(3)  # pyright: ignore[reportArgumentType, reportCallIssue]


# -- filter_jvp ----------------------------------------------------------------------------


def test_jvp_matches_jax_jvp_with_none_tangents():
    def f(x, y, n, *, scale):
        return {"out": jnp.sin(x) * y * n * scale, "n": n, "ints": jnp.arange(2) * n}

    x, y = jnp.array([0.5, 1.0]), jnp.array(2.0)
    tx = jnp.array([1.0, -1.0])
    out, t_out = ec.filter_jvp(f, (x, y, 3), (tx, None, None), scale=0.5)
    ref_out, ref_t = jax.jvp(lambda x: f(x, y, 3, scale=0.5)["out"], (x,), (tx,))
    np.testing.assert_allclose(out["out"], ref_out)
    np.testing.assert_allclose(t_out["out"], ref_t, rtol=1e-6)
    assert out["n"] == 3 and t_out["n"] is None and t_out["ints"] is None
    np.testing.assert_array_equal(out["ints"], [0, 3])


def test_jvp_python_float_primal_and_zero_tangent_for_nondifferentiable():
    f = lambda x, y, n: x * y * n  # noqa: E731
    # Python floats are differentiable here (like jax.jvp); d = tx*y*n + x*ty*n
    out, t = ec.filter_jvp(f, (jnp.array(2.0), 3.0, 2), (jnp.array(1.0), 1.0, 0))
    np.testing.assert_allclose(out, 12.0)
    np.testing.assert_allclose(t, 1.0 * 3 * 2 + 2.0 * 1.0 * 2)


def test_jvp_errors_name_the_path():
    f = lambda a, b: a["x"] * b  # noqa: E731
    primals = ({"x": jnp.ones(2)}, 2)
    with pytest.raises(ValueError, match=r"primals\[0\]\['x'\].*shape \(3,\)"):
        ec.filter_jvp(f, primals, ({"x": jnp.ones(3)}, None))
    with pytest.raises(ValueError, match=r"at primals\[0\]: expected a dict"):
        ec.filter_jvp(f, primals, ([jnp.ones(2)], None))
    with pytest.raises(ValueError, match=r"primals\[1\] is not a floating-point.*None"):
        ec.filter_jvp(f, primals, ({"x": jnp.ones(2)}, 5))
    with pytest.raises(TypeError, match="tuple or list"):
        ec.filter_jvp(f, {"x": 1}, ({"x": 1},))  # pyright: ignore[reportArgumentType]


# -- filter_vjp ----------------------------------------------------------------------------


def test_vjp_matches_jax_vjp():
    def f(x, extra):
        return {"y": jnp.tanh(x * extra["s"]), "label": "out", "i": extra["i"]}

    x = jnp.array([0.2, -0.4, 1.0])
    extra = {"s": jnp.array(1.5), "i": 7}
    out, vjp_fn = ec.filter_vjp(f, x, extra)
    assert out["label"] == "out" and out["i"] == 7
    ct = jnp.array([1.0, 2.0, -1.0])
    gx, gextra = vjp_fn({"y": ct, "label": None, "i": None})
    _, ref_vjp = jax.vjp(lambda x, s: jnp.tanh(x * s), x, extra["s"])
    rx, rs = ref_vjp(ct)
    np.testing.assert_allclose(gx, rx, rtol=1e-6)
    np.testing.assert_allclose(gextra["s"], rs, rtol=1e-6)
    assert gextra["i"] is None
    # None cotangent means zero; the pullback is a pytree that jit accepts
    zero = jax.jit(lambda fn: fn({"y": None, "label": None, "i": None}))(vjp_fn)
    np.testing.assert_allclose(zero[0], 0.0)


def test_vjp_has_aux_and_errors():
    out, vjp_fn, aux = ec.filter_vjp(lambda x: (x**2, {"a": "b"}), jnp.array(3.0), has_aux=True)
    assert aux == {"a": "b"}
    (g,) = vjp_fn(jnp.array(1.0))
    np.testing.assert_allclose(g, 6.0)
    with pytest.raises(ValueError, match=r"output.*shape \(2,\)"):
        vjp_fn(jnp.ones(2))
    _, vjp2 = ec.filter_vjp(lambda x: (x, x), jnp.array(1.0))
    with pytest.raises(ValueError, match="cotangent must have the same pytree structure"):
        vjp2([1.0, 1.0])


# -- jacobians and hessian ------------------------------------------------------------------


def test_jacfwd_and_jacrev_match_jax():
    def f(tree, c):
        return {"y": jnp.sin(tree["w"]) * c + tree["b"] ** 2, "n": tree["n"]}

    tree = {"w": jnp.array([0.1, 0.2, 0.3]), "b": jnp.array(0.5), "n": 4}

    @ec.filter_jit  # one compilation instead of many eager ones
    def compute(tree):
        ours = (ec.filter_jacfwd(f)(tree, 2.0), ec.filter_jacrev(f)(tree, 2.0))
        ref_w = jax.jacfwd(lambda w: jnp.sin(w) * 2.0 + tree["b"] ** 2)(tree["w"])
        return ours, ref_w

    jacs, ref_w = compute(tree)
    for jac in jacs:
        np.testing.assert_allclose(jac["y"]["w"], ref_w, rtol=1e-6)
        np.testing.assert_allclose(jac["y"]["b"], 2 * tree["b"] * jnp.ones(3), rtol=1e-6)
        assert jac["y"]["n"] is None and jac["n"] is None


def test_jacobian_has_aux_and_error():
    jac, aux = ec.filter_jacrev(lambda x: (x * 3.0, "aux"), has_aux=True)(jnp.ones(2))
    np.testing.assert_allclose(jac, 3.0 * jnp.eye(2))
    assert aux == "aux"
    with pytest.raises(TypeError, match="no floating-point arrays"):
        ec.filter_jacfwd(lambda x: x)(jnp.arange(2))


def test_hessian_matches_analytic_and_jax():
    def f(p):
        return jnp.sum(p["w"] ** 3) + jnp.dot(p["w"], p["v"]) ** 2

    p = {"w": jnp.array([1.0, -0.5]), "v": jnp.array([0.3, 2.0]), "k": 2}

    @ec.filter_jit
    def compute(p):
        ours = ec.filter_hessian(f)(p)
        with_aux = ec.filter_hessian(lambda p: (f(p), 5), has_aux=True)(p)
        ref = jax.hessian(lambda w, v: f({"w": w, "v": v, "k": 2}), argnums=(0, 1))
        return ours, with_aux, ref(p["w"], p["v"])

    hess, (hess2, aux), ref = compute(p)
    np.testing.assert_allclose(hess["w"]["w"], ref[0][0], rtol=1e-5)
    np.testing.assert_allclose(hess["w"]["v"], ref[0][1], rtol=1e-5)
    # analytic: d2/dv2 (w.v)^2 = 2 w w^T; d2/dw2 sum(w^3) + ... = diag(6w) + 2 v v^T
    np.testing.assert_allclose(hess["v"]["v"], 2 * jnp.outer(p["w"], p["w"]), rtol=1e-5)
    expected_ww = jnp.diag(6 * p["w"]) + 2 * jnp.outer(p["v"], p["v"])
    np.testing.assert_allclose(hess["w"]["w"], expected_ww, rtol=1e-5)
    assert hess["k"] is None and hess["w"]["k"] is None
    assert aux == 5
    np.testing.assert_allclose(hess2["w"]["w"], hess["w"]["w"])


# -- filter_jvp: tracers, symbolic zeros, tangent checks ------------------------------------


def test_filter_jvp_on_tracer_primals_inside_jit():
    # Under jit the primal is a tracer; d/dx (x**3) at 2 is 12, times the tangent 0.5.
    @jax.jit
    def run(x):
        return ec.filter_jvp(lambda a: a**3, (x,), (0.5,))

    out, t_out = run(2.0)
    np.testing.assert_allclose(out, 8.0)
    np.testing.assert_allclose(t_out, 6.0)


def test_filter_jvp_gives_none_for_outputs_independent_of_the_perturbed_inputs():
    w = jnp.array([1.0, 2.0])

    def f(x, y):
        return {"depends": 3.0 * x, "other": y + 1.0, "constant": w, "count": 4}

    out, t_out = ec.filter_jvp(f, (jnp.array(2.0), jnp.array(5.0)), (jnp.array(1.0), None))
    np.testing.assert_allclose(t_out["depends"], 3.0)
    assert t_out["other"] is None
    assert t_out["constant"] is None
    assert t_out["count"] is None
    assert out["count"] == 4


def test_nested_filter_jvp_separates_the_two_levels():
    # The inner jvp perturbs y only: x (perturbed by the outer jvp) has a zero inner
    # tangent, so the inner call reports None for it.
    seen = {}

    def outer(x):
        def inner(y):
            return y * y, x

        (_, _), (t_square, t_x) = ec.filter_jvp(inner, (x,), (1.0,))
        seen["t_x"] = t_x
        return t_square

    out, t_out = ec.filter_jvp(outer, (3.0,), (1.0,))
    assert seen["t_x"] is None
    np.testing.assert_allclose(out, 6.0)  # d(y*y)/dy at 3
    np.testing.assert_allclose(t_out, 2.0)  # d(2x)/dx


@pytest.mark.parametrize(
    "tangents",
    [
        (jnp.array(1), None),  # an integer tangent for a floating-point primal
        (None, jnp.array(1.0)),  # a tangent for an integer primal
    ],
)
def test_filter_jvp_rejects_tangents_that_do_not_suit_their_primal(tangents):
    primals = (jnp.array(1.0), jnp.array(1))
    for error in (TypeError, ValueError):  # Equinox raises TypeError; ecliptic ValueError
        with pytest.raises(error, match="filter_jvp"):
            ec.filter_jvp(lambda a, b: a + b, primals, tangents)


def test_filter_jvp_rejects_a_traced_float_tangent_for_an_integer_primal():
    @ec.filter_jit
    def run(t):
        return ec.filter_jvp(lambda a, b: a * b, (jnp.array(2.0), jnp.array(3)), (None, t))

    with pytest.raises(TypeError, match=r"primals\[1\] is not a floating-point array"):
        run(jnp.array(1.0))


def test_grad_needs_its_first_argument_by_position_in_equinox_words():
    with pytest.raises(TypeError, match="Functions wrapped with filter_grad must have"):
        ec.filter_grad(lambda x: x**2)(x=jnp.array(1.0))


def test_is_inexact_array_like_on_tracers():
    kinds = []
    jax.jit(lambda a, b: kinds.extend([ec.is_inexact_array_like(a), ec.is_inexact_array_like(b)]))(
        1.0, 1
    )
    assert kinds == [True, False]
