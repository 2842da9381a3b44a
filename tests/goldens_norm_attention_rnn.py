"""Shared helpers for the tests of dropout, embedding, attention, normalisation,
activation and recurrent layers: PyTorch goldens, VJP comparison, the jit/vmap/grad
round trip. Never imports torch: goldens come from tests/torch_goldens/norm_attention_rnn.npz."""

from __future__ import annotations

import functools
import json
import pathlib
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import jax.test_util
import jax.tree_util as jtu
import numpy as np

import ecliptic

GOLDEN_PATH = pathlib.Path(__file__).parent / "torch_goldens" / "norm_attention_rnn.npz"
RTOL = 1e-5
ATOL = 1e-6


@functools.cache
def _goldens() -> dict[str, np.ndarray]:
    with np.load(GOLDEN_PATH) as data:
        return {k: data[k] for k in data.files}


def golden(case: str) -> SimpleNamespace:
    """One golden case: cfg, inputs, params (torch layout), outs, cts, grads, extra."""
    prefix = case + "."
    items = {k[len(prefix) :]: v for k, v in _goldens().items() if k.startswith(prefix)}
    if not items:
        raise KeyError(f"no golden case {case!r} in {GOLDEN_PATH}")

    def group(tag: str) -> dict[str, np.ndarray]:
        return {k[len(tag) + 1 :]: v for k, v in items.items() if k.startswith(tag + ".")}

    outs = [items["out"]] + ([items["out2"]] if "out2" in items else [])
    cts = [items["ct"]] + ([items["ct2"]] if "ct2" in items else [])
    return SimpleNamespace(
        cfg=json.loads(str(items["cfg"])),
        inputs=group("in"),
        params=group("param"),
        grads=group("grad"),
        outs=outs,
        cts=cts,
        extra=items,
    )


_RNG = np.random.default_rng(0)


def randn(*shape: int, dtype: Any = np.float32, scale: float = 1.0) -> np.ndarray:
    """Test inputs from NumPy: no XLA compilation per shape, unlike jax.random."""
    return (scale * _RNG.standard_normal(shape)).astype(dtype)


@ecliptic.filter_jit
def _jcall(module: Any, args: tuple, kwargs: dict) -> Any:
    return module(*args, **kwargs)


def jcall(module: Any, *args: Any, **kwargs: Any) -> Any:
    """``module(*args, **kwargs)`` compiled: a whole call is one compilation, where eager
    dispatch compiles every primitive for every new shape (much slower on CPU). Arrays
    are traced; everything else (flags, Python-scalar fields) is static."""
    return _jcall(module, args, kwargs)


def many_inits(make: Any, n: int = 200) -> Any:
    """``make(key)`` for ``n`` seeds, leaves stacked (as NumPy). A Python loop, not
    ``jax.vmap``: eager construction reuses the layer's compiled init, whereas a vmapped
    threefry PRNG over many keys is slow to compile on CPU."""
    layers = [make(jax.random.key(seed)) for seed in range(n)]
    return jtu.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers)


def init_stat(name: str) -> SimpleNamespace:
    g = _goldens()
    return SimpleNamespace(**{s: float(g[f"init.{name}.{s}"]) for s in ("std", "absmax", "mean")})


def replace(module: Any, **fields: Any) -> Any:
    """A copy of a Module with some fields replaced (even None <-> array), traceable."""
    leaves, treedef = jtu.tree_flatten(module)
    new = jtu.tree_unflatten(treedef, leaves)
    for name, value in fields.items():
        object.__setattr__(new, name, value)  # tests only: bypass the frozen check
    return new


def check_golden(case: SimpleNamespace, fn: Any, rtol: float = RTOL, atol: float = ATOL) -> None:
    """``fn(params, inputs)`` builds the layer from torch-layout ``params`` and calls it.
    Checks its output(s) and the VJP, for the golden cotangent, w.r.t. every floating
    input and parameter against PyTorch's."""
    # NumPy arrays go straight into the compiled function (jnp.asarray would compile a
    # copy per shape).
    is_float = lambda v: np.issubdtype(v.dtype, np.floating)
    diff_in = {k: v for k, v in case.inputs.items() if is_float(v)}
    fixed_in = {k: v for k, v in case.inputs.items() if not is_float(v)}
    params = dict(case.params)

    def f(p: dict, i: dict) -> Any:
        return fn(p, {**i, **fixed_in})

    # One compiled program per case: eager op-by-op dispatch is far slower.
    @jax.jit
    def value_and_vjp(p: dict, i: dict, cts: tuple) -> Any:
        out, vjp = jax.vjp(f, p, i)
        return out, vjp(cts if isinstance(out, tuple) else cts[0])

    cts = tuple(case.cts)
    out, (g_params, g_in) = value_and_vjp(params, diff_in, cts)
    outs = list(out) if isinstance(out, tuple) else [out]
    assert len(outs) == len(case.outs)
    for got, want in zip(outs, case.outs):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    got_grads = {**g_params, **g_in}
    assert set(got_grads) == set(case.grads), (set(got_grads), set(case.grads))
    for name, want in case.grads.items():
        np.testing.assert_allclose(got_grads[name], want, rtol=rtol, atol=atol, err_msg=name)


def check_grads_f64(f: Any, args: tuple) -> None:
    """Reverse-mode gradients of ``f`` against finite differences (call under x64)."""
    jax.test_util.check_grads(jax.jit(f), args, order=1, modes=("rev",))


def roundtrip(layer: Any, batched_args: tuple, call: Any = None, atol: float = 1e-5) -> None:
    """jit + vmap + grad: the jitted, vmapped call equals a Python loop of single calls,
    and the gradient of its sum w.r.t. the layer is finite with the layer's structure.

    ``batched_args`` have a leading batch axis; ``call(layer, *args)`` defaults to
    ``layer(*args)``."""
    call = call or (lambda m, *a: m(*a))

    def batched(m: Any, args: tuple) -> Any:
        return jax.vmap(lambda *a: call(m, *a))(*args)

    def loss(m: Any, args: tuple) -> jax.Array:
        return sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in jtu.tree_leaves(batched(m, args)))  # pyright: ignore[reportReturnType]

    params = ecliptic.filter(layer, ecliptic.is_inexact_array)
    has_params = bool(jtu.tree_leaves(params))

    # Output and gradient in one compiled program (each compilation costs more than a run).
    # Parameter-free layers have nothing to differentiate (filter_grad refuses them).
    out, grads = ecliptic.filter_jit(
        lambda m, a: (batched(m, a), ecliptic.filter_grad(loss)(m, a) if has_params else None)
    )(layer, batched_args)
    # Results to NumPy at once: indexing/reducing JAX arrays eagerly compiles per shape.
    out = jtu.tree_map(np.asarray, out)
    n = jtu.tree_leaves(batched_args)[0].shape[0]
    single_call = ecliptic.filter_jit(call)
    for i in range(n):
        single = single_call(layer, *jtu.tree_map(lambda a, i=i: a[i], batched_args))
        jtu.tree_map(
            lambda b, s, i=i: np.testing.assert_allclose(b[i], s, rtol=1e-5, atol=atol),
            out,
            single,
        )
    if not has_params:
        return
    assert jtu.tree_structure(grads) == jtu.tree_structure(params)
    for g in jtu.tree_leaves(grads):
        assert np.all(np.isfinite(np.asarray(g, np.float32)))
