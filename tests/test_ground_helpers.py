"""The package-wide helpers every layer uses: integer/number checks, value descriptions in
error messages, and Module copies made without `__init__`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic as ec
from ecliptic._checks import is_int, is_real
from ecliptic._messages import array_text, describe, short_dtype, short_repr, type_name
from ecliptic._module import new_instance, replace_fields


@pytest.mark.parametrize("x", [0, 3, -2, np.int8(4), np.uint64(7)])
def test_integers_pass(x):
    assert is_int(x) and is_real(x)


@pytest.mark.parametrize("x", [True, np.bool_(False), 2.0, "3", None, np.ones(2), jnp.int32(1)])
def test_non_integers_fail(x):
    assert not is_int(x)


@pytest.mark.parametrize("x", [True, np.bool_(True), 1j, "1.0", None, np.ones(()), [1.0]])
def test_non_reals_fail(x):
    assert not is_real(x)


def test_reals_pass():
    assert all(is_real(x) for x in (0.5, -1, np.float16(2), np.int32(3), float("inf")))


@pytest.mark.parametrize(
    ("dtype", "shape", "text"),
    [
        (np.float32, (3, 4), "f32[3,4]"),
        (jnp.bfloat16, (2,), "bf16[2]"),
        (np.uint8, (), "u8[]"),
        (np.int64, (1, 1, 1), "i64[1,1,1]"),
        (np.complex64, (5,), "c64[5]"),
        (np.bool_, (2,), "bool[2]"),
        (np.dtype("V4"), (2,), "V4[2]"),
    ],
)
def test_array_text(dtype, shape, text):
    assert array_text(dtype, shape) == text


def test_describe_arrays_and_other_values():
    assert describe(jnp.zeros((2, 3), jnp.float16)) == "f16[2,3]"
    assert describe(np.zeros(4, np.int32)) == "i32[4]"
    assert describe("x" * 200).endswith("...") and len(describe("x" * 200)) == 80
    assert describe(jax.random.key(0)).startswith("key<")
    assert short_dtype("float8_e4m3fn") == "f8_e4m3fn" and short_dtype("key<fry>") == "key<fry>"


def test_broken_repr_is_replaced_by_type_name():
    class Loud:
        def __repr__(self):
            raise RuntimeError("no")

    text = short_repr(Loud(), limit=200)
    assert text.startswith("<test_ground_helpers.") and text.endswith(".Loud object>")
    assert type_name(3) == "int" and type_name(np.ones(1)) == "numpy.ndarray"


class Pair(ec.Module):
    a: jax.Array
    b: int = ec.field(static=True)

    def __check_init__(self):
        if self.b < 0:
            raise ValueError("b must be non-negative")


def test_replace_fields_copies_without_init_and_leaves_the_original():
    pair = Pair(jnp.ones(2), 1)
    changed = replace_fields(pair, b=-5)  # __check_init__ is not run again
    assert changed.b == -5 and pair.b == 1 and changed.a is pair.a
    assert type(changed) is Pair
    with pytest.raises(Exception, match="b"):
        changed.b = 3  # still immutable  # type: ignore[misc]


def test_new_instance_is_a_pytree_like_a_built_one():
    built = Pair(jnp.arange(3.0), 2)
    made = new_instance(Pair, a=jnp.arange(3.0), b=2)
    assert jax.tree.structure(made) == jax.tree.structure(built)
    assert ec.tree_equal(made, built)
