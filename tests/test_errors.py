"""Runtime checks: error_if / branched_error_if in every mode and under every transform."""

import io
import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import ecliptic as ecl
from ecliptic._exceptions import mark_message, reraise_runtime_error

# Plain `jax.jit` reports a failed callback as a JaxRuntimeError, or as a ValueError on
# JAX's C++ fast dispatch path (a function that already ran once); both carry the message.
JitError = (jax.errors.JaxRuntimeError, ValueError)
NEG = jnp.array([1.0, -2.0, 3.0])
POS = jnp.array([1.0, 2.0, 3.0])


def check_nonneg(x):
    return ecl.error_if(x, x < 0, "x must be non-negative")


def assert_identical(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("ECLIPTIC_ON_ERROR", raising=False)
    monkeypatch.delenv("EQX_ON_ERROR", raising=False)


# -- raise mode, no transforms --------------------------------------------------------


def test_eager_raises_runtime_error_with_exact_message():
    with pytest.raises(ecl.EclipticRuntimeError) as info:
        check_nonneg(NEG)
    assert str(info.value) == "x must be non-negative"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_passes_input_through_exactly():
    x = jnp.array([0.0, -0.0, 1.5, np.inf])
    assert_identical(check_nonneg(x), x)
    assert_identical(jax.jit(check_nonneg)(x), x)
    ints = jnp.arange(3)
    assert_identical(jax.jit(lambda v: ecl.error_if(v, v > 5, "big"))(ints), ints)


def test_concrete_false_returns_same_object():
    x = jnp.ones(3)
    assert ecl.error_if(x, False, "never") is x
    assert ecl.error_if(x, np.zeros(3, bool), "never") is x


def test_pytree_with_non_array_leaves():
    tree = {"a": POS, "b": "label", "c": 3}
    out = jax.jit(lambda t: ecl.error_if(t, t["a"] < 0, "bad"), static_argnums=())(
        {"a": POS, "b": None, "c": None}
    )
    assert_identical(out["a"], POS)
    assert ecl.error_if(tree, jnp.array(False), "bad")["b"] == "label"


def test_jit_raises_with_readable_message():
    with pytest.raises(JitError, match="x must be non-negative"):
        jax.jit(check_nonneg)(NEG)


def test_jit_message_translated_by_reraise_runtime_error():
    try:
        jax.jit(check_nonneg)(NEG)
    except JitError as e:
        assert str(e).endswith("\nx must be non-negative")  # the message ends the text
        with pytest.raises(ecl.EclipticRuntimeError) as info:
            reraise_runtime_error(e)
        assert info.value.msg == "x must be non-negative"
        assert str(info.value).endswith("\nx must be non-negative")
    else:
        pytest.fail("no error")


def test_reraise_runtime_error_ignores_other_errors():
    assert reraise_runtime_error(ValueError("unrelated")) is None
    with pytest.raises(ecl.EclipticRuntimeError) as info:
        reraise_runtime_error(RuntimeError("INTERNAL: " + mark_message("multi\nline") + " tb"))
    assert info.value.msg == "multi\nline"
    with pytest.raises(ecl.EclipticRuntimeError, match="^multi\nline$"):
        reraise_runtime_error(RuntimeError(mark_message("multi\nline")), compiled=False)


def test_filter_jit_raises_eclipitc_runtime_error():
    with pytest.raises(ecl.EclipticRuntimeError) as info:
        ecl.filter_jit(check_nonneg)(NEG)
    text = str(info.value)
    assert info.value.msg == "x must be non-negative"
    assert text.endswith("\nx must be non-negative")  # the user's message comes last
    # Equinox's wording, kept inside ecliptic's own.
    assert text.startswith("Above is the stack outside of JIT")
    assert "ECLIPTIC_ON_ERROR=breakpoint" in text and "EQX_ON_ERROR" in text
    assert info.value.__cause__ is None
    assert_identical(ecl.filter_jit(check_nonneg)(POS), POS)
    with pytest.raises(ecl.EquinoxRuntimeError):  # the compatibility alias
        ecl.filter_jit(check_nonneg)(NEG)


def test_nested_jit():
    outer = jax.jit(lambda x: jax.jit(check_nonneg)(x) * 2)
    assert_identical(outer(POS), POS * 2)
    with pytest.raises(JitError, match="x must be non-negative"):
        outer(NEG)


def test_unused_output_under_jit_is_dropped_but_used_output_is_checked():
    # Documented contract: the check is tied to the returned value.
    assert_identical(jax.jit(lambda x: (check_nonneg(x), x)[1])(NEG), NEG)
    with pytest.raises(JitError):
        jax.jit(lambda x: check_nonneg(x) + 0)(NEG)


def test_no_array_in_x_still_checked():
    f = jax.jit(lambda x: (ecl.error_if(None, x < 0, "no arrays here"), x)[1])
    with pytest.raises(JitError, match="no arrays here"):
        f(NEG)
    assert_identical(f(POS), POS)


def test_tracetime_error_for_concrete_true_predicate():
    with pytest.raises(ecl.EclipticTracetimeError, match="always"):
        jax.jit(lambda x: ecl.error_if(x, True, "always"))(POS)
    with pytest.raises(ecl.EquinoxTracetimeError):
        jax.jit(lambda x: ecl.error_if(x, np.array([False, True]), "always"))(POS)
    # Eagerly, a known failure is simply the runtime error.
    with pytest.raises(ecl.EclipticRuntimeError, match="always"):
        ecl.error_if(POS, True, "always")


def test_no_log_noise(caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(JitError):
        jax.jit(check_nonneg)(NEG)
    assert "pure_callback failed" not in caplog.text


# -- transforms -----------------------------------------------------------------------


def test_vmap_reports_batch_index():
    with pytest.raises(ecl.EclipticRuntimeError) as info:
        jax.vmap(check_nonneg)(NEG)
    assert str(info.value).startswith("x must be non-negative\n")
    assert "batch size 3: failed at batch index 1)" in str(info.value)
    with pytest.raises(JitError, match=r"batch indices 0, 2\)"):
        jax.jit(jax.vmap(check_nonneg))(jnp.array([-1.0, 1.0, -1.0]))
    assert_identical(jax.jit(jax.vmap(check_nonneg))(POS), POS)


def test_nested_vmap_reports_index_tuples():
    x = jnp.array([[1.0, -1.0], [2.0, 3.0]])
    f = ecl.filter_jit(jax.vmap(jax.vmap(check_nonneg)))
    match = r"batch size 2x2: failed at batch index \(0, 1\)"
    with pytest.raises(ecl.EclipticRuntimeError, match=match):
        f(x)


def test_vmap_with_array_predicate_and_in_axes():
    f = jax.vmap(lambda row: ecl.error_if(row, row < 0, "row"), in_axes=1, out_axes=1)
    x = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, -3.0]])
    with pytest.raises(ecl.EclipticRuntimeError, match="failed at batch index 2"):
        ecl.filter_jit(f)(x)


