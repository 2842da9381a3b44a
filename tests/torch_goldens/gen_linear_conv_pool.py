"""PyTorch reference values for the nn layers (Linear, Conv*, ConvTranspose*,
MaxPool*/AvgPool*, Adaptive*Pool*), read by tests/test_nn_{linear,conv,pool}.py.

Run with the torch virtualenv (the test suite itself never imports torch):

    .venv-torch/bin/python tests/torch_goldens/gen_linear_conv_pool.py

Writes tests/torch_goldens/linear_conv_pool.npz. For each case ``c``: ``c.cfg`` (JSON: the layer
kind and the options in ecliptic's spelling), ``c.x`` (one unbatched input), the
parameters in PyTorch's layout ``c.weight`` / ``c.bias``, the output ``c.out``, a fixed
random cotangent ``c.ct``, and the gradients of ``sum(out * ct)`` with respect to the
input and parameters, ``c.grad.x`` / ``c.grad.weight`` / ``c.grad.bias``.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch  # pyright: ignore[reportMissingImports]
import torch.nn as nn  # pyright: ignore[reportMissingImports]
import torch.nn.functional as F  # pyright: ignore[reportMissingImports]

OUT = pathlib.Path(__file__).with_name("linear_conv_pool.npz")
store: dict[str, np.ndarray] = {}
_seed = [0]


def _gen() -> torch.Generator:
    _seed[0] += 1
    return torch.Generator().manual_seed(_seed[0])


def record(name: str, cfg: dict, x: torch.Tensor, fn, params: dict[str, torch.Tensor]):
    """Run ``fn(x)`` (x unbatched), store everything and the VJP of a random cotangent."""
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    ct = torch.randn(out.shape, generator=_gen())
    wrt = {"x": x, **params}
    grads = torch.autograd.grad(out, list(wrt.values()), ct)
    store[f"{name}.cfg"] = np.array(json.dumps(cfg))
    store[f"{name}.x"] = x.detach().numpy()
    store[f"{name}.out"] = out.detach().numpy()
    store[f"{name}.ct"] = ct.numpy()
    for key, value in params.items():
        store[f"{name}.{key}"] = value.detach().numpy()
    for key, g in zip(wrt, grads):
        store[f"{name}.grad.{key}"] = g.numpy()


def layer_params(layer: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in layer.named_parameters()}


def gen_linear():
    for name, bias in (("linear", True), ("linear_nobias", False)):
        torch.manual_seed(1)
        layer = nn.Linear(5, 3, bias=bias)
        x = torch.randn(5, generator=_gen())
        record(name, {"in": 5, "out": 3, "use_bias": bias}, x, layer, layer_params(layer))


# Conv cases: (channels in/out, spatial size, kernel, stride, padding, dilation, groups,
# padding_mode). ``padding`` in ecliptic's spelling: an int, "SAME"/"VALID", or pairs.
CONV_CASES = {
    1: [
        (2, 4, (9,), 3, 1, 0, 1, 1, "zeros"),
        (4, 6, (10,), 3, 2, 1, 1, 2, "zeros"),
        (3, 3, (11,), 4, 1, "SAME", 2, 1, "zeros"),
        (2, 3, (8,), 3, 1, "VALID", 1, 1, "zeros"),
        (2, 2, (9,), 3, 2, [(2, 1)], 1, 1, "zeros"),
        (2, 3, (7,), 3, 1, 2, 1, 1, "reflect"),
        (2, 3, (7,), 3, 2, 1, 1, 1, "replicate"),
        (2, 3, (7,), 5, 1, 2, 1, 1, "circular"),
    ],
    2: [
        (3, 4, (7, 8), (3, 2), (2, 1), (1, 0), (1, 2), 1, "zeros"),
        (4, 4, (6, 6), 3, 1, "SAME", 1, 4, "zeros"),
        (2, 4, (6, 7), 3, 2, [(0, 1), (2, 1)], 1, 2, "zeros"),
        (3, 2, (5, 6), 3, 1, 1, 1, 1, "reflect"),
        (2, 2, (5, 5), 3, 1, "SAME", 1, 1, "circular"),
        (2, 3, (5, 6), 3, 2, (1, 2), 1, 1, "replicate"),
    ],
    3: [
        (2, 4, (5, 6, 4), 3, (1, 2, 1), 1, 1, 2, "zeros"),
        (2, 2, (4, 5, 4), (2, 3, 2), 1, "VALID", (1, 2, 1), 1, "zeros"),
        (2, 2, (4, 4, 5), 3, 1, 1, 1, 1, "circular"),
    ],
}


def _torch_padding(padding):
    if isinstance(padding, str):
        return padding.lower()
    if isinstance(padding, list):
        return 0
    return padding


def gen_conv():
    classes = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
    for n, cases in CONV_CASES.items():
        for i, (cin, cout, size, k, s, p, d, g, mode) in enumerate(cases):
            torch.manual_seed(100 + 10 * n + i)
            layer = classes[n](
                cin,
                cout,
                k,
                stride=s,
                padding=_torch_padding(p),
                dilation=d,
                groups=g,
                padding_mode=mode,
            )
            x = torch.randn(cin, *size, generator=_gen())

            def fn(x, layer=layer, p=p):
                if isinstance(p, list):  # asymmetric: explicit pad, then an unpadded conv
                    flat = [v for pair in reversed(p) for v in pair]
                    x = F.pad(x[None], flat)[0]
                return layer(x[None])[0]

            cfg = {
                "n": n,
                "in": cin,
                "out": cout,
                "kernel_size": k,
                "stride": s,
                "padding": p,
                "dilation": d,
                "groups": g,
                "padding_mode": mode.upper(),
            }
            record(f"conv{n}d_{i}", cfg, x, fn, layer_params(layer))


# ConvTranspose cases: (in, out, size, kernel, stride, padding, output_padding, dilation,
# groups).
CONVT_CASES = {
    1: [
        (3, 2, (5,), 3, 2, 1, 1, 1, 1),
        (4, 6, (6,), 4, 3, 2, 0, 1, 2),
        (2, 3, (5,), 3, 1, 0, 1, 2, 1),
    ],
    2: [
        (2, 3, (4, 5), (3, 2), (2, 1), (1, 0), (1, 0), 1, 1),
        (4, 2, (3, 4), 3, 2, 0, 0, (2, 1), 2),
        (3, 3, (4, 3), 2, 2, 1, 1, 1, 3),
    ],
    3: [
        (2, 4, (3, 4, 3), 3, (2, 1, 2), 1, (1, 0, 0), 1, 2),
        (2, 2, (3, 3, 3), 2, 1, 0, 0, 1, 1),
    ],
}


def gen_conv_transpose():
    classes = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
    for n, cases in CONVT_CASES.items():
        for i, (cin, cout, size, k, s, p, op, d, g) in enumerate(cases):
            torch.manual_seed(200 + 10 * n + i)
            layer = classes[n](
                cin, cout, k, stride=s, padding=p, output_padding=op, dilation=d, groups=g
            )
            x = torch.randn(cin, *size, generator=_gen())
            cfg = {
                "n": n,
                "in": cin,
                "out": cout,
                "kernel_size": k,
                "stride": s,
                "padding": p,
                "output_padding": op,
                "dilation": d,
                "groups": g,
            }
            record(
                f"convt{n}d_{i}",
                cfg,
                x,
                lambda x, layer=layer: layer(x[None])[0],
                layer_params(layer),
            )


# Pool cases: (kind, channels, size, kernel, stride, padding, ceil_mode).
POOL_CASES = {
    1: [
        ("max", 2, (9,), 3, 2, 1, False),
        ("max", 2, (8,), 3, 2, 1, True),
        ("avg", 2, (8,), 3, 2, 1, True),
        ("avg", 3, (10,), 4, 3, 2, False),
        ("avg", 2, (6,), 2, 2, 0, True),
    ],
    2: [
        ("max", 2, (7, 8), (3, 2), (2, 1), (1, 0), True),
        ("avg", 2, (7, 7), 3, 2, 1, True),
        ("avg", 2, (6, 5), (2, 3), (2, 2), (1, 1), False),
        ("max", 3, (5, 6), 2, 2, 0, False),
    ],
    3: [
        ("max", 2, (5, 6, 4), 2, 2, (1, 0, 1), True),
        ("avg", 2, (5, 5, 4), 3, 2, 1, True),
    ],
}


def gen_pool():
    for n, cases in POOL_CASES.items():
        for i, (kind, c, size, k, s, p, ceil) in enumerate(cases):
            cls = getattr(nn, f"{kind.capitalize()}Pool{n}d")
            layer = cls(k, stride=s, padding=p, ceil_mode=ceil)
            x = torch.randn(c, *size, generator=_gen())
            cfg = {
                "n": n,
                "kind": kind,
                "kernel_size": k,
                "stride": s,
                "padding": p,
                "use_ceil": ceil,
            }
            record(f"{kind}pool{n}d_{i}", cfg, x, lambda x, layer=layer: layer(x[None])[0], {})


# Adaptive cases: (kind, channels, size, target).
ADAPTIVE_CASES = {
    1: [("avg", 2, (10,), 4), ("max", 2, (5,), 3), ("avg", 2, (3,), 5), ("max", 2, (8,), 4)],
    2: [("avg", 2, (7, 9), (3, 4)), ("max", 2, (5, 7), (3, 2)), ("avg", 2, (6, 4), (3, 3))],
    3: [("avg", 2, (5, 4, 7), (2, 3, 3)), ("max", 2, (4, 5, 6), (3, 2, 4))],
}


def gen_adaptive():
    for n, cases in ADAPTIVE_CASES.items():
        for i, (kind, c, size, target) in enumerate(cases):
            cls = getattr(nn, f"Adaptive{kind.capitalize()}Pool{n}d")
            layer = cls(target)
            x = torch.randn(c, *size, generator=_gen())
            cfg = {"n": n, "kind": kind, "target": target}
            record(f"adaptive{kind}{n}d_{i}", cfg, x, lambda x, layer=layer: layer(x[None])[0], {})


def main():
    torch.set_default_dtype(torch.float32)
    gen_linear()
    gen_conv()
    gen_conv_transpose()
    gen_pool()
    gen_adaptive()
    np.savez_compressed(OUT, **store)  # pyright: ignore[reportArgumentType]
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.1f} KiB, {len(store)} arrays)")


if __name__ == "__main__":
    main()
