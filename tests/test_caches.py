"""clear_caches and the one registry of caches it empties."""

import jax.numpy as jnp
import pytest

import ecliptic as ec
from ecliptic import _split
from ecliptic._caches import register_cache


def test_registered_clear_functions_are_called():
    calls = []
    register_cache(lambda: calls.append("cleared"))
    ec.clear_caches()
    ec.clear_caches()
    assert calls == ["cleared", "cleared"]


def test_register_cache_returns_its_argument_for_decorator_use():
    table = {"a": 1}

    @register_cache
    def clear_table():
        table.clear()

    assert callable(clear_table)
    ec.clear_caches()
    assert table == {}


def test_split_plans_are_forgotten():
    ec.filter_jit(lambda x, n: x * n)(jnp.ones(2), 3)
    assert _split._plans_by_static_types
    ec.clear_caches()
    assert not _split._plans_by_static_types
    # and still works afterwards, with the same result as NumPy would give
    assert ec.filter_jit(lambda x, n: x * n)(jnp.ones(2), 3).tolist() == [3.0, 3.0]


def test_register_cache_rejects_non_callables():
    with pytest.raises(TypeError, match=r"register_cache\(clear\): clear must be callable"):
        register_cache(3)  # pyright: ignore[reportArgumentType]