def test_vmap_with_unbatched_predicate_reports_every_element():
    f = ecl.filter_jit(jax.vmap(lambda x, p: ecl.error_if(x, p, "shared"), in_axes=(0, None)))
    with pytest.raises(
        ecl.EclipticRuntimeError, match=r"batch size 4: failed at batch indices 0, 1, 2, 3"
    ):
        f(jnp.ones(4), jnp.array(True))


def test_higher_order_and_checkpoint():
    cube = lambda x: jnp.sum(check_nonneg(x) ** 3)
    np.testing.assert_allclose(jax.jit(jax.hessian(cube))(POS[:2]), jnp.diag(6 * POS[:2]))
    with pytest.raises(ecl.EclipticRuntimeError):
        ecl.filter_jit(jax.hessian(cube))(NEG)
    remat = jax.jit(jax.grad(jax.checkpoint(lambda x: jnp.sum(jnp.sin(check_nonneg(x))))))
    np.testing.assert_allclose(remat(POS), jnp.cos(POS))
    with pytest.raises(JitError, match="x must be non-negative"):
        remat(NEG)


def test_grad_passes_cotangent_unchanged_and_keeps_check():
    loss = lambda x: jnp.sum(check_nonneg(x) ** 2)
    assert_identical(jax.jit(jax.grad(loss))(POS), 2 * POS)
    # The primal output is not needed by the gradient of a linear loss: still checked.
    linear = jax.jit(jax.grad(lambda x: jnp.sum(check_nonneg(x))))
    assert_identical(linear(POS), jnp.ones(3))
    with pytest.raises(JitError, match="x must be non-negative"):
        linear(NEG)
    with pytest.raises(ecl.EclipticRuntimeError, match="x must be non-negative"):
        jax.grad(loss)(NEG)


def test_vjp_and_jvp():
    ct = jnp.array([0.5, -0.0, np.nan])
    out, vjp = jax.vjp(check_nonneg, POS)
    assert_identical(out, POS)
    assert_identical(vjp(ct)[0], ct)
    with pytest.raises(ecl.EclipticRuntimeError):
        jax.vjp(check_nonneg, NEG)
    p, t = jax.jit(lambda x, t: jax.jvp(check_nonneg, (x,), (t,)))(POS, ct)
    assert_identical(p, POS) and assert_identical(t, ct)
    with pytest.raises(JitError):
        jax.jit(lambda x: jax.jvp(check_nonneg, (x,), (x,)))(NEG)


