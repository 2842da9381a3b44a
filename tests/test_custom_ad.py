"""filter_custom_jvp and filter_custom_vjp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec

# -- filter_custom_jvp ---------------------------------------------------------------------


def make_call():
    seen = []

    @ec.filter_custom_jvp
    def call(x, y, *, fn):
        return fn(x, y)

    @call.def_jvp
    def call_jvp(primals, tangents, *, fn):
        x, y = primals
        tx, ty = tangents
        seen.append(ty)
        return call(x, y, fn=fn), 2 * tx  # deliberately not the true derivative

    return call, seen


def test_custom_jvp_rule_is_used_and_unperturbed_tangents_are_none():
    call, seen = make_call()
    x, y = jnp.array(2.0), jnp.array(5.0)
    add = lambda a, b: a + b  # noqa: E731
    np.testing.assert_allclose(call(x, y, fn=add), 7.0)
    # only x is differentiated: y's tangent is a symbolic zero, seen as None
    np.testing.assert_allclose(ec.filter_grad(call)(x, y, fn=add), 2.0)
    assert seen == [None]
    # under jit and vmap too
    grads = jax.jit(jax.vmap(lambda x: ec.filter_grad(call)(x, y, fn=add)))(jnp.arange(3.0))
    np.testing.assert_allclose(grads, [2.0, 2.0, 2.0])


def test_custom_jvp_pytrees_with_nondifferentiable_leaves():
    @ec.filter_custom_jvp
    def f(tree, n):
        return {"y": tree["w"] ** 2 * n, "n": n, "i": tree["i"] * 2}

    @f.def_jvp
    def f_jvp(primals, tangents):
        tree, n = primals
        t_tree, t_n = tangents
        assert t_n is None and t_tree["i"] is None and t_tree["tag"] is None
        out = f(tree, n)
        # None for non-float outputs; true derivative for y
        return out, {"y": 2 * tree["w"] * t_tree["w"] * n, "n": None, "i": None}

    tree = {"w": jnp.array([1.0, 3.0]), "i": jnp.array([1, 2]), "tag": "t"}
    out, t_out = ec.filter_jvp(f, (tree, 3), ({"w": jnp.ones(2), "i": None, "tag": None}, None))
    np.testing.assert_allclose(out["y"], [3.0, 27.0])
    np.testing.assert_allclose(t_out["y"], [6.0, 18.0])  # 2 * w * n
    assert out["n"] == 3 and t_out["n"] is None and t_out["i"] is None
    # matches the true derivative computed by jax.jvp on the plain function
    _, ref = jax.jvp(lambda w: w**2 * 3, (tree["w"],), (jnp.ones(2),))
    np.testing.assert_allclose(t_out["y"], ref)


def test_custom_jvp_none_tangent_out_means_zero_and_kwargs_not_differentiated():
    @ec.filter_custom_jvp
    def f(x, *, scale):
        return x * scale

    @f.def_jvp
    def f_jvp(primals, tangents, *, scale):
        return f(*primals, scale=scale), None

    np.testing.assert_allclose(ec.filter_grad(f)(jnp.array(1.0), scale=jnp.array(3.0)), 0.0)
    # a traced float keyword argument is allowed; it gets no tangent
    g = jax.grad(lambda s: f(jnp.array(1.0), scale=s))(jnp.array(3.0))
    np.testing.assert_allclose(g, 0.0)


def test_custom_jvp_errors():
    @ec.filter_custom_jvp
    def f(x):
        return x

    with pytest.raises(TypeError, match="def_jvp"):
        f(jnp.ones(2))

    @f.def_jvp
    def bad(primals, tangents):
        return primals[0], jnp.ones(3)

    with pytest.raises(ValueError, match=r"primal_out.*shape \(3,\)"):
        jax.jvp(f, (jnp.ones(2),), (jnp.ones(2),))

    @f.def_jvp
    def not_a_pair(primals, tangents):
        return primals[0]

    with pytest.raises(TypeError, match="must return a pair"):
        jax.jvp(f, (jnp.ones(2),), (jnp.ones(2),))


# -- filter_custom_vjp ---------------------------------------------------------------------


def make_scaled():
    log = {}

    @ec.filter_custom_vjp
    def scaled(vjp_arg, factor, *, label):
        return {"out": vjp_arg["w"] * factor, "label": label, "ints": vjp_arg["i"] + 1}

    @scaled.def_fwd
    def scaled_fwd(perturbed, vjp_arg, factor, *, label):
        log["perturbed"] = perturbed
        return scaled(vjp_arg, factor, label=label), {"factor": factor, "note": "res"}

    @scaled.def_bwd
    def scaled_bwd(residuals, grad_obj, perturbed, vjp_arg, factor, *, label):
        log["grad_obj"] = grad_obj
        log["note"] = residuals["note"]
        # the true cotangent for w; None for everything else
        return {"w": grad_obj["out"] * residuals["factor"], "b": None, "i": None, "s": None}

    return scaled, log


VJP_ARG = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(0.5), "i": jnp.array(3), "s": "x"}


def test_custom_vjp_matches_true_gradient_and_passes_flags():
    scaled, log = make_scaled()
    out = scaled(VJP_ARG, jnp.array(3.0), label="L")
    np.testing.assert_allclose(out["out"], [3.0, 6.0])
    assert out["label"] == "L" and int(out["ints"]) == 4

    def loss(v, factor):
        return jnp.sum(scaled(v, factor, label="L")["out"] ** 2)

    grads = ec.filter_grad(loss)(VJP_ARG, jnp.array(3.0))
    ref = jax.grad(lambda w: jnp.sum((w * 3.0) ** 2))(VJP_ARG["w"])
    np.testing.assert_allclose(grads["w"], ref)
    np.testing.assert_allclose(grads["b"], 0.0)  # None from bwd means zero
    assert grads["i"] is None and grads["s"] is None
    assert log["perturbed"] == {"w": True, "b": True, "i": False, "s": False}
    assert log["grad_obj"]["label"] is None and log["grad_obj"]["ints"] is None
    assert log["note"] == "res"


def test_custom_vjp_refuses_to_differentiate_args():
    scaled, _ = make_scaled()
    # differentiating w.r.t. a non-vjp argument would silently give zero: it is an error
    with pytest.raises(TypeError, match=r"\*args/\*\*kwargs.*vjp_arg"):
        jax.grad(lambda f: jnp.sum(scaled(VJP_ARG, f, label="L")["out"]))(jnp.array(3.0))


def test_custom_vjp_args_may_be_tracers_when_not_differentiated():
    scaled, log = make_scaled()

    def loss(v, f):
        return jnp.sum(scaled(v, f, label="L")["out"])

    # `f` is traced by vmap (not differentiated): allowed
    g = jax.vmap(lambda f: ec.filter_grad(loss)(VJP_ARG, f)["w"])(jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(g, [[1.0, 1.0], [2.0, 2.0]])
    assert log["perturbed"]["w"] is True


def test_custom_vjp_under_jit_and_vmap():
    scaled, _ = make_scaled()

    def loss(v, factor):
        return jnp.sum(scaled(v, factor, label="L")["out"])

    per_factor = ec.filter_jit(jax.vmap(lambda f: ec.filter_grad(loss)(VJP_ARG, f)["w"]))(
        jnp.array([1.0, 2.0])
    )
    np.testing.assert_allclose(per_factor, [[1.0, 1.0], [2.0, 2.0]])


def test_custom_vjp_with_closure_converted_function():
    # a closure over a traced value must be made explicit before crossing custom_vjp
    @ec.filter_custom_vjp
    def apply(x, fn):
        return fn(x)

    @apply.def_fwd
    def apply_fwd(perturbed, x, fn):
        return fn(x), None

    @apply.def_bwd
    def apply_bwd(residuals, g, perturbed, x, fn):
        _, vjp_fn = jax.vjp(fn, x)
        return vjp_fn(g)[0]

    def outer(a, x):
        fn = ec.filter_closure_convert(lambda x: jnp.sin(x) * a, x)
        return jnp.sum(apply(x, fn))

    x = jnp.array([0.3, 1.1])
    grad = jax.jit(jax.grad(outer, argnums=1))(jnp.array(2.0), x)
    np.testing.assert_allclose(grad, 2.0 * jnp.cos(x), rtol=1e-6)


def test_custom_vjp_errors():
    @ec.filter_custom_vjp
    def f(x):
        return x * 2

    with pytest.raises(TypeError, match="def_fwd and def_bwd"):
        f(jnp.ones(2))

    @f.def_fwd
    def f_fwd(perturbed, x):
        return f(x), None

    @f.def_bwd
    def wrong_shape(residuals, g, perturbed, x):
        return jnp.ones(3)

    with pytest.raises(ValueError, match=r"fn_bwd returned a cotangent of shape \(3,\)"):
        jax.grad(lambda x: jnp.sum(f(x)))(jnp.ones(2))

    @ec.filter_custom_vjp
    def h(x):
        return x["a"] * 2

    h.def_fwd(lambda perturbed, x: (h(x), None))
    h.def_bwd(lambda residuals, g, perturbed, x: (g, g))  # a tuple, not a dict
    with pytest.raises(ValueError, match=r"same pytree structure as vjp_arg; at vjp_arg: "):
        ec.filter_grad(lambda x: jnp.sum(h(x)))({"a": jnp.ones(2)})


# -- Equinox's deprecated API ------------------------------------------------------------


def test_deprecated_defjvp_sees_zero_tangents_instead_of_none():
    @ec.filter_custom_jvp
    def scale(x, y, label):
        return x * y

    seen = []

    def rule(primals, tangents):
        (x, y, _), (tx, ty, tlabel) = primals, tangents
        seen.append((tx, ty, tlabel))
        return x * y, tx * y + x * ty

    with pytest.warns(DeprecationWarning, match="def_jvp"):
        scale.defjvp(rule)
    x, y = jnp.array(2.0), jnp.array(3.0)
    out, t_out = jax.jvp(lambda a: scale(a, y, "s"), (x,), (jnp.array(1.0),))
    assert (float(out), float(t_out)) == (6.0, 3.0)
    tx, ty, tlabel = seen[-1]
    assert float(tx) == 1.0 and float(ty) == 0.0 and tlabel is None  # a zero, not None


def test_deprecated_defvjp_sets_both_rules_without_perturbed():
    @ec.filter_custom_vjp
    def cube(x, offset):
        return {"y": x**3 + offset, "unused": 2 * x, "tag": "cube"}

    def fwd(x, offset):
        return cube(x, offset), 3 * x**2

    def bwd(slope, grad_out, x, offset):
        assert grad_out["tag"] is None  # static outputs have no cotangent
        np.testing.assert_array_equal(grad_out["unused"], 0.0)  # a zero array, not None
        return grad_out["y"] * slope

    with pytest.warns(DeprecationWarning, match="def_fwd and def_bwd"):
        cube.defvjp(fwd, bwd)
    x = jnp.array([1.0, 2.0])
    grad = jax.grad(lambda v: jnp.sum(cube(v, 1.0)["y"]))(x)
    np.testing.assert_allclose(grad, 3 * x**2)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="fn_bwd"):
        cube.defvjp(fwd, "not a function")  # pyright: ignore[reportArgumentType]


# -- Python-number primals -----------------------------------------------------------------


def make_square_with_squared_tangent():
    @ec.filter_custom_jvp
    def square(fn, x):
        return fn(x)

    @square.def_jvp
    def _(primals, tangents):
        fn, x = primals
        _, tx = tangents
        return square(fn, x), tx**2  # a deliberately non-linear "tangent": easy to spot

    return square


def test_custom_jvp_rule_applies_at_python_number_primals():
    square = make_square_with_squared_tangent()
    f = lambda a: a * a + 1.0  # noqa: E731
    # The rule says the tangent out is tx**2 = 9, whatever the primal's type.
    for x, tx in ((2.0, 3.0), (jnp.array(2.0), jnp.array(3.0))):
        out, t_out = jax.jvp(lambda a: square(f, a), (x,), (tx,))
        np.testing.assert_allclose(out, 5.0)
        np.testing.assert_allclose(t_out, 9.0)


def test_custom_jvp_rule_with_keywords_at_python_number_primals():
    @ec.filter_custom_jvp
    def combine(x, y, *, fn):
        return fn(x, y)

    @combine.def_jvp
    def _(primals, tangents, *, fn):
        (x, y), (tx, ty) = primals, tangents
        return combine(x, y, fn=fn), 2.0 * tx + 10.0 * ty

    out, t_out = jax.jvp(lambda a, b: combine(a, b, fn=lambda u, v: u * v), (2.0, 4.0), (1.0, 0.5))
    np.testing.assert_allclose(out, 8.0)
    np.testing.assert_allclose(t_out, 7.0)


def test_custom_vjp_rule_applies_at_python_number_primals():
    @ec.filter_custom_vjp
    def scaled(x, k):
        return x * k

    @scaled.def_fwd
    def _(perturbed, x, k):
        return scaled(x, k), None

    @scaled.def_bwd
    def _(residuals, g, perturbed, x, k):
        return 3.0 * g * k  # not the true derivative (k): shows the rule ran

    for x in (1.5, jnp.array(1.5)):
        np.testing.assert_allclose(jax.grad(lambda a: scaled(a, 2.0))(x), 6.0)


def test_custom_vjp_differentiating_other_arguments_is_a_runtime_error_too():
    @ec.filter_custom_vjp
    def add(x, y):
        return x + y

    @add.def_fwd
    def _(perturbed, x, y):
        return x + y, None

    @add.def_bwd
    def _(residuals, g, perturbed, x, y):
        return g

    for error in (RuntimeError, TypeError):
        with pytest.raises(error, match="cannot be autodifferentiated"):
            jax.grad(lambda a: add(a, a))(1.0)
