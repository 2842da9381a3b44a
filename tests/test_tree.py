"""Tests for tree_at, tree_equal, tree_check and tree_flatten_one_level."""

import collections

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ecliptic as ec


class Linear(ec.Module):
    weight: jax.Array
    bias: object
    name: str = ec.field(static=True, default="linear")

    def __call__(self, x):
        out = self.weight @ x
        return out if self.bias is None else out + self.bias


class MLP(ec.Module):
    layers: tuple
    activation: object = ec.field(static=True, default=jax.nn.relu)
    depth: int = ec.field(static=True, default=2)


class Empty(ec.Module):
    tag: str = ec.field(static=True, default="empty")


def make_mlp():
    return MLP(
        (
            Linear(jnp.ones((3, 2)), jnp.zeros(3), "first"),
            Linear(jnp.ones((1, 3)), None, "second"),
        )
    )


Pair = collections.namedtuple("Pair", "left right")

# ================================================================ tree_at


def test_tree_at_replaces_a_leaf_out_of_place():
    tree = {"a": 1, "b": [2, 3]}
    new = ec.tree_at(lambda t: t["b"][1], tree, 30)
    assert new == {"a": 1, "b": [2, 30]}
    assert tree == {"a": 1, "b": [2, 3]}


def test_tree_at_replaces_a_subtree_with_a_different_structure():
    tree = {"a": 1, "b": [2, 3]}
    new = ec.tree_at(lambda t: t["b"], tree, {"x": (4, 5, 6)})
    assert new == {"a": 1, "b": {"x": (4, 5, 6)}}
    assert ec.tree_at(lambda t: t["a"], tree, [7, 8]) == {"a": [7, 8], "b": [2, 3]}


def test_tree_at_whole_tree():
    assert ec.tree_at(lambda t: t, [1, 2], "new") == "new"
    assert ec.tree_at(lambda t: t, 1, replace_fn=lambda x: x + 1) == 2


def test_tree_at_several_nodes():
    tree = [1, 2, (3, 4)]
    assert ec.tree_at(lambda t: (t[0], t[2]), tree, ("a", "b")) == ["a", 2, "b"]
    assert ec.tree_at(lambda t: [t[0], t[2][1]], tree, ["a", "b"]) == ["a", 2, (3, "b")]
    assert ec.tree_at(lambda t: (t[0], t[1]), tree, replace_fn=lambda x: -x) == [-1, -2, (3, 4)]


def test_tree_at_selecting_a_tuple_node_means_one_node():
    tree = [1, (2, 3)]
    # t[1] is a node of the tree itself, so it is replaced as a whole, not element-wise.
    assert ec.tree_at(lambda t: t[1], tree, "x") == [1, "x"]


def test_tree_at_empty_selection_is_a_no_op():
    tree = [1, 2]
    assert ec.tree_at(lambda t: (), tree, ()) is tree


def test_tree_at_replace_fn_sees_the_original_node():
    tree = {"a": jnp.arange(3.0), "b": [1, 2]}
    new = ec.tree_at(lambda t: t["b"], tree, replace_fn=lambda b: b + [3])
    assert new["b"] == [1, 2, 3]
    new = ec.tree_at(lambda t: t["a"], tree, replace_fn=lambda a: a * 2)
    np.testing.assert_array_equal(new["a"], [0.0, 2.0, 4.0])


def test_tree_at_module_leaf_keeps_type_and_static_fields():
    model = make_mlp()
    new = ec.tree_at(lambda m: m.layers[0].weight, model, jnp.zeros((3, 2)))
    assert type(new) is MLP and type(new.layers[0]) is Linear
    assert new.layers[0].name == "first" and new.activation is jax.nn.relu
    np.testing.assert_array_equal(new.layers[0].weight, 0)
    np.testing.assert_array_equal(model.layers[0].weight, 1)  # original untouched
    assert new.layers[1] is model.layers[1]  # untouched subtrees are shared
    assert new.layers[0].bias is model.layers[0].bias
    y = new.layers[0](jnp.ones(2))
    np.testing.assert_array_equal(y, 0)