def test_vmap_of_grad():
    f = ecl.filter_jit(jax.vmap(jax.grad(lambda x: check_nonneg(x) * 3.0)))
    assert_identical(f(POS), jnp.full(3, 3.0))
    with pytest.raises(ecl.EclipticRuntimeError, match="batch index 1"):
        f(NEG)


def test_scan():
    def f(xs):
        return lax.scan(lambda c, x: (c + check_nonneg(x), None), 0.0, xs)[0]

    assert jax.jit(f)(POS) == 6.0
    with pytest.raises(JitError, match="x must be non-negative"):
        jax.jit(f)(NEG)
    assert_identical(jax.jit(jax.grad(f))(POS), jnp.ones(3))


def test_while_loop():
    def f(x):
        body = lambda c: (c[0] + 1, check_nonneg(c[1] - 1.0))
        return lax.while_loop(lambda c: c[0] < 3, body, (0, x))[1]

    assert jax.jit(f)(jnp.array(5.0)) == 2.0
    with pytest.raises(JitError, match="x must be non-negative"):
        jax.jit(f)(jnp.array(2.0))


def test_cond():
    f = jax.jit(lambda x, p: lax.cond(p, lambda: check_nonneg(x - 5.0), lambda: x))
    assert f(jnp.array(2.0), False) == 2.0  # the failing branch is not taken
    with pytest.raises(JitError, match="x must be non-negative"):
        f(jnp.array(2.0), True)


# -- branched_error_if ----------------------------------------------------------------


MSGS = ["zero", "one", "two"]


def test_branched_picks_message():
    f = ecl.filter_jit(lambda x, i: ecl.branched_error_if(x, x < 0, i, MSGS))
    for i, m in enumerate(MSGS):
        with pytest.raises(ecl.EclipticRuntimeError, match=f"\n{m}$") as info:
            f(NEG, jnp.array(i))
        assert info.value.msg == m
    assert_identical(f(POS, jnp.array(2)), POS)
    with pytest.raises(ecl.EclipticRuntimeError, match="^two$"):
        ecl.branched_error_if(NEG, NEG < 0, 2, MSGS)
    with pytest.raises(ecl.EclipticTracetimeError, match="^one"):
        jax.jit(lambda x: ecl.branched_error_if(x, True, 1, MSGS))(POS)


def test_branched_under_vmap_uses_failing_element_message():
    f = ecl.filter_jit(jax.vmap(lambda x, i: ecl.branched_error_if(x, x < 0, i, MSGS)))
    with pytest.raises(ecl.EclipticRuntimeError) as info:
        f(jnp.array([1.0, 1.0, -1.0]), jnp.array([0, 1, 2]))
    assert info.value.msg.startswith("two\n") and "batch index 2" in info.value.msg


def test_branched_validation():
    with pytest.raises(ValueError, match=r"0 <= index < len\(msgs\) = 3; got 3"):
        ecl.branched_error_if(POS, POS < 0, 3, MSGS)
    with pytest.raises(TypeError, match="non-empty sequence of strings"):
        ecl.branched_error_if(POS, POS < 0, 0, [])
    with pytest.raises(TypeError, match="non-empty sequence"):
        ecl.branched_error_if(POS, POS < 0, 0, "msg")
    with pytest.raises(TypeError, match=r"`index` must be .* integer scalar"):
        ecl.branched_error_if(POS, POS < 0, jnp.array([0, 1]), MSGS)
    with pytest.raises(TypeError, match=r"msgs\[1\]"):
        ecl.branched_error_if(POS, POS < 0, 0, ["a", 2])  # pyright: ignore[reportArgumentType]


def test_pred_and_msg_validation():
    with pytest.raises(TypeError, match=r"`pred` must be a boolean array .* got f32\[3\]"):
        ecl.error_if(POS, POS, "m")
    with pytest.raises(TypeError, match="`pred` must be"):
        ecl.error_if(POS, 1, "m")
    with pytest.raises(TypeError, match="`msg` must be a str"):
        ecl.error_if(POS, POS < 0, 3)  # pyright: ignore[reportArgumentType]


# -- modes ----------------------------------------------------------------------------


def test_on_error_validation():
    with pytest.raises(ValueError, match=r"`on_error` must be one of 'raise', .*got 'bogus'"):
        ecl.error_if(POS, POS < 0, "m", on_error="bogus")  # pyright: ignore[reportArgumentType]


