"""The one split plan and cache key of the filtered transformations (ecliptic._split)."""

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

from ecliptic._split import (
    CARRIED,
    DYNAMIC,
    DonationKey,
    StaticOutput,
    plan_for,
    split_call,
    split_output,
)


def test_call_key_tells_int_float_and_bool_apart():
    keys = [split_call((np.ones(2), value))[1] for value in (1, 1.0, True)]
    assert 1 == 1.0 == True  # noqa: E712  (the values alone would collide)
    assert len(set(keys)) == 3
    assert split_call((np.ones(2), 1))[1] == keys[0]
    # nested static tuples too
    assert split_call(((1,),))[1] != split_call(((1.0,),))[1]


def test_split_call_round_trips_and_keeps_array_identity():
    x, y = np.arange(3.0), jnp.ones(2)
    tree = ({"a": x, "n": 2}, [y, "s"])
    dynamic, key = split_call(tree)
    assert dynamic[0] is x and dynamic[1] is y
    rebuilt = key.unflatten(dynamic)
    assert (
        rebuilt[0]["a"] is x
        and rebuilt[0]["n"] == 2
        and rebuilt[1][0] is y
        and rebuilt[1][1] == "s"
    )


def test_unhashable_static_leaf():
    # a set is an unhashable leaf (a list would be a pytree node)
    with pytest.raises(TypeError, match=r"filter_eval_shape: the non-array leaf at .* type set"):
        split_call(({1},), context="filter_eval_shape")
    dynamic, key = split_call(({1}, np.ones(1)), strict=False)
    assert not key.hashable and key.unflatten(dynamic)[0] == {1}


def test_donation_key_interleaves_back_in_call_order():
    leaves = [np.zeros(1), "s", np.ones(1), np.full(1, 2.0), np.full(1, 3.0)]
    plan = plan_for(leaves)
    treedef = jtu.tree_structure(leaves)
    key = DonationKey(treedef, plan, plan.take_static(leaves), (2, 4))
    kept, donated = key.split_donated(plan.take_dynamic(leaves))
    assert [float(a[0]) for a in kept] == [1.0, 2.0]
    assert [float(a[0]) for a in donated] == [0.0, 3.0]
    assert [float(a[0]) for a in key.interleave(kept, donated)] == [0.0, 1.0, 2.0, 3.0]
    assert key != DonationKey(treedef, plan, plan.take_static(leaves), (0, 0))


def test_static_output_groups():
    out = {"f": jnp.ones(2), "i": jnp.arange(2), "s": "text", "g": jnp.zeros(1)}
    diff, carried, parts = split_output(
        out, lambda x: getattr(x, "dtype", None) == jnp.float32, carry=True
    )
    assert [s for s in parts.static if s in (DYNAMIC, CARRIED)] == [DYNAMIC, DYNAMIC, CARRIED]
    rebuilt = parts.unflatten(diff, carried)
    assert rebuilt["s"] == "text" and rebuilt["i"] is out["i"] and rebuilt["g"] is out["g"]
    assert parts.fill(["a", "b"]) == {"f": "a", "g": "b", "i": None, "s": None}
    plain, static = split_output((1, jnp.ones(1)))
    assert isinstance(static, StaticOutput) and static.unflatten([5])[0] == 1
