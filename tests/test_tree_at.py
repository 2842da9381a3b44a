"""Tests for tree_at: out-of-place replacement of nodes picked by a `where` function."""

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tree_helpers import MLP, Empty, Linear, Pair, make_mlp, pytrees

import ecliptic as ec

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
        ec.tree_at("t[0]", [1], 2)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="replace_fn"):
        ec.tree_at(lambda t: t[0], [1], replace_fn=3)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="is_leaf"):
        ec.tree_at(lambda t: t[0], [1], 2, is_leaf=True)  # pyright: ignore[reportArgumentType]


def test_tree_at_cycle_is_a_clear_error():
    tree: list[object] = [1]
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


# ================================================================ property tests


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
