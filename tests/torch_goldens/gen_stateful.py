"""Generate PyTorch reference values for BatchNorm, SpectralNorm and WeightNorm.

Run with the torch virtualenv (the test suite itself never imports torch):

    .venv-torch/bin/python tests/torch_goldens/gen_stateful.py

Writes tests/torch_goldens/stateful.npz (float32, PyTorch layouts; batches first). Keys
per case ``c``:

- BatchNorm: ``c.cfg`` (JSON), ``c.weight``/``c.bias`` (if affine), per training step
  ``i``: ``c.x{i}``, ``c.out{i}``, ``c.mean{i}``/``c.var{i}`` (running statistics after
  the step), and ``c.xeval``/``c.outeval`` in eval mode; ``c.ct`` a cotangent for step 0
  with ``c.grad.x``/``c.grad.weight``/``c.grad.bias``.
- SpectralNorm: ``c.cfg``, ``c.weight`` (unnormalised), ``c.bias``, ``c.u0``/``c.v0``
  (torch's vectors after its 15 initial iterations), per step ``c.x{i}``, ``c.out{i}``,
  ``c.u{i}``, ``c.v{i}``, then ``c.xeval``/``c.outeval``; ``c.ct`` and ``c.grad.weight``
  for step 0.
- WeightNorm: ``c.cfg``, ``c.v``, ``c.g``, ``c.bias``, ``c.x``, ``c.out``, ``c.ct``,
  ``c.grad.v``, ``c.grad.g``.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch  # pyright: ignore[reportMissingImports]
import torch.nn as nn  # pyright: ignore[reportMissingImports]
from torch.nn.utils import parametrizations as P  # pyright: ignore[reportMissingImports]

torch.set_default_dtype(torch.float32)
OUT = pathlib.Path(__file__).with_name("stateful.npz")
store: dict[str, np.ndarray] = {}
STEPS = 3


def put(name: str, value) -> None:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy().copy()  # buffers change in place later
    store[name] = np.asarray(value)


def batch_norm_case(name, cls, channels, batch_shape, torch_momentum, eps, affine, seed):
    torch.manual_seed(seed)
    bn = cls(channels, eps=eps, momentum=torch_momentum, affine=affine)
    if affine:
        with torch.no_grad():
            bn.weight.copy_(torch.randn(channels))
            bn.bias.copy_(torch.randn(channels))
        put(f"{name}.weight", bn.weight)
        put(f"{name}.bias", bn.bias)
    cfg = dict(channels=channels, momentum=1 - torch_momentum, eps=eps, affine=affine)
    put(f"{name}.cfg", json.dumps(cfg))
    bn.train()
    for step in range(STEPS):
        x = (torch.randn(batch_shape) * (1 + step) + step).requires_grad_(step == 0)
        out = bn(x)
        put(f"{name}.x{step}", x)
        put(f"{name}.out{step}", out)
        put(f"{name}.mean{step}", bn.running_mean)
        put(f"{name}.var{step}", bn.running_var)
        if step == 0:
            ct = torch.randn(out.shape)
            wrt = [x] + ([bn.weight, bn.bias] if affine else [])
            grads = torch.autograd.grad(out, wrt, ct)
            put(f"{name}.ct", ct)
            for label, g in zip(("x", "weight", "bias"), grads):
                put(f"{name}.grad.{label}", g)
    bn.eval()
    x = torch.randn(batch_shape)
    put(f"{name}.xeval", x)
    put(f"{name}.outeval", bn(x))


def spectral_norm_case(name, layer, x_shape, iterations, seed):
    torch.manual_seed(seed)
    layer = P.spectral_norm(layer, n_power_iterations=iterations)
    param = layer.parametrizations.weight
    put(f"{name}.cfg", json.dumps(dict(iterations=iterations)))
    put(f"{name}.weight", param.original)
    put(f"{name}.bias", layer.bias)
    put(f"{name}.u0", param[0]._u)
    put(f"{name}.v0", param[0]._v)
    layer.train()
    for step in range(STEPS):
        x = torch.randn(x_shape)
        out = layer(x)
        put(f"{name}.x{step}", x)
        put(f"{name}.out{step}", out)
        put(f"{name}.u{step + 1}", param[0]._u)
        put(f"{name}.v{step + 1}", param[0]._v)
        if step == 0:
            ct = torch.randn(out.shape)
            (grad,) = torch.autograd.grad(out, [param.original], ct)
            put(f"{name}.ct", ct)
            put(f"{name}.grad.weight", grad)
    layer.eval()
    x = torch.randn(x_shape)
    put(f"{name}.xeval", x)
    put(f"{name}.outeval", layer(x))


def weight_norm_case(name, layer, x_shape, dim, seed):
    torch.manual_seed(seed)
    layer = P.weight_norm(layer, dim=dim)
    param = layer.parametrizations.weight
    with torch.no_grad():  # move g away from ||v|| so that it matters
        param.original0.mul_(torch.rand(param.original0.shape) + 0.5)
    put(f"{name}.cfg", json.dumps(dict(dim=dim)))
    put(f"{name}.g", param.original0)
    put(f"{name}.v", param.original1)
    put(f"{name}.bias", layer.bias)
    x = torch.randn(x_shape)
    out = layer(x)
    ct = torch.randn(out.shape)
    gv, gg = torch.autograd.grad(out, [param.original1, param.original0], ct)
    put(f"{name}.x", x)
    put(f"{name}.out", out)
    put(f"{name}.ct", ct)
    put(f"{name}.grad.v", gv)
    put(f"{name}.grad.g", gg)


def main() -> None:
    batch_norm_case("bn1d", nn.BatchNorm1d, 3, (8, 3, 5), 0.1, 1e-5, True, seed=0)
    batch_norm_case("bn1d_flat", nn.BatchNorm1d, 5, (6, 5), 0.3, 1e-3, False, seed=1)
    batch_norm_case("bn2d", nn.BatchNorm2d, 4, (4, 4, 3, 3), 0.01, 1e-5, True, seed=2)
    torch.manual_seed(10)
    spectral_norm_case("sn_linear", nn.Linear(5, 4), (2, 5), 1, seed=11)
    torch.manual_seed(12)
    spectral_norm_case("sn_conv", nn.Conv2d(3, 4, 3, padding=1), (2, 3, 6, 6), 2, seed=13)
    torch.manual_seed(20)
    weight_norm_case("wn_linear", nn.Linear(5, 4), (3, 5), 0, seed=21)
    torch.manual_seed(22)
    weight_norm_case("wn_linear_dim1", nn.Linear(5, 4), (3, 5), 1, seed=23)
    torch.manual_seed(24)
    weight_norm_case("wn_linear_none", nn.Linear(5, 4), (3, 5), None, seed=25)
    torch.manual_seed(26)
    weight_norm_case("wn_conv", nn.Conv2d(3, 4, 3), (2, 3, 6, 6), 0, seed=27)
    np.savez_compressed(OUT, **store)  # pyright: ignore[reportArgumentType]
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(store)} arrays)")


if __name__ == "__main__":
    main()
