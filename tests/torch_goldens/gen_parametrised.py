"""Golden files for PyTorch's weight-norm and spectral-norm parametrisations in
state dicts of PyTorch's format (tests/test_state_dict.py).

A PyTorch network of a weight-normed Linear (``dim=0``), a weight-normed Conv1d
(``dim=None``) and a spectral-normed Linear is given random parameters, trained for a
few steps in training mode (so that spectral norm's power-iteration vectors ``_u``/``_v``
move away from their start), and switched to eval mode. Run with the torch virtualenv
(the test suite never imports torch):

    .venv-torch/bin/python tests/torch_goldens/gen_parametrised.py

It writes ``parametrised_torch.safetensors`` (the ``state_dict()``) and
``parametrised_io.npz`` (inputs ``x`` of shape (BATCH, LENGTH, IN) and eval-mode outputs
``y``). The test loads the state dict into the equivalent ecliptic network
(`make_ecliptic_net`) and compares outputs, then exports it back and compares entries.
"""

from __future__ import annotations

import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
TORCH = HERE / "parametrised_torch.safetensors"
IO = HERE / "parametrised_io.npz"

IN, HIDDEN, CHANNELS, OUT, LENGTH, BATCH = 4, 5, 3, 2, 6, 3


def make_ecliptic_net(key):
    """`(model, state)`: the ecliptic network, whose `apply(x, state)` maps one example
    of shape (LENGTH, IN) to (LENGTH, OUT) in inference mode."""
    import jax

    import ecliptic
    import ecliptic.nn as enn

    class Net(ecliptic.Module):
        wn: enn.WeightNorm
        wn_conv: enn.WeightNorm
        sn: enn.SpectralNorm

        def __init__(self, key):
            k1, k2, k3, k4 = jax.random.split(key, 4)
            self.wn = enn.WeightNorm(enn.Linear(IN, HIDDEN, key=k1))
            conv = enn.Conv1d(HIDDEN, CHANNELS, 3, padding=1, key=k2)
            self.wn_conv = enn.WeightNorm(conv, axis=None)
            self.sn = enn.SpectralNorm(enn.Linear(CHANNELS, OUT, key=k3), inference=True, key=k4)

        def apply(self, x, state):
            h = jax.vmap(self.wn)(x)
            h = self.wn_conv(h.T).T
            run = jax.vmap(self.sn, in_axes=(0, None), out_axes=(0, None))
            return run(h, state)[0]

    return enn.make_with_state(Net)(key)


def main() -> None:
    import safetensors.torch
    import torch  # pyright: ignore[reportMissingImports]
    from torch import nn  # pyright: ignore[reportMissingImports]
    from torch.nn.utils import parametrizations  # pyright: ignore[reportMissingImports]

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.wn = parametrizations.weight_norm(nn.Linear(IN, HIDDEN))
            conv = nn.Conv1d(HIDDEN, CHANNELS, 3, padding=1)
            self.wn_conv = parametrizations.weight_norm(conv, dim=None)
            self.sn = parametrizations.spectral_norm(nn.Linear(CHANNELS, OUT))

        def forward(self, x):
            h = self.wn(x)
            h = self.wn_conv(h.transpose(1, 2)).transpose(1, 2)
            return self.sn(h)

    net = Net()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(5):
        optimiser.zero_grad()
        net(torch.randn(BATCH, LENGTH, IN)).square().mean().backward()
        optimiser.step()
    net.eval()
    x = torch.randn(BATCH, LENGTH, IN)
    with torch.no_grad():
        y = net(x)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    safetensors.torch.save_file(state, str(TORCH))
    np.savez(IO, x=x.numpy(), y=y.numpy())
    print(f"wrote {TORCH.name} ({', '.join(state)}), {IO.name}")


if __name__ == "__main__":
    main()
