"""load_state_dict refuses values that do not survive the cast to the model's dtypes
(integers that would wrap, finite floats that would overflow to inf, masked arrays),
keeps its error messages short for huge state dicts, and says when a state dict is in
PyTorch's layout."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic
import ecliptic.nn as enn
from ecliptic import StateDictError


def load_one(value, dtype):
    like = {"w": np.zeros(np.shape(value), dtype)}
    return ecliptic.load_state_dict(like, {"w": value})["w"]


@pytest.mark.parametrize(
    "value, dtype, pattern",
    [
        (
            np.array(2**40 + 5),
            np.int32,
            r"w: the values range over \[1099511627781, "
            r"1099511627781\], which does not fit int32 \(\[-2147483648, 2147483647\]\)",
        ),
        (
            np.array([70000, -40000]),
            np.int16,
            r"w: the values range over \[-40000, 70000\], "
            r"which does not fit int16",
        ),
        (np.array([3, -1]), np.uint8, r"\[-1, 3\], which does not fit uint8"),
        (np.array([2**63], np.uint64), np.int64, r"does not fit int64"),
        (
            np.array(1e300),
            np.float32,
            r"w: 1 finite value\(s\) ranging over \[1e\+300, 1e\+300\] "
            r"overflow float32 .*would load as inf",
        ),
        (np.array([1.0, 7e4], np.float32), np.float16, r"overflow float16"),
        (np.array([1.0, 1e39]), jnp.bfloat16, r"overflow bfloat16"),
        (np.array([1e300 + 1j]), np.complex64, r"overflow complex64"),
    ],
)
def test_values_that_do_not_fit_the_dtype_are_refused(value, dtype, pattern):
    with pytest.raises(StateDictError, match=pattern):
        load_one(value, dtype)


def test_values_that_fit_or_only_round_load():
    # Independent reference: NumPy's own cast of values that are in range.
    third = np.array([1 / 3, -2.5e38, 3.4e38])
    np.testing.assert_array_equal(load_one(third, np.float32), third.astype(np.float32))
    special = np.array([np.inf, -np.inf, np.nan])  # not finite in the source: kept as is
    np.testing.assert_array_equal(load_one(special, np.float32), special.astype(np.float32))
    ints = np.array([-32768, 32767], np.int64)
    np.testing.assert_array_equal(load_one(ints, np.int16), ints.astype(np.int16))


def test_masked_arrays_are_refused():
    masked = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    with pytest.raises(StateDictError, match=r"w: a masked array \(numpy\.ma\).*filled"):
        load_one(masked, np.float32)


def test_batchnorm_count_too_large_for_the_state_is_refused():
    bn, state = enn.make_with_state(enn.BatchNorm)(3, "batch", mode="torch")
    sd = ecliptic.state_dict(bn, state=state, format="torch")
    [count_dtype] = {
        np.asarray(x).dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.integer)
    }
    sd["num_batches_tracked"] = np.array(2**32 + 3, np.int64)
    if np.iinfo(count_dtype).max < 2**32 + 3:  # int32 without x64
        with pytest.raises(
            StateDictError,
            match=r"num_batches_tracked: the values range over "
            r"\[4294967299, 4294967299\], which does not fit int32",
        ):
            ecliptic.load_state_dict(bn, sd, state=state, format="torch")
    sd["num_batches_tracked"] = np.array(12, np.int64)
    bn, state = ecliptic.load_state_dict(bn, sd, state=state, format="torch")
    assert ecliptic.state_dict(bn, state=state, format="torch")["num_batches_tracked"] == 12


def test_huge_state_dict_errors_are_short_and_fast():
    entries = {f"extra.{i}": np.zeros(1, np.float32) for i in range(200_000)}
    entries["w"] = np.zeros(3, np.float32)  # wrong shape
    start = time.perf_counter()
    with pytest.raises(StateDictError) as info:
        ecliptic.load_state_dict({"w": np.zeros(2, np.float32), "v": np.zeros(1)}, entries)
    seconds = time.perf_counter() - start
    message = str(info.value)
    assert "unexpected keys (200000):" in message and "... and 199980 more" in message
    assert "missing keys (1):" in message and "w: expected f32[2], got f32[3]" in message
    assert len(message.splitlines()) < 40 and len(message) < 4000
    assert seconds < 30
    report = info.value.report  # the full lists stay available
    assert len(report.unexpected) == 200_000


def test_torch_layout_is_suggested_when_it_would_fit():
    conv = enn.Conv2d(1, 2, 3, key=jax.random.key(0))
    sd = ecliptic.state_dict(conv, format="torch")
    with pytest.raises(
        StateDictError,
        match=r"(?s)bias: expected f32\[2,1,1\], got f32\[2\].*"
        r"PyTorch\'s names and layouts: this state dict fits the model with "
        r'format="torch"',
    ):
        ecliptic.load_state_dict(conv, sd)
    loaded = ecliptic.load_state_dict(conv, sd, format="torch")
    np.testing.assert_array_equal(loaded.bias, conv.bias)
    # A state dict that fits neither layout gets no such hint.
    sd["bias"] = np.zeros(5, np.float32)
    with pytest.raises(StateDictError) as info:
        ecliptic.load_state_dict(conv, sd)
    assert 'format="torch"' not in str(info.value)
