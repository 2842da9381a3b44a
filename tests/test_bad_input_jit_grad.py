"""The bad-input catalogue: filter_jit, filter_grad and friends, and custom AD.
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
from bad_input_layers import identity, total

import ecliptic as ec

X3, I3 = jnp.ones(3), jnp.arange(3)


class Unhashable:
    __hash__ = None  # type: ignore[assignment]


class Scaled(ec.Module):
    w: jax.Array
    scale: Any = ec.field(static=True)


def static_array_field_twice() -> None:
    f = ec.filter_jit(lambda m, x: m.scale * x)
    f(Scaled(X3, jnp.ones(3)), X3)
    f(Scaled(X3, 2 * jnp.ones(3)), X3)


def aot_lowered(*args: Any) -> Any:
    return ec.filter_jit(lambda x, n: x * n).lower(*args).compile()  # pyright: ignore[reportFunctionMemberAccess]


JIT_CASES = [
    misuse(
        "filter_jit/object-dtype-numpy-array",
        lambda: ec.filter_jit(identity)(np.array([object(), 1])),
        TypeError,
        r"filter_jit: the argument at args\[0\] is a numpy\.ndarray of dtype object "
        r"\(shape \(2,\)\), which JAX cannot trace",
    ),
    misuse(
        "filter_jit/not-callable",
        lambda: ec.filter_jit(3),
        TypeError,
        r"filter_jit\(fun\): fun must be callable; got 3",
    ),
    misuse(
        "filter_jit/bad-donate",
        lambda: ec.filter_jit(identity, donate="yes"),
        ValueError,
        r"filter_jit\(donate=\.\.\.\) must be one of \('none', 'all'.*got 'yes'",
    ),
    misuse(
        "filter_jit/bad-donate-as-decorator",
        lambda: ec.filter_jit(donate="some"),
        ValueError,
        r"filter_jit\(donate=\.\.\.\) must be one of .*got 'some'",
    ),
    misuse(
        "filter_jit/static_argnums",
        lambda: ec.filter_jit(identity, static_argnums=0),
        TypeError,
        r"filter_jit does not take static_argnums: non-array arguments are static",
    ),
    misuse(
        "filter_jit/donate_argnums",
        lambda: ec.filter_jit(identity, donate_argnums=0),
        TypeError,
        r"filter_jit does not take donate_argnums.*donate=\.\.\.",
    ),
    misuse(
        "filter_jit/unknown-jit-kwarg",
        lambda: ec.filter_jit(identity, inline=True, fooo=1),
        TypeError,
        r"filter_jit got unexpected keyword argument\(s\) \['fooo'\].*jax\.jit",
    ),
    misuse(
        "filter_jit/unhashable-static-arg",
        lambda: ec.filter_jit(lambda x, y: x)(X3, Unhashable()),
        TypeError,
        r"filter_jit: the non-array leaf at args\[1\] is of unhashable type .*Unhashable",
    ),
    misuse(
        "filter_jit/set-in-static-dict",
        lambda: ec.filter_jit(lambda x, y: x)(X3, {"a": set()}),
        TypeError,
        r"filter_jit: the non-array leaf at args\[1\]\['a'\] is of unhashable type set",
    ),
    misuse(
        "filter_jit/array-in-static-field",
        static_array_field_twice,
        TypeError,
        r"filter_jit: the static field at args\[0\]\.scale holds a value of type .*Array",
    ),
    misuse(
        "filter_jit/aot-different-shape",
        lambda: aot_lowered(jnp.ones(2), 2)(X3, 2),
        TypeError,
        r"called with different arguments than it was lowered for: args\[0\] is a "
        r"f32\[3\] array, but it was lowered for a f32\[2\] array",
    ),
    misuse(
        "filter_jit/aot-different-static",
        lambda: aot_lowered(jnp.ones(2), 2)(jnp.ones(2), 3),
        TypeError,
        r"args\[1\] is a static value 3, but it was lowered for a static value 2",
    ),
]

GRAD_CASES = [
    misuse(
        "filter_grad/no-float-leaves",
        lambda: ec.filter_grad(total)(I3),
        TypeError,
        r"filter_grad: the first argument `x` has no floating-point arrays.*int32",
    ),
    misuse(
        "filter_grad/non-scalar-output",
        lambda: ec.filter_grad(identity)(X3),
        TypeError,
        r"filter_grad: the function must return a scalar \(shape \(\)\).*shape \(3,\)",
    ),
    misuse(
        "filter_grad/int-output",
        lambda: ec.filter_grad(lambda x: 1)(X3),
        TypeError,
        r"filter_grad: the function must return a floating-point scalar.*int",
    ),
    misuse(
        "filter_grad/tuple-output-without-has_aux",
        lambda: ec.filter_grad(lambda x: (total(x), 1))(X3),
        TypeError,
        r"floating-point scalar as its output; got a tuple of length 2.*has_aux=True",
    ),
    misuse(
        "filter_grad/has_aux-not-a-bool",
        lambda: ec.filter_grad(total, has_aux="yes"),
        TypeError,
        r"filter_grad\(has_aux=\.\.\.\) must be True or False; got 'yes'",
    ),
    misuse(
        "filter_hessian/integer-input",
        lambda: ec.filter_hessian(total)(I3),
        TypeError,
        r"filter_hessian: the first argument .* no floating-point arrays",
    ),
    misuse(
        "filter_grad/has_aux-not-a-pair",
        lambda: ec.filter_grad(total, has_aux=True)(X3),
        TypeError,
        r"filter_grad\(has_aux=True\): the function must return a pair",
    ),
    misuse(
        "filter_grad/not-callable",
        lambda: ec.filter_grad(3),
        TypeError,
        r"filter_grad\(fun\): fun must be callable; got 3",
    ),
    misuse(
        "filter_grad/argnums",
        lambda: ec.filter_grad(total, argnums=1),
        TypeError,
        r"filter_grad does not take argnums: it differentiates the first argument",
    ),
    misuse(
        "filter_grad/keyword-only-call",
        lambda: ec.filter_grad(total)(x=X3),
        TypeError,
        r"filter_grad: the wrapped function must be called with at least one positional",
    ),
    misuse(
        "filter_value_and_grad/non-scalar",
        lambda: ec.filter_value_and_grad(identity)(X3),
        TypeError,
        r"filter_value_and_grad: the function must return a scalar",
    ),
    misuse(
        "filter_value_and_grad/aux-triple",
        lambda: ec.filter_value_and_grad(lambda x: (total(x), 1, 2), has_aux=True)(X3),
        TypeError,
        r"filter_value_and_grad\(has_aux=True\).*pair.*tuple of length 3",
    ),
    misuse(
        "filter_jacfwd/no-float-leaves",
        lambda: ec.filter_jacfwd(identity)(I3),
        TypeError,
        r"filter_jacfwd: the first argument `x` has no floating-point arrays",
    ),
    misuse(
        "filter_jvp/tangent-shape",
        lambda: ec.filter_jvp(identity, (X3,), (jnp.ones(2),)),
        ValueError,
        r"filter_jvp: the tangent for primals\[0\] has shape \(2,\), but the primal has "
        r"shape \(3,\)",
    ),
    misuse(
        "filter_jvp/tangent-structure",
        lambda: ec.filter_jvp(identity, (X3,), [X3, 1]),
        ValueError,
        r"filter_jvp: tangents must have the same pytree structure as primals",
    ),
    misuse(
        "filter_jvp/primals-not-a-tuple",
        lambda: ec.filter_jvp(identity, X3, X3),
        TypeError,
        r"filter_jvp\(primals=\.\.\.\) must be a tuple or list",
    ),
    misuse(
        "filter_jvp/tangent-for-int-primal",
        lambda: ec.filter_jvp(identity, (I3,), (X3,)),
        ValueError,
        r"filter_jvp: primals\[0\] is not a floating-point array.*tangent must be None",
    ),
    misuse(
        "filter_vjp/cotangent-shape",
        lambda: ec.filter_vjp(identity, X3)[1](jnp.ones(2)),
        ValueError,
        r"filter_vjp: the cotangent for output has shape \(2,\); the output there has "
        r"shape \(3,\)",
    ),
    misuse(
        "filter_vjp/cotangent-structure",
        lambda: ec.filter_vjp(lambda x: (x, x), X3)[1](X3),
        ValueError,
        r"filter_vjp: the cotangent must have the same pytree structure as output",
    ),
    misuse(
        "filter_vjp/has_aux-not-a-pair",
        lambda: ec.filter_vjp(identity, X3, has_aux=True),
        TypeError,
        r"filter_vjp\(has_aux=True\): the function must return a pair",
    ),
    misuse(
        "filter_checkpoint/policy-not-callable",
        lambda: ec.filter_checkpoint(identity, policy=3),
        TypeError,
        r"filter_checkpoint\(policy=\.\.\.\) must be None or a checkpoint policy.*got 3",
    ),
    misuse(
        "filter_closure_convert/different-input",
        lambda: ec.filter_closure_convert(identity, X3)(jnp.ones(2)),
        ValueError,
        r"filter_closure_convert: input args\[0\] is a f32\[2\] array, but the "
        r"function was converted for a f32\[3\] array",
    ),
    misuse(
        "filter_eval_shape/not-callable",
        lambda: ec.filter_eval_shape(3),
        TypeError,
        r"filter_eval_shape\(fun, \.\.\.\): fun must be callable; got 3",
    ),
    misuse(
        "filter_make_jaxpr/not-callable",
        lambda: ec.filter_make_jaxpr(3),
        TypeError,
        r"filter_make_jaxpr\(fun\): fun must be callable; got 3",
    ),
]


def custom_vjp(fwd_returns_pair: bool, cotangent: Any) -> Any:
    @ec.filter_custom_vjp
    def double(x: Any) -> Any:
        return 2 * x

    @double.def_fwd
    def fwd(perturbed: Any, x: Any) -> Any:
        return (2 * x, None) if fwd_returns_pair else 2 * x

    @double.def_bwd
    def bwd(residuals: Any, g: Any, perturbed: Any, x: Any) -> Any:
        return cotangent

    return jax.grad(lambda x: jnp.sum(double(x)))(jnp.ones(2))


def custom_jvp_bad_tangent() -> Any:
    @ec.filter_custom_jvp
    def double(x: Any) -> Any:
        return 2 * x

    @double.def_jvp
    def rule(primals: Any, tangents: Any) -> Any:
        return 2 * primals[0], jnp.ones(3)

    return jax.jvp(double, (jnp.ones(2),), (jnp.ones(2),))


def custom_without_rules(kind: Any) -> Any:
    return lambda: kind(identity)(X3)


CUSTOM_AD_CASES = [
    misuse(
        "filter_custom_vjp/no-rules",
        custom_without_rules(ec.filter_custom_vjp),
        TypeError,
        r"filter_custom_vjp: identity is missing its rules.*def_fwd and def_bwd",
    ),
    misuse(
        "filter_custom_jvp/no-rule",
        custom_without_rules(ec.filter_custom_jvp),
        TypeError,
        r"filter_custom_jvp: identity has no JVP rule.*def_jvp",
    ),
    misuse(
        "filter_custom_vjp/fwd-not-a-pair",
        lambda: custom_vjp(False, None),
        TypeError,
        r"filter_custom_vjp: fn_fwd must return a pair",
    ),
    misuse(
        "filter_custom_vjp/bwd-wrong-shape",
        lambda: custom_vjp(True, jnp.ones(3)),
        ValueError,
        r"filter_custom_vjp: fn_bwd returned a cotangent of shape \(3,\).*"
        r"has shape \(2,\)",
    ),
    misuse(
        "filter_custom_jvp/tangent-wrong-shape",
        custom_jvp_bad_tangent,
        ValueError,
        r"filter_custom_jvp: the tangent for primal_out has shape \(3,\), but the primal "
        r"output there has shape \(2,\)",
    ),
    misuse(
        "filter_custom_jvp/def_jvp-not-callable",
        lambda: ec.filter_custom_jvp(identity).def_jvp(3),
        TypeError,
        r"def_jvp\(fn_jvp\): must be callable; got 3",
    ),
]

CASES = JIT_CASES + GRAD_CASES + CUSTOM_AD_CASES


@pytest.mark.parametrize("fn, exception, regex", CASES)
def test_misuse(fn: Any, exception: type[BaseException], regex: str) -> None:
    check_misuse(fn, exception, regex)


def test_valid_edge_inputs_are_still_accepted() -> None:
    # The checks above must not reject what is legitimate.
    compiled = aot_lowered(jnp.ones(2), 2)
    assert jnp.array_equal(compiled(jnp.ones(2), 2), 2 * jnp.ones(2))
    assert ec.filter_jit(identity, inline=True)(1) == 1
    assert ec.filter_vmap(identity, out_axes=-1)(jnp.ones((3, 2))).shape == (2, 3)
    assert ec.filter_shard(X3, jax.devices()[0]).shape == (3,)
