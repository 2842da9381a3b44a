"""filter_shard and the sharding helpers, on 8 virtual CPU devices (see conftest.py)."""

import importlib.util
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

import ecliptic as eqx
from ecliptic import sharding

# The training step and placement that the examples use (examples/sharded_training.py).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "examples"))
from sharded_training import bytes_per_device, prepare  # noqa: E402

IN, WIDTH, OUT, BATCH = 16, 32, 8, 64


def auto_mesh(shape=(8,), names=("data",)):
    # FSDP relies on XLA's automatic propagation to gather parameters: Auto axes.
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


@pytest.fixture(scope="module")
def mesh():
    return auto_mesh()


@pytest.fixture(scope="module")
def model():
    return eqx.nn.MLP(IN, OUT, WIDTH, 2, key=jax.random.key(0))


@pytest.fixture(scope="module")
def data():
    kx, ky = jax.random.split(jax.random.key(1))
    return jax.random.normal(kx, (BATCH, IN)), jax.random.normal(ky, (BATCH, OUT))


def spec_of(array):
    return array.sharding.spec


def same_sharding(array, mesh, spec):
    return array.sharding.is_equivalent_to(NamedSharding(mesh, spec), array.ndim)


# -- filter_shard ----------------------------------------------------------------------


def test_filter_shard_outside_jit_moves_arrays_and_keeps_the_rest():
    device = jax.devices()[3]
    tree = {"a": jnp.ones(3), "b": np.zeros(2), "n": 1.5, "f": jnp.sin}
    out = eqx.filter_shard(tree, device)
    assert out["a"].sharding == SingleDeviceSharding(device)
    assert out["b"].sharding == SingleDeviceSharding(device)
    assert out["n"] == 1.5 and out["f"] is jnp.sin


def test_filter_shard_prefix_of_shardings(mesh):
    x = (jnp.ones((8, 2)), (jnp.ones(8), "static"))
    shardings = (NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))
    a, (b, s) = eqx.filter_shard(x, shardings)
    assert same_sharding(a, mesh, P("data")) and same_sharding(b, mesh, P())
    assert s == "static"


def test_filter_shard_inside_jit_constrains(mesh):
    @eqx.filter_jit
    def f(x, tag):
        assert tag == "tag"
        return eqx.filter_shard(x * 2, NamedSharding(mesh, P("data")))

    x = jnp.arange(16.0)
    out = f(x, "tag")
    assert same_sharding(out, mesh, P("data"))
    np.testing.assert_array_equal(out, x * 2)


def test_filter_shard_inside_jit_explicit_mesh_reshards():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))

    @eqx.filter_jit
    def f(x):
        return eqx.filter_shard(x + 1, NamedSharding(mesh, P("data")))

    with jax.set_mesh(mesh):
        out = f(jax.device_put(jnp.zeros(16), NamedSharding(mesh, P())))
    assert same_sharding(out, mesh, P("data"))


def test_filter_shard_bad_prefix_names_the_structures():
    with pytest.raises(ValueError, match="pytree prefix of x"):
        eqx.filter_shard((jnp.ones(2), 1), (jax.devices()[0],) * 3)


# -- rules -----------------------------------------------------------------------------


def test_replicate_is_the_default(model, mesh):
    placed = eqx.shard_params(model, mesh)
    for leaf in jax.tree.leaves(eqx.filter(placed, eqx.is_array)):
        assert same_sharding(leaf, mesh, P())
        assert len(leaf.sharding.device_set) == 8
    assert placed.activation is model.activation


def test_fsdp_shards_largest_divisible_dimension(mesh):
    params = {
        "tall": jnp.zeros((64, 16)),  # largest dim 0
        "wide": jnp.zeros((16, 64)),  # largest dim 1
        "odd": jnp.zeros((63, 40)),  # only dim 1 divisible by 8
        "prime": jnp.zeros((7, 9)),  # nothing divisible: replicated
        "small": jnp.zeros((8,)),  # below min_size: replicated
        "scalar": jnp.zeros(()),
    }
    placed = eqx.shard_params(params, mesh, sharding.fsdp("data", min_size=16))
    expected = {
        "tall": P("data"),
        "wide": P(None, "data"),
        "odd": P(None, "data"),
        "prime": P(),
        "small": P(),
        "scalar": P(),
    }
    for name, spec in expected.items():
        assert same_sharding(placed[name], mesh, spec), (name, spec_of(placed[name]))