def test_nan_mode():
    f = lambda x: ecl.error_if(x, x < 0, "m", on_error="nan")
    assert np.isnan(jax.jit(f)(NEG)).all()
    assert_identical(jax.jit(f)(POS), POS)
    # Under vmap only the failing elements become NaN; ints cannot, and stay.
    out = jax.jit(jax.vmap(f))(NEG)
    np.testing.assert_array_equal(np.isnan(out), [False, True, False])
    ints = ecl.error_if(jnp.arange(3), jnp.array(True), "m", on_error="nan")
    assert_identical(ints, jnp.arange(3))
    assert np.isnan(f(NEG)).all()  # eager; also no error for a concrete True
    assert np.isnan(ecl.error_if(POS, True, "m", on_error="nan")).all()


def test_off_mode():
    assert_identical(jax.jit(lambda x: ecl.error_if(x, x < 0, "m", on_error="off"))(NEG), NEG)
    assert ecl.error_if(NEG, True, "m", on_error="off") is NEG


def test_breakpoint_mode(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("c\n"))
    f = jax.jit(lambda x: ecl.error_if(x, x < 0, "look here", on_error="breakpoint"))
    out = f(NEG)
    printed = capsys.readouterr().out
    assert "look here" in printed and "Entering jdb" in printed
    assert printed.index("look here") < printed.index("Entering jdb")
    assert np.isnan(out).all()
    assert_identical(f(POS), POS)
    assert "Entering jdb" not in capsys.readouterr().out


def test_env_var_selects_mode(monkeypatch):
    # The environment is read when the check is traced: use fresh functions.
    monkeypatch.setenv("ECLIPTIC_ON_ERROR", "nan")
    assert np.isnan(jax.jit(lambda x: check_nonneg(x))(NEG)).all()
    monkeypatch.setenv("ECLIPTIC_ON_ERROR", "off")
    assert_identical(jax.jit(lambda x: check_nonneg(x))(NEG), NEG)
    # An explicit on_error wins over the environment.
    with pytest.raises(JitError):
        jax.jit(lambda x: ecl.error_if(x, x < 0, "m", on_error="raise"))(NEG)


def test_eqx_env_var_and_precedence(monkeypatch):
    monkeypatch.setenv("EQX_ON_ERROR", "nan")
    assert np.isnan(jax.jit(lambda x: check_nonneg(x))(NEG)).all()
    monkeypatch.setenv("ECLIPTIC_ON_ERROR", "off")  # the primary variable wins
    assert_identical(jax.jit(lambda x: check_nonneg(x))(NEG), NEG)
    monkeypatch.setenv("ECLIPTIC_ON_ERROR", "RAISE")  # case-insensitive
    with pytest.raises(JitError):
        jax.jit(lambda x: check_nonneg(x))(NEG)


def test_invalid_env_var(monkeypatch):
    monkeypatch.setenv("EQX_ON_ERROR", "loud")
    with pytest.raises(ValueError, match=r"EQX_ON_ERROR must be one of .*got 'loud'"):
        check_nonneg(POS)


def _scan(x):
    return jax.lax.scan(lambda c, _: (check_nonneg(c), None), x, None, length=2)[0]


def _fori(x):
    return jax.lax.fori_loop(0, 2, lambda i, c: check_nonneg(c), x)


def _cond(x):
    return jax.lax.cond(True, check_nonneg, lambda c: c, x)


def _checkpoint(x):
    return jax.checkpoint(check_nonneg)(x)


@pytest.mark.parametrize("run", [_scan, _fori, _cond, _checkpoint])
def test_unjitted_control_flow(run):
    # Documented: JAX runs these itself, so its own error reaches the caller, and its text
    # ends with the user's message.
    with pytest.raises(JitError) as info:
        run(NEG)
    assert str(info.value).rstrip().endswith("\nx must be non-negative")
    # Any filter_jit around it gives ecliptic's documented type.
    with pytest.raises(ecl.EclipticRuntimeError) as clean:
        ecl.filter_jit(run)(NEG)
    assert clean.value.msg == "x must be non-negative"
    assert_identical(run(POS), POS)


def test_message_is_recovered_whatever_it_contains():
    for msg in ("", "a [ecliptic.error_if failed; its message (3 characters) follows]\nb", "é\n"):
        with pytest.raises(ecl.EclipticRuntimeError) as info:
            ecl.filter_jit(lambda x, m=msg: ecl.error_if(x, x < 0, m))(NEG)
        assert info.value.msg == msg and str(info.value).endswith(msg)