def test_tree_at_replaces_a_nested_module():
    model = make_mlp()
    layer = Linear(jnp.full((1, 3), 2.0), jnp.ones(1), "new")
    new = ec.tree_at(lambda m: m.layers[1], model, layer)
    assert new.layers[1] is layer
    assert new.layers[0] is model.layers[0]


def test_tree_at_on_empty_module_and_empty_tuple():
    tree = (Empty(), (), ())
    new = ec.tree_at(lambda t: t[0], tree, 1)
    assert new == (1, (), ())
    assert ec.tree_at(lambda t: t[2], tree, "x")[1:] == ((), "x")


def test_tree_at_static_field_is_a_clear_error():
    model = make_mlp()
    for kind in (ValueError, TypeError):  # ours, and the type Equinox raises
        with pytest.raises(kind, match="static field"):
            ec.tree_at(lambda m: m.depth, model, 3)
    for kind in (TypeError, ValueError):
        with pytest.raises(kind, match="exactly one of `replace` and `replace_fn`; got both"):
            ec.tree_at(lambda m: m.layers, model, 1, replace_fn=lambda x: x)


def test_tree_at_none_node_with_is_leaf():
    model = make_mlp()
    new = ec.tree_at(lambda m: m.layers[1].bias, model, jnp.ones(1), is_leaf=lambda x: x is None)
    np.testing.assert_array_equal(new.layers[1].bias, 1)
    assert model.layers[1].bias is None


def test_tree_at_none_node_without_is_leaf():
    # A lone None can be selected; among several Nones it is ambiguous (as in Equinox).
    assert ec.tree_at(lambda t: t[0], [None, 1], 5) == [5, 1]
    assert ec.tree_at(lambda t: t[1], [1, None, (2,)], 5) == [1, 5, (2,)]
    tree = [None, 1, None]
    with pytest.raises(ValueError, match="uniquely identify.*is_leaf=lambda x: x is None"):
        ec.tree_at(lambda t: t[2], tree, 5)
    with pytest.raises(ValueError, match="uniquely identify"):
        ec.tree_at(lambda t: (t[0], t[1]), tree, (5, 6))
    assert ec.tree_at(lambda t: t[1], tree, 5) == [None, 5, None]
    none_leaf = lambda x: x is None  # noqa: E731
    assert ec.tree_at(lambda t: t[2], tree, 5, is_leaf=none_leaf) == [None, 1, 5]


def test_tree_at_replace_accepts_any_sized_iterable():
    tree = [1, 2, {"a": 3}]
    where = lambda t: (t[0], t[2]["a"])  # noqa: E731
    new = ec.tree_at(where, tree, np.array([7, 8]))
    assert new == [7, 2, {"a": 8}]
    for kind in (TypeError, ValueError):  # Equinox raises TypeError here
        with pytest.raises(kind, match="must be a tuple/list of as many values; got 4"):
            ec.tree_at(where, tree, 4)
    with pytest.raises(ValueError, match="selected 2 nodes but `replace` has 3 values"):
        ec.tree_at(where, tree, (1, 2, 3))


def test_tree_at_can_set_a_leaf_to_none():
    tree = {"a": jnp.ones(2), "b": 1}
    new = ec.tree_at(lambda t: t["a"], tree, None)
    assert new == {"a": None, "b": 1}


def test_tree_at_is_leaf_makes_a_subtree_a_leaf():
    tree = [Pair(1, 2), Pair(3, 4)]
    is_pair = lambda x: isinstance(x, Pair)  # noqa: E731
    new = ec.tree_at(lambda t: t[1], tree, replace_fn=lambda p: p._replace(left=0), is_leaf=is_pair)
    assert new == [Pair(1, 2), Pair(0, 4)]
    with pytest.raises(ValueError, match="is_leaf"):
        ec.tree_at(lambda t: t[1].left, tree, 0, is_leaf=is_pair)


def test_tree_at_namedtuples_and_dicts():
    tree = Pair({"x": 1, "y": 2}, [3])
    new = ec.tree_at(lambda t: t.left["y"], tree, 20)
    assert new == Pair({"x": 1, "y": 20}, [3]) and type(new) is Pair