def test_by_path_rules_on_dotted_names(model):
    mesh = auto_mesh((4, 2), ("data", "model"))
    rules = {
        "layers.0.weight": P("model", None),
        "layers.*.bias": P(),
        "*.weight": sharding.fsdp("data", min_size=0),
    }
    shardings = eqx.param_shardings(model, mesh, rules)
    assert shardings.layers[0].weight.spec == P("model", None)
    assert shardings.layers[1].weight.spec == P("data")  # 32x32: first dim on ties
    assert shardings.layers[2].weight.spec == P(None, "data")  # (8, 32)
    for layer in shardings.layers:
        assert layer.bias.spec == P()
    assert shardings.activation is None
    placed = eqx.shard_params(model, mesh, sharding.by_path(rules))
    assert same_sharding(placed.layers[0].weight, mesh, P("model", None))
    assert same_sharding(placed.layers[2].weight, mesh, P(None, "data"))


def test_by_path_default_and_first_match_wins(model, mesh):
    rules = sharding.by_path(
        {"layers.0.*": P(), "layers.*": P("data")}, default=sharding.replicate()
    )
    shardings = eqx.param_shardings({"layers": model.layers, "extra": jnp.ones(3)}, mesh, rules)
    assert shardings["layers"][0].weight.spec == P()
    assert shardings["layers"][1].weight.spec == P("data")
    assert shardings["extra"].spec == P()


def test_custom_callable_rule(model, mesh):
    def rule(name, leaf, mesh):
        return P("data") if name.endswith("bias") and leaf.shape[0] % 8 == 0 else P()

    shardings = eqx.param_shardings(model, mesh, rule)
    assert shardings.layers[0].bias.spec == P("data")
    assert shardings.layers[0].weight.spec == P()


def test_rule_errors_are_clear(model, mesh):
    with pytest.raises(ValueError, match=r"mesh axis 'model' is not in the mesh.*'data'"):
        eqx.param_shardings(model, mesh, {"*.weight": P("model")})
    with pytest.raises(ValueError, match=r"layers.2.bias.*not divisible.*8 devices"):
        narrow = eqx.nn.MLP(IN, 4, WIDTH, 2, key=jax.random.key(0))  # last bias: (4,)
        eqx.param_shardings(narrow, mesh, {"*.bias": P("data")})
    with pytest.raises(ValueError, match="has 3 entries but the parameter has only 1"):
        eqx.param_shardings(model, mesh, {"*.bias": P(None, None, "data")})
    with pytest.raises(ValueError, match="mesh axis 'model' is not in the mesh"):
        eqx.param_shardings(model, mesh, sharding.fsdp("model"))
    with pytest.raises(TypeError, match="expected a jax.sharding.PartitionSpec"):
        eqx.param_shardings(model, mesh, lambda name, leaf, mesh: "data")
    with pytest.raises(TypeError, match="rules must be a sharding rule"):
        eqx.param_shardings(model, mesh, P("data"))
    with pytest.raises(TypeError, match="must be a PartitionSpec or a rule"):
        sharding.by_path({"*": "data"})  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="min_size"):
        sharding.fsdp("data", min_size=-1)


# -- batch and optimizer state ---------------------------------------------------------


def test_shard_batch(mesh):
    x, y, n = eqx.shard_batch((jnp.ones((16, 3)), jnp.zeros(16), 3), mesh, "data")
    assert same_sharding(x, mesh, P("data")) and same_sharding(y, mesh, P("data"))
    assert n == 3
    with pytest.raises(ValueError, match=r"batch\[0\].*divisible by the 8 devices"):
        eqx.shard_batch((jnp.ones((12, 3)),), mesh)
    with pytest.raises(ValueError, match="mesh axis 'batch' is not in the mesh"):
        eqx.shard_batch(jnp.ones(8), mesh, "batch")


def test_opt_state_follows_params(model, mesh):
    placed = eqx.shard_params(model, mesh, sharding.fsdp("data", min_size=0))
    params = eqx.filter(placed, eqx.is_inexact_array)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    opt_state = eqx.shard_opt_state(optimizer.init(params), placed)
    adam = opt_state[1][0]
    for moment in (adam.mu, adam.nu):
        for p, m in zip(jax.tree.leaves(placed), jax.tree.leaves(moment)):
            assert m.sharding == p.sharding
    assert same_sharding(adam.count, mesh, P())
    # From shardings (as inside a trace) rather than placed arrays: the same answer.
    shardings = eqx.param_shardings(model, mesh, sharding.fsdp("data", min_size=0))
    from_shardings = eqx.opt_state_shardings(optimizer.init(params), shardings)
    assert from_shardings[1][0].mu.layers[0].weight == placed.layers[0].weight.sharding


def test_opt_state_needs_a_mesh_when_params_have_none():
    with pytest.raises(ValueError, match="Pass mesh"):
        eqx.opt_state_shardings({"count": jnp.zeros(())}, {"w": None})


# -- training: one device vs data parallel vs FSDP -------------------------------------


def train(model, data, mesh=None, rules=None, steps=6):
    model, opt_state, step, (x, y) = prepare(model, optax.adam(1e-2), data, mesh, rules)
    model, opt_state, loss = step(model, opt_state, x, y)  # compile
    losses = [loss]
    # Steady state: no host<->device or device<->device transfers at all.
    with jax.transfer_guard("disallow"):
        for _ in range(steps - 1):
            model, opt_state, loss = step(model, opt_state, x, y)
            losses.append(loss)
    return np.array([float(v) for v in losses]), model, opt_state, step, (x, y)


