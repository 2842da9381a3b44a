"""Generate PyTorch reference values for dropout, embedding, attention, normalisation,
activation and recurrent layers (tests/test_nn_*.py).

Run with the torch virtualenv (the test suite itself never imports torch):

    .venv-torch/bin/python tests/torch_goldens/gen_norm_attention_rnn.py

Writes tests/torch_goldens/norm_attention_rnn.npz. Every case ``c`` stores, in float32 and PyTorch's
layouts: ``c.cfg`` (a JSON string of the layer options), the inputs ``c.in.<name>``, the
parameters ``c.param.<name>``, the output(s) ``c.out`` (and ``c.out2`` for a second
output), a fixed random cotangent ``c.ct`` (``c.ct2``), and the vector-Jacobian products
``c.grad.<name>`` with respect to every input and parameter.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import torch  # pyright: ignore[reportMissingImports]
import torch.nn as nn  # pyright: ignore[reportMissingImports]

torch.set_default_dtype(torch.float32)
OUT = pathlib.Path(__file__).with_name("norm_attention_rnn.npz")
store: dict[str, np.ndarray] = {}


def save_case(name, cfg, inputs, params, outputs, seed):
    """Record inputs/params/outputs of one case and the VJP for a random cotangent."""
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    gen = torch.Generator().manual_seed(seed + 1000)
    cts = tuple(torch.randn(o.shape, generator=gen) for o in outputs)
    wrt = {f"in.{k}": v for k, v in inputs.items()}
    wrt.update({f"param.{k}": v for k, v in params.items()})
    diff = {k: v for k, v in wrt.items() if v.is_floating_point() and v.requires_grad}
    grads = torch.autograd.grad(outputs, list(diff.values()), cts, allow_unused=True)
    store[f"{name}.cfg"] = np.array(json.dumps(cfg))
    for k, v in wrt.items():
        store[f"{name}.{k}"] = v.detach().numpy()
    for i, (o, ct) in enumerate(zip(outputs, cts)):
        suffix = "" if i == 0 else str(i + 1)
        store[f"{name}.out{suffix}"] = o.detach().numpy()
        store[f"{name}.ct{suffix}"] = ct.numpy()
    for (k, _), g in zip(diff.items(), grads):
        label = k.split(".", 1)[1]
        store[f"{name}.grad.{label}"] = (
            np.zeros(diff[k].shape, np.float32) if g is None else g.numpy()
        )


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def randn(*shape, gen):
    return leaf(torch.randn(*shape, generator=gen))


# ----------------------------------------------------------------------------- embedding
def gen_embedding():
    torch.manual_seed(0)
    layer = nn.Embedding(10, 4)
    idx = torch.tensor([[1, 2, 3], [9, 0, 1]])
    w = leaf(layer.weight)
    out = torch.nn.functional.embedding(idx, w)
    save_case("embedding", {}, {"x": idx}, {"weight": w}, out, 0)


def rope_reference(x, theta):
    """Half-split RoPE as a complex rotation: z = x1 + i x2 times exp(i t w)."""
    seq, d = x.shape
    half = d // 2
    w = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / d)
    angles = torch.arange(seq, dtype=torch.float64)[:, None] * w[None]
    rot = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)
    z = torch.complex(x[:, :half], x[:, half:]) * rot
    return torch.cat([z.real, z.imag], dim=-1)


def gen_rope():
    for name, seq, d, theta, seed in (("rope_a", 6, 8, 10000.0, 1), ("rope_b", 5, 6, 500.0, 2)):
        gen = torch.Generator().manual_seed(seed)
        x = randn(seq, d, gen=gen)
        cfg = {"embedding_size": d, "theta": theta}
        save_case(name, cfg, {"x": x}, {}, rope_reference(x, theta), seed)


# ------------------------------------------------------------------------- normalisation
def gen_norms():
    cases = [
        ("ln_a", (6,), (3, 6), True, True),
        ("ln_b", (4, 5), (2, 4, 5), True, True),
        ("ln_c", (6,), (3, 6), False, False),
        ("ln_d", (5,), (5,), True, False),
    ]
    for i, (name, shape, xshape, use_w, use_b) in enumerate(cases):
        gen = torch.Generator().manual_seed(10 + i)
        layer = nn.LayerNorm(shape, eps=1e-5, elementwise_affine=use_w, bias=use_b)
        x = randn(*xshape, gen=gen)
        params = {}
        if use_w:
            params["weight"] = leaf(1 + 0.5 * torch.randn(shape, generator=gen))
        if use_b:
            params["bias"] = leaf(0.5 * torch.randn(shape, generator=gen))
        out = torch.nn.functional.layer_norm(
            x, shape, params.get("weight"), params.get("bias"), eps=layer.eps
        )
        cfg = {"shape": list(shape), "use_weight": use_w, "use_bias": use_b}
        save_case(name, cfg, {"x": x}, params, out, 10 + i)

    for i, (name, groups, xshape, affine) in enumerate(
        [("gn_a", 2, (6, 4, 3), True), ("gn_b", 3, (6, 5), False), ("gn_c", 4, (8,), True)]
    ):
        gen = torch.Generator().manual_seed(20 + i)
        c = xshape[0]
        x = randn(*xshape, gen=gen)
        params = {}
        if affine:
            params["weight"] = leaf(1 + 0.5 * torch.randn(c, generator=gen))
            params["bias"] = leaf(0.5 * torch.randn(c, generator=gen))
        # torch wants a batch dimension: (1, C, *spatial).
        out = torch.nn.functional.group_norm(
            x[None], groups, params.get("weight"), params.get("bias"), eps=1e-5
        )[0]
        cfg = {"groups": groups, "channels": c, "affine": affine}
        save_case(name, cfg, {"x": x}, params, out, 20 + i)

    for i, (name, shape, xshape, affine) in enumerate(
        [("rms_a", (6,), (3, 6), True), ("rms_b", (4, 5), (2, 4, 5), False)]
    ):
        gen = torch.Generator().manual_seed(30 + i)
        layer = nn.RMSNorm(shape, eps=1e-5, elementwise_affine=affine)
        x = randn(*xshape, gen=gen)
        params = {}
        if affine:
            with torch.no_grad():
                layer.weight.copy_(1 + 0.5 * torch.randn(shape, generator=gen))
            params["weight"] = layer.weight
        out = layer(x)
        save_case(name, {"shape": list(shape), "use_weight": affine}, {"x": x}, params, out, 30 + i)


# --------------------------------------------------------------------------- activations
def gen_prelu():
    gen = torch.Generator().manual_seed(40)
    x = torch.randn(3, 4, 5, generator=gen)
    x[0, 0, :3] = 0.0  # the gradient at exactly 0 must follow PyTorch's choice
    x = leaf(x)
    layer = nn.PReLU(init=0.3)
    out = layer(x[None])[0]
    save_case("prelu_a", {"num_parameters": 1}, {"x": x}, {"weight": layer.weight}, out, 40)

    layer = nn.PReLU(num_parameters=3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.1, -0.2, 0.5]))
    x2 = randn(3, 4, gen=gen)
    out = layer(x2[None])[0]  # channel dimension is 1 in torch, 0 for our unbatched input
    save_case("prelu_c", {"num_parameters": 3}, {"x": x2}, {"weight": layer.weight}, out, 41)


# ------------------------------------------------------------------------------------ rnn
def gen_rnn():
    for i, (name, cls, bias) in enumerate(
        [
            ("gru_a", nn.GRUCell, True),
            ("gru_b", nn.GRUCell, False),
            ("lstm_a", nn.LSTMCell, True),
            ("lstm_b", nn.LSTMCell, False),
        ]
    ):
        torch.manual_seed(50 + i)
        cell = cls(5, 4, bias=bias)
        gen = torch.Generator().manual_seed(50 + i)
        x, h = randn(5, gen=gen), randn(4, gen=gen)
        params = dict(cell.named_parameters())
        if cls is nn.GRUCell:
            out = cell(x, h)
            save_case(name, {"bias": bias}, {"x": x, "h": h}, params, out, 50 + i)
        else:
            c = randn(4, gen=gen)
            out = cell(x, (h, c))
            save_case(name, {"bias": bias}, {"x": x, "h": h, "c": c}, params, out, 50 + i)


# ------------------------------------------------------------------------------ attention
def attention_reference(q_in, k_in, v_in, p, heads, qk, vo, mask):
    """Multi-head attention written with plain torch ops (mask: True = may attend)."""

    def proj(x, w, b):
        y = x @ w.T
        return y if b is None else y + b

    lq, lk = q_in.shape[0], k_in.shape[0]
    q = proj(q_in, p["wq"], p.get("bq")).view(lq, heads, qk).transpose(0, 1)
    k = proj(k_in, p["wk"], p.get("bk")).view(lk, heads, qk).transpose(0, 1)
    v = proj(v_in, p["wv"], p.get("bv")).view(lk, heads, vo).transpose(0, 1)
    logits = q @ k.transpose(1, 2) / math.sqrt(qk)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    out = (torch.softmax(logits, -1) @ v).transpose(0, 1).reshape(lq, heads * vo)
    return proj(out, p["wo"], p.get("bo"))


def random_mask(shape, gen):
    mask = torch.rand(shape, generator=gen) > 0.4
    mask[..., 0] = True  # every query may attend to something (PyTorch gives NaN otherwise)
    return mask


def gen_attention_with_torch_module():
    """Standard cases, also checked against torch.nn.MultiheadAttention."""
    cases = [
        ("att_std", 2, 8, 8, 8, True, None),
        ("att_kv", 2, 8, 5, 7, True, "2d"),
        ("att_nobias", 4, 8, 8, 6, False, "3d"),
    ]
    for i, (name, heads, e, kdim, vdim, bias, mask_kind) in enumerate(cases):
        torch.manual_seed(60 + i)
        gen = torch.Generator().manual_seed(60 + i)
        mha = nn.MultiheadAttention(e, heads, bias=bias, kdim=kdim, vdim=vdim, batch_first=True)
        lq, lk = 3, 4
        q, k, v = randn(lq, e, gen=gen), randn(lk, kdim, gen=gen), randn(lk, vdim, gen=gen)
        mask = None
        if mask_kind == "2d":
            mask = random_mask((lq, lk), gen)
        elif mask_kind == "3d":
            mask = random_mask((heads, lq, lk), gen)
        if mha._qkv_same_embed_dim:
            wq, wk, wv = mha.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        p = {"wq": leaf(wq), "wk": leaf(wk), "wv": leaf(wv), "wo": leaf(mha.out_proj.weight)}
        if bias:
            bq, bk, bv = mha.in_proj_bias.chunk(3)
            p.update(bq=leaf(bq), bk=leaf(bk), bv=leaf(bv), bo=leaf(mha.out_proj.bias))
        out = attention_reference(q, k, v, p, heads, e // heads, e // heads, mask)
        with torch.no_grad():
            # torch's boolean attn_mask means "blocked": the negation of ours.
            module_out, _ = mha(
                q[None],
                k[None],
                v[None],
                need_weights=False,
                attn_mask=None if mask is None else ~mask,
            )
        module_out = module_out[0]
        assert torch.allclose(out, module_out, atol=1e-5), name
        store[f"{name}.module_out"] = module_out.numpy()
        cfg = {
            "num_heads": heads,
            "query_size": e,
            "key_size": kdim,
            "value_size": vdim,
            "bias": [bias] * 4,
        }
        inputs = {"query": q, "key": k, "value": v}
        if mask is not None:
            inputs["mask"] = mask
        save_case(name, cfg, inputs, p, out, 60 + i)


def gen_attention_general():
    """Options torch.nn.MultiheadAttention lacks: per-head sizes, output size, mixed biases."""
    cases = [
        ("att_sizes", 3, 8, 6, 4, 3, 5, 6, (True, False, False, True), "3d"),
        ("att_single", 1, 4, 4, 4, 4, 4, 4, (False, True, True, False), "2d"),
    ]
    for i, (name, heads, qs, ks, vs, qk, vo, os_, biases, mask_kind) in enumerate(cases):
        gen = torch.Generator().manual_seed(70 + i)
        lq, lk = 4, 3
        q, k, v = randn(lq, qs, gen=gen), randn(lk, ks, gen=gen), randn(lk, vs, gen=gen)
        p = {
            "wq": randn(heads * qk, qs, gen=gen),
            "wk": randn(heads * qk, ks, gen=gen),
            "wv": randn(heads * vo, vs, gen=gen),
            "wo": randn(os_, heads * vo, gen=gen),
        }
        for b, (bname, size) in zip(
            biases, [("bq", heads * qk), ("bk", heads * qk), ("bv", heads * vo), ("bo", os_)]
        ):
            if b:
                p[bname] = randn(size, gen=gen)
        mask = random_mask((heads, lq, lk) if mask_kind == "3d" else (lq, lk), gen)
        out = attention_reference(q, k, v, p, heads, qk, vo, mask)
        cfg = {
            "num_heads": heads,
            "query_size": qs,
            "key_size": ks,
            "value_size": vs,
            "qk_size": qk,
            "vo_size": vo,
            "output_size": os_,
            "bias": list(biases),
        }
        save_case(name, cfg, {"query": q, "key": k, "value": v, "mask": mask}, p, out, 70 + i)


# ------------------------------------------------------------------ init distributions
def gen_init_stats(seeds=200):
    """PyTorch's default initialisation, pooled over many seeds, in our parameter layout:
    ``init.<layer>.<param>.std`` and ``.absmax`` (compared statistically by the tests)."""
    samples: dict[str, list[np.ndarray]] = {}

    def add(name, t):
        samples.setdefault(name, []).append(t.detach().numpy().ravel())

    for seed in range(seeds):
        torch.manual_seed(seed)
        add("embedding.weight", nn.Embedding(20, 10).weight)
        gru = nn.GRUCell(3, 8)
        add("gru.weight_ih", gru.weight_ih)
        add("gru.weight_hh", gru.weight_hh)
        add("gru.bias_rz", gru.bias_ih[:16] + gru.bias_hh[:16])
        add("gru.bias_in", gru.bias_ih[16:])
        add("gru.bias_n", gru.bias_hh[16:])
        lstm = nn.LSTMCell(3, 8)
        add("lstm.weight_ih", lstm.weight_ih)
        add("lstm.weight_hh", lstm.weight_hh)
        add("lstm.bias", lstm.bias_ih + lstm.bias_hh)
        mha = nn.MultiheadAttention(8, 2)
        for name, w in zip("qkv", mha.in_proj_weight.chunk(3)):
            add(f"mha_packed.w{name}", w)
        add("mha_packed.wo", mha.out_proj.weight)
        add("mha_packed.biases", torch.cat([mha.in_proj_bias, mha.out_proj.bias]))
        mha = nn.MultiheadAttention(8, 2, kdim=5, vdim=3)
        add("mha_sep.wq", mha.q_proj_weight)
        add("mha_sep.wk", mha.k_proj_weight)
        add("mha_sep.wv", mha.v_proj_weight)
        add("mha_sep.wo", mha.out_proj.weight)
    for name, parts in samples.items():
        values = np.concatenate(parts)
        store[f"init.{name}.std"] = np.array(values.std(), np.float32)
        store[f"init.{name}.absmax"] = np.array(np.abs(values).max(), np.float32)
        store[f"init.{name}.mean"] = np.array(values.mean(), np.float32)


if __name__ == "__main__":
    gen_init_stats()
    gen_embedding()
    gen_rope()
    gen_norms()
    gen_prelu()
    gen_rnn()
    gen_attention_with_torch_module()
    gen_attention_general()
    np.savez_compressed(OUT, **store)  # pyright: ignore[reportArgumentType]
    print(f"wrote {len(store)} arrays, {OUT.stat().st_size} bytes to {OUT}")