def test_tree_at_where_may_pick_leaves_by_their_properties():
    model = make_mlp()
    matrices = lambda m: [x for x in jtu.tree_leaves(m) if x.ndim == 2]  # noqa: E731
    new = ec.tree_at(matrices, model, replace_fn=jnp.zeros_like)
    assert all(jnp.all(layer.weight == 0) for layer in new.layers)
    np.testing.assert_array_equal(new.layers[0].bias, model.layers[0].bias)


def test_tree_at_where_may_branch_on_none():
    model = make_mlp()
    where = lambda m: [layer.bias for layer in m.layers if layer.bias is not None]  # noqa: E731
    new = ec.tree_at(where, model, replace_fn=lambda b: b + 1)
    np.testing.assert_array_equal(new.layers[0].bias, 1)
    assert new.layers[1].bias is None


def test_tree_at_duplicates_and_nesting():
    tree = [1, [2, 3]]
    assert ec.tree_at(lambda t: (t[0], t[0]), tree, replace_fn=lambda x: x + 1) == [2, [2, 3]]
    same = object()
    assert ec.tree_at(lambda t: (t[0], t[0]), tree, (same, same))[0] is same
    with pytest.raises(ValueError, match="more than once"):
        ec.tree_at(lambda t: (t[0], t[0]), tree, (5, 6))
    with pytest.raises(ValueError, match="inside it"):
        ec.tree_at(lambda t: (t[1], t[1][0]), tree, (5, 6))


@pytest.mark.parametrize(
    "where",
    [lambda t: jnp.ones(2), lambda t: 3, lambda t: [t["a"], "fresh"], lambda t: {"a": t["a"]}],
)
def test_tree_at_not_in_tree_is_a_clear_error(where):
    tree = {"a": jnp.ones(2), "b": 3}
    with pytest.raises(ValueError, match="not in the tree"):
        ec.tree_at(where, tree, 0)


def test_tree_at_none_not_in_tree_is_a_clear_error():
    with pytest.raises(ValueError, match="is_leaf=lambda x: x is None"):
        ec.tree_at(lambda t: None, [1, 2], 0)


def test_tree_at_computing_in_where_is_a_clear_error():
    tree = {"a": jnp.ones(2)}
    with pytest.raises(TypeError, match="only pick"):
        ec.tree_at(lambda t: t["a"] + 1, tree, 0)


def test_tree_at_where_own_errors_pass_through():
    model = make_mlp()
    with pytest.raises(AttributeError, match="wieght"):
        ec.tree_at(lambda m: m.layers[0].wieght, model, 0)
    with pytest.raises(IndexError):
        ec.tree_at(lambda m: m.layers[5], model, 0)


def test_tree_at_where_may_use_properties_and_methods():
    class Sized(ec.Module):
        weight: jax.Array

        @property
        def out_size(self):
            return self.weight.shape[0]

        def pick(self):
            return self.weight

    model = Sized(jnp.ones((4, 2)))
    new = ec.tree_at(lambda m: m.pick() if m.out_size == 4 else None, model, 0)
    assert new.weight == 0


def test_tree_at_replace_length_mismatch():
    tree = [1, 2, 3]
    with pytest.raises(ValueError, match="selected 2 nodes but `replace` has 3"):
        ec.tree_at(lambda t: (t[0], t[1]), tree, (1, 2, 3))
    with pytest.raises(ValueError, match="tuple/list"):
        ec.tree_at(lambda t: (t[0], t[1]), tree, 7)


def test_tree_at_argument_errors():
    with pytest.raises(TypeError, match="neither"):
        ec.tree_at(lambda t: t[0], [1])
    with pytest.raises(TypeError, match="both"):
        ec.tree_at(lambda t: t[0], [1], 2, replace_fn=lambda x: x)
    with pytest.raises(TypeError, match="where"):
        ec.tree_at("t[0]", [1], 2)
    with pytest.raises(TypeError, match="replace_fn"):
        ec.tree_at(lambda t: t[0], [1], replace_fn=3)
    with pytest.raises(TypeError, match="is_leaf"):
        ec.tree_at(lambda t: t[0], [1], 2, is_leaf=True)


