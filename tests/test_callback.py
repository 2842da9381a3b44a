"""filter_pure_callback."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec

RESULT = {"y": jax.ShapeDtypeStruct((3,), jnp.float32), "mode": "sort"}


def host_sort(x, mode):
    assert mode == "sort"  # non-arrays arrive unchanged
    return {"y": np.sort(np.asarray(x)).astype(np.float64), "mode": mode}  # f64 is cast


def test_callback_eager_jit_and_vmap():
    x = jnp.array([3.0, 1.0, 2.0])
    out = ec.filter_pure_callback(host_sort, x, "sort", result_shape_dtypes=RESULT)
    np.testing.assert_allclose(out["y"], [1.0, 2.0, 3.0])
    assert out["y"].dtype == jnp.float32 and out["mode"] == "sort"

    jitted = jax.jit(
        lambda x: ec.filter_pure_callback(host_sort, x, "sort", result_shape_dtypes=RESULT)["y"]
    )
    np.testing.assert_allclose(jitted(x * 2), [2.0, 4.0, 6.0])

    batched = jax.vmap(
        lambda x: ec.filter_pure_callback(
            host_sort, x, mode="sort", result_shape_dtypes=RESULT, vmap_method="sequential"
        )["y"]
    )(jnp.stack([x, -x]))
    np.testing.assert_allclose(batched, [[1.0, 2.0, 3.0], [-3.0, -2.0, -1.0]])


def test_wrong_outputs_raise_clear_errors():
    x = jnp.array([3.0, 1.0, 2.0])

    def call(fn, result=RESULT):
        return ec.filter_pure_callback(fn, x, "sort", result_shape_dtypes=result)

    with pytest.raises(ValueError, match=r"shape \(2,\) at result\['y'\].*shape \(3,\)"):
        call(lambda x, m: {"y": np.zeros(2, np.float32), "mode": m})
    with pytest.raises(ValueError, match=r"callback's output must have the same pytree"):
        call(lambda x, m: (np.zeros(3, np.float32), m))
    with pytest.raises(ValueError, match=r"static value 'sort'"):
        call(lambda x, m: {"y": np.zeros(3, np.float32), "mode": "other"})
    with pytest.raises(ValueError, match=r"dtype complex64"):
        call(lambda x, m: {"y": np.zeros(3, np.complex64), "mode": m})
    with pytest.raises(TypeError, match="callable"):
        ec.filter_pure_callback(3, x, result_shape_dtypes=RESULT)  # pyright: ignore[reportArgumentType]
    # inside jit the error surfaces from the compiled call, still naming the leaf
    with pytest.raises(Exception, match=r"result\['y'\]"):
        jax.jit(
            lambda x: ec.filter_pure_callback(
                lambda x, m: {"y": np.zeros(2, np.float32), "mode": m},
                x,
                "sort",
                result_shape_dtypes=RESULT,
            )["y"]
        )(x).block_until_ready()


def test_output_mismatches_are_also_runtime_errors_as_in_equinox():
    x = jnp.array([3.0, 1.0, 2.0])
    wrong_outputs = [
        lambda x, m: {"y": np.zeros(2, np.float32), "mode": m},  # shape
        lambda x, m: (np.zeros(3, np.float32), m),  # structure
        lambda x, m: {"y": np.zeros(3, np.float32), "mode": "other"},  # static value
        lambda x, m: {"y": "text", "mode": m},  # not an array
    ]
    for fn in wrong_outputs:
        with pytest.raises(RuntimeError):
            ec.filter_pure_callback(fn, x, "sort", result_shape_dtypes=RESULT)
    with pytest.raises(RuntimeError, match="^Callback did not return matching static elements"):
        ec.filter_pure_callback(wrong_outputs[2], x, "sort", result_shape_dtypes=RESULT)
