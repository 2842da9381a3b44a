"""Test configuration: 8 virtual CPU devices for the multi-device tests, quiet hypothesis.

The suite runs on the CPU. `ECLIPTIC_TEST_ACCELERATOR=1` leaves JAX's default platform
alone, to run (a chosen part of) it on a GPU; set `JAX_DEFAULT_MATMUL_PRECISION=highest`
with it, as the float32 references assume full-precision products.
"""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings

# Must run before any JAX backend is initialised.
jax.config.update("jax_num_cpu_devices", 8)
if os.environ.get("ECLIPTIC_TEST_ACCELERATOR") != "1":
    jax.config.update("jax_platforms", "cpu")

settings.register_profile(
    "ecliptic",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ecliptic")


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key at each call (deterministic per test)."""
    key = jax.random.key(0)

    def next_key():
        nonlocal key
        key, sub = jax.random.split(key)
        return sub

    return next_key