def test_tree_at_cycle_is_a_clear_error():
    tree = [1]
    tree.append(tree)
    with pytest.raises(ValueError, match="cycle"):
        ec.tree_at(lambda t: t[0], tree, 2)


def test_tree_at_inside_jit():
    model = make_mlp()

    @jax.jit
    def scale(m, s):
        return ec.tree_at(lambda m: m.layers[0].weight, m, replace_fn=lambda w: w * s)

    new = scale(model, 3.0)
    np.testing.assert_array_equal(new.layers[0].weight, 3.0)


# ================================================================ tree_equal


def _jax_bool(out, expected):
    """Equinox's answer type when JAX array values were compared: a JAX bool scalar."""
    return (
        isinstance(out, jax.Array)
        and out.dtype == jnp.bool_
        and out.shape == ()
        and bool(out) is expected
    )


def test_tree_equal_basics():
    a = {"x": jnp.arange(3.0), "y": [1, "s", None]}
    b = {"x": jnp.arange(3.0), "y": [1, "s", None]}
    assert _jax_bool(ec.tree_equal(a, b), True)
    assert _jax_bool(ec.tree_equal(a, b, a), True)
    assert ec.tree_equal(a) is True
    assert _jax_bool(ec.tree_equal(a, {"x": jnp.arange(3.0) + 1, "y": [1, "s", None]}), False)
    # a non-array leaf that differs answers a plain False, wherever it is
    assert ec.tree_equal(a, {"x": jnp.arange(3.0), "y": [1, "t", None]}) is False
    assert ec.tree_equal([jnp.ones(2), 1], [jnp.zeros(2), 2]) is False


def test_tree_equal_numpy_only_answers_python_bools():
    x = np.array([1.0, 2.0], np.float32)
    assert ec.tree_equal(x, x.copy()) is True
    assert ec.tree_equal(x, x + 1) is False
    assert ec.tree_equal(x, x + 1e-6, atol=1e-3) is True
    assert ec.tree_equal(np.float32(1), np.array(1, np.float32)) is True


def test_tree_equal_structure_shape_dtype():
    assert ec.tree_equal([1, 2], (1, 2)) is False
    assert ec.tree_equal([1, 2], [1, 2, 3]) is False
    assert ec.tree_equal(jnp.ones(2), jnp.ones(3)) is False
    assert ec.tree_equal(jnp.ones(2), jnp.ones((2, 1))) is False
    assert ec.tree_equal(jnp.ones(2), jnp.ones(2, jnp.int32)) is False
    assert ec.tree_equal(jnp.ones(2), 1.0) is False
    assert ec.tree_equal(None, None) is True


def test_tree_equal_numpy_and_jax():
    assert _jax_bool(ec.tree_equal(np.ones(2, np.float32), jnp.ones(2)), True)
    assert ec.tree_equal(np.ones(2, np.float32), jnp.ones(2), typematch=True) is False
    assert ec.tree_equal(np.ones(2), jnp.ones(2)) is False  # float64 vs float32


def test_tree_equal_typematch_on_python_leaves():
    assert ec.tree_equal(1, 1.0) is True
    assert ec.tree_equal(1, 1.0, typematch=True) is False
    assert ec.tree_equal(True, 1, typematch=True) is False


def test_tree_equal_tolerances():
    a, b = jnp.array([1.0, 2.0]), jnp.array([1.0, 2.001])
    assert _jax_bool(ec.tree_equal(a, b), False)
    assert _jax_bool(ec.tree_equal(a, b, rtol=1e-2), True)
    assert _jax_bool(ec.tree_equal(a, b, atol=1e-2), True)
    assert _jax_bool(ec.tree_equal(a, b, atol=1e-4), False)
    bools = jnp.array([True, False])
    assert _jax_bool(ec.tree_equal(bools, bools, atol=1.0), True)
    with pytest.raises(ValueError, match="rtol"):
        ec.tree_equal(a, b, rtol="small")
    with pytest.raises(ValueError, match="atol"):
        ec.tree_equal(a, b, atol="big")


def test_tree_equal_nan_is_unequal_like_eq():
    nan = jnp.array([jnp.nan])
    assert _jax_bool(ec.tree_equal(nan, nan), False)
    assert ec.tree_equal(np.array([np.nan]), np.array([np.nan])) is False