FSDP = sharding.fsdp("data", min_size=0)


@pytest.fixture(scope="module")
def single(model, data):
    return train(model, data)


@pytest.fixture(scope="module")
def data_parallel(model, data, mesh):
    return train(model, data, mesh, None)


@pytest.fixture(scope="module")
def fully_sharded(model, data, mesh):
    return train(model, data, mesh, FSDP)


@pytest.mark.parametrize(
    "run, rules", [("data_parallel", None), ("fully_sharded", FSDP)], ids=["dp", "fsdp"]
)
def test_parallel_training_matches_one_device(model, mesh, single, request, run, rules):
    losses, trained, opt_state, _, _ = request.getfixturevalue(run)
    np.testing.assert_allclose(losses, single[0], rtol=1e-5, atol=1e-5)
    assert losses[-1] < losses[0]
    # Parameters and optimizer state stayed where the rules put them.
    expected = eqx.param_shardings(model, mesh, rules)
    for leaf, sh in zip(
        jax.tree.leaves(eqx.filter(trained, eqx.is_array)), jax.tree.leaves(expected)
    ):
        assert leaf.sharding.is_equivalent_to(sh, leaf.ndim)
    for p, m in zip(jax.tree.leaves(trained), jax.tree.leaves(opt_state[0].mu)):
        assert m.sharding.is_equivalent_to(p.sharding, m.ndim)
    arrays = eqx.filter(trained, eqx.is_array), eqx.filter(single[1], eqx.is_array)
    for a, b in zip(*map(jax.tree.leaves, arrays)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_tensor_parallel_on_2d_mesh_matches_one_device(model, data, single):
    mesh = auto_mesh((4, 2), ("data", "model"))
    rules = sharding.by_path(
        {"layers.0.weight": P("model", None), "layers.1.weight": P(None, "model")},
        default=sharding.fsdp("data", min_size=0),
    )
    losses, trained, _, _, _ = train(model, data, mesh, rules)
    np.testing.assert_allclose(losses, single[0], rtol=1e-5, atol=1e-5)
    assert same_sharding(trained.layers[0].weight, mesh, P("model", None))


def test_step_is_one_executable_without_host_callbacks(fully_sharded):
    _, trained, opt_state, step, (x, y) = fully_sharded
    jaxpr = step.trace(trained, opt_state, x, y).jaxpr
    primitives = {eqn.primitive.name for eqn in jaxpr.jaxpr.eqns}
    assert not any("callback" in name for name in primitives), primitives
    compiled = step.lower(trained, opt_state, x, y).compile()
    targets = re.findall(r'custom_call_target="([^"]*)"', compiled.as_text())
    assert not any("callback" in target for target in targets), targets
    with jax.transfer_guard("disallow"):
        _, _, loss = compiled(trained, opt_state, x, y)
        _, _, expected = step(trained, opt_state, x, y)
    assert float(loss) == float(expected)


def test_fsdp_stores_an_eighth_of_the_parameters_per_device(model, mesh):
    replicated = bytes_per_device(eqx.shard_params(model, mesh))
    fsdp = bytes_per_device(eqx.shard_params(model, mesh, sharding.fsdp("data", min_size=0)))
    assert len(replicated) == len(fsdp) == 8
    total = sum(leaf.nbytes for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
    for device in replicated:
        assert replicated[device] == total
        assert fsdp[device] * 8 == replicated[device]


def test_parallelism_example_runs():
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "parallelism.py"
    spec = importlib.util.spec_from_file_location("example_parallelism", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    losses = module.main(steps=3)
    np.testing.assert_allclose(losses["FSDP"], losses["1 device"], rtol=1e-5, atol=1e-5)


def test_opt_state_from_traced_params_asks_for_shardings(model, mesh):
    @eqx.filter_jit
    def f(model):
        return eqx.opt_state_shardings({"mu": model}, model)

    with pytest.raises(ValueError, match="param_shardings"):
        f(model)


def test_rule_names_match_named_parameters():
    tree = {"mlp": eqx.nn.MLP(2, 3, 4, 1, key=jax.random.key(0)), "seq": [jnp.ones(2)]}
    seen = []
    eqx.param_shardings(tree, auto_mesh(), lambda name, leaf, mesh: seen.append(name) or P())
    assert seen == [
        "mlp.layers.0.weight",
        "mlp.layers.0.bias",
        "mlp.layers.1.weight",
        "mlp.layers.1.bias",
        "seq.0",
    ]
    if hasattr(eqx, "named_parameters"):  # the state-dict naming, when present
        assert seen == [name for name, _ in eqx.named_parameters(tree)]