def test_tree_equal_prng_keys():
    k = jax.random.key(0)
    assert _jax_bool(ec.tree_equal(k, jax.random.key(0)), True)
    assert _jax_bool(ec.tree_equal(k, jax.random.key(1)), False)


def test_tree_equal_modules_static_fields_are_structure():
    a = Linear(jnp.ones((1, 2)), None, "a")
    assert _jax_bool(ec.tree_equal(a, Linear(jnp.ones((1, 2)), None, "a")), True)
    assert ec.tree_equal(a, Linear(jnp.ones((1, 2)), None, "b")) is False
    assert a == Linear(jnp.ones((1, 2)), None, "a")
    assert a != Linear(jnp.zeros((1, 2)), None, "a")
    assert _jax_bool(ec.tree_equal(make_mlp(), make_mlp()), True)


def test_tree_equal_needs_a_pytree():
    with pytest.raises(TypeError, match="at least one"):
        ec.tree_equal()


def test_tree_equal_inside_jit_returns_traced_bool():
    seen = []

    @jax.jit
    def f(x, y):
        out = ec.tree_equal({"a": x, "s": 1}, {"a": y, "s": 1})
        seen.append(out)
        return out

    assert bool(f(jnp.ones(3), jnp.ones(3)))
    assert not bool(f(jnp.ones(3), jnp.zeros(3)))
    assert isinstance(seen[0], jax.core.Tracer)
    assert seen[0].dtype == jnp.bool_ and seen[0].shape == ()


def test_tree_equal_inside_jit_is_static_when_it_can_be():
    const = jnp.ones(2)

    @jax.jit
    def f(x):
        # Structure/shape mismatches and concrete values are decided at trace time.
        assert ec.tree_equal(x, jnp.ones(4)) is False
        assert ec.tree_equal([x, 1], [x, 2]) is False
        assert ec.tree_equal(np.ones(2), np.ones(2)) is True  # NumPy only: decided now
        # A JAX array, even a closed-over concrete one, answers a traced bool (as Equinox).
        assert isinstance(ec.tree_equal(const, np.ones(2, np.float32)), jax.core.Tracer)
        return ec.tree_equal(x, x + 0, rtol=1e-6)

    assert bool(f(jnp.ones(3)))


# ================================================================ tree_check


def test_tree_check_accepts_well_formed_trees():
    x = jnp.ones(2)
    ec.tree_check(make_mlp())
    ec.tree_check([x, x, 1, 1])  # repeated leaves are fine
    ec.tree_check([None, None, (), (), Empty(), Empty()])
    empty = Empty()
    ec.tree_check([empty, empty])  # nothing to untie


def test_tree_check_rejects_duplicate_modules_naming_the_paths():
    layer = Linear(jnp.ones((1, 1)), None)
    with pytest.raises(ValueError, match=r"Linear.*\.layers\[0\].*\.layers\[1\]"):
        ec.tree_check(MLP((layer, layer)))


def test_tree_check_rejects_duplicate_containers():
    inner = [1, 2]
    with pytest.raises(ValueError, match="twice"):
        ec.tree_check({"a": inner, "b": inner})


def test_tree_check_rejects_cycles():
    tree = [1]
    tree.append(tree)
    with pytest.raises(ValueError, match="cycle"):
        ec.tree_check(tree)


# ================================================================ tree_flatten_one_level


def test_tree_flatten_one_level():
    children, treedef = ec.tree_flatten_one_level([1, [2, 3], {"a": 4}])
    assert children == [1, [2, 3], {"a": 4}]
    assert jtu.tree_unflatten(treedef, ["x", "y", "z"]) == ["x", "y", "z"]
    assert ec.tree_flatten_one_level(5) == ([5], jtu.tree_structure(5))
    assert ec.tree_flatten_one_level(None) == ([], jtu.tree_structure(None))
    model = make_mlp()
    children, treedef = ec.tree_flatten_one_level(model)
    assert len(children) == 1 and children[0] is model.layers
    assert jtu.tree_unflatten(treedef, children) == model


def test_tree_flatten_one_level_rejects_self_containment():
    tree = [1]
    tree.append(tree)
    with pytest.raises(ValueError, match="contains itself"):
        ec.tree_flatten_one_level(tree)


# ================================================================ property tests

_leaves = st.one_of(
    st.integers(-5, 5),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.text(max_size=3),
    st.none(),
    st.builds(lambda n: np.arange(n, dtype=np.float32), st.integers(0, 3)),
)
pytrees = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from("abcd"), children, max_size=3),
        st.builds(Pair, children, children),
        st.builds(lambda w, b: Linear(w, b, "p"), children, children),
    ),
    max_leaves=10,
)


def _follow(tree, path):
    for key in path:
        if isinstance(key, jtu.SequenceKey):
            tree = tree[key.idx]
        elif isinstance(key, jtu.DictKey):
            tree = tree[key.key]
        else:
            tree = getattr(tree, key.name)
    return tree


def _node_paths(tree):
    """Key paths of every node (leaves, None included, and internal nodes)."""
    leaves = jtu.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
    paths = {()}
    for path, _ in leaves:
        paths.update(path[:i] for i in range(len(path) + 1))
    return sorted(paths, key=lambda p: (len(p), str(p)))


def _ambiguous_none(tree, path):
    """Selecting a None while the tree holds several is refused (as in Equinox)."""
    nones = sum(x is None for x in jtu.tree_leaves(tree, is_leaf=lambda x: x is None))
    return _follow(tree, path) is None and nones > 1


@given(pytrees, st.data())
def test_tree_at_replace_then_read_back(tree, data):
    path = data.draw(st.sampled_from(_node_paths(tree)))
    marker = object()
    if _ambiguous_none(tree, path):
        with pytest.raises(ValueError, match="uniquely identify"):
            ec.tree_at(lambda t: _follow(t, path), tree, marker)
        return
    new = ec.tree_at(lambda t: _follow(t, path), tree, marker)
    assert _follow(new, path) is marker
    # Everything outside the replaced node is unchanged.
    undo = ec.tree_at(lambda t: _follow(t, path), new, _follow(tree, path))
    assert ec.tree_equal(undo, tree, typematch=True)


@given(pytrees)
def test_tree_at_identity_replace_fn_is_a_no_op(tree):
    for path in _node_paths(tree):
        if _ambiguous_none(tree, path):
            continue
        new = ec.tree_at(lambda t, p=path: _follow(t, p), tree, replace_fn=lambda x: x)
        assert ec.tree_equal(new, tree, typematch=True)


@given(pytrees)
def test_tree_equal_is_reflexive(tree):
    # The leaves here are Python values and NumPy arrays: plain Python bools throughout.
    assert ec.tree_equal(tree, tree) is True
    copy = jtu.tree_map(lambda x: x.copy() if isinstance(x, np.ndarray) else x, tree)
    assert ec.tree_equal(tree, copy, typematch=True) is True
    jax_copy = jtu.tree_map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, tree)
    has_arrays = any(isinstance(x, np.ndarray) for x in jtu.tree_leaves(tree))
    out = ec.tree_equal(tree, jax_copy)
    assert _jax_bool(out, True) if has_arrays else out is True


@pytest.mark.parametrize(
    "rtol, atol", [(-1.0, 0.0), (-1.0, 0.1), (0.0, -1.0), (-0.5, 1.0), (True, 0)]
)
def test_tree_equal_accepts_any_real_tolerance_as_allclose_does(rtol, atol):
    import numpy as np

    pairs = [
        (np.ones(2), np.ones(2)),
        (np.ones(2), np.ones(2) * 1.05),
        (np.ones(2), np.ones(2) * 1.5),
    ]
    for a, b in pairs:
        expected = bool(np.allclose(a, b, rtol=rtol, atol=atol))
        assert ec.tree_equal(a, b, rtol=rtol, atol=atol) is expected
        assert bool(ec.tree_equal(jnp.asarray(a), jnp.asarray(b), rtol=rtol, atol=atol)) is expected
        traced = jax.jit(lambda x, y: ec.tree_equal(x, y, rtol=rtol, atol=atol))(a, b)
        assert bool(traced) is expected
