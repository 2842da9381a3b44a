"""Golden files for PyTorch <-> ecliptic state-dict interop (tests/test_state_dict.py).

One small network, built twice: as PyTorch modules (`TorchNet`) and as the equivalent
ecliptic layers (`make_ecliptic_net`), with the same attribute names, so that
`ecliptic.state_dict(..., format="torch")` and `torch.nn.Module.state_dict()` have the
same keys. It has a Sequential stem (Conv1d + PReLU), BatchNorm1d (eval mode, running
statistics), ConvTranspose1d (groups=2), GroupNorm, MultiheadAttention (all biases),
LayerNorm, an LSTMCell and a GRUCell scanned over time, and a Linear head.

Two steps, each with its own virtualenv (the test suite never imports torch):

1. ``.venv/bin/python tests/torch_goldens/gen_interop.py ecliptic``
   builds the ecliptic network from a fixed key with random parameters and running
   statistics and writes
   - ``interop_ecliptic_native.safetensors``: `ecliptic.save((model, state))`, the
     ecliptic-side source of truth;
   - ``interop_ecliptic_torch.safetensors``: its PyTorch-format state dict
     (`ecliptic.state_dict(model, state=state, format="torch")`).
2. ``.venv-torch/bin/python tests/torch_goldens/gen_interop.py torch``
   builds `TorchNet` with a fixed seed and random parameters and writes
   - ``interop_torch.safetensors``: its ``state_dict()`` (`safetensors.torch.save_file`);
   - ``interop_io.npz``: inputs ``x`` (a batch), PyTorch's outputs ``y_torch``, and
     ``y_from_ecliptic``: the outputs of a `TorchNet` that loaded (strictly) the state
     dict of step 1.

The tests load ``interop_torch.safetensors`` into the ecliptic network and compare with
``y_torch``; and rebuild the ecliptic network from ``interop_ecliptic_native``, check
that its exported state dict is bit-identical to ``interop_ecliptic_torch`` and that its
outputs match ``y_from_ecliptic``. Run step 1 before step 2 whenever the network changes.
"""

from __future__ import annotations

import pathlib
import sys
import zlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
NATIVE = HERE / "interop_ecliptic_native.safetensors"
ECLIPTIC_TORCH = HERE / "interop_ecliptic_torch.safetensors"
TORCH = HERE / "interop_torch.safetensors"
IO = HERE / "interop_io.npz"

C_IN, C, LENGTH, HEADS, HIDDEN, OUT, BATCH = 4, 8, 5, 2, 6, 3, 3


# ------------------------------------------------------------------------------ ecliptic


def make_ecliptic_net(key):
    """`(model, state)`: the ecliptic network (random init from `key`), and a function
    `apply(model, state, x)` for one unbatched example ``x`` of shape (C_IN, LENGTH)."""
    import jax
    import jax.numpy as jnp

    import ecliptic
    import ecliptic.nn as enn

    class EclipticNet(ecliptic.Module):
        stem: enn.Sequential
        bn: enn.BatchNorm
        convt: enn.ConvTranspose1d
        gnorm: enn.GroupNorm
        attn: enn.MultiheadAttention
        lnorm: enn.LayerNorm
        lstm: enn.LSTMCell
        gru: enn.GRUCell
        head: enn.Linear

        def __init__(self, key):
            ks = jax.random.split(key, 6)
            self.stem = enn.Sequential(
                [
                    enn.Conv1d(C_IN, C, 3, padding=1, key=ks[0]),
                    enn.PReLU(jnp.full(C, 0.25), channels_first=True),
                ]
            )
            self.bn = enn.BatchNorm(C, "batch", inference=True, mode="torch")
            self.convt = enn.ConvTranspose1d(C, C, 2, stride=2, groups=2, key=ks[1])
            self.gnorm = enn.GroupNorm(2, C)
            self.attn = enn.MultiheadAttention(
                HEADS,
                C,
                use_query_bias=True,
                use_key_bias=True,
                use_value_bias=True,
                use_output_bias=True,
                key=ks[2],
            )
            self.lnorm = enn.LayerNorm(C)
            self.lstm = enn.LSTMCell(C, HIDDEN, key=ks[3])
            self.gru = enn.GRUCell(C, HIDDEN, key=ks[4])
            self.head = enn.Linear(2 * HIDDEN, OUT, key=ks[5])

        def __call__(self, x, state):
            h = self.stem(x)
            h, state = self.bn(h, state)
            h = self.gnorm(self.convt(h))
            s = h.T
            s = self.lnorm(s + self.attn(s, s, s))
            zeros = jnp.zeros(HIDDEN, s.dtype)

            def step(carry, x_t):
                (hl, cl), hg = carry
                return (self.lstm(x_t, (hl, cl)), self.gru(x_t, hg)), None

            ((hl, _), hg), _ = jax.lax.scan(step, ((zeros, zeros), zeros), s)
            return self.head(jnp.concatenate([hl, hg])), state

    return ecliptic.nn.make_with_state(EclipticNet)(key)


def ecliptic_step() -> None:
    import jax

    import ecliptic

    model, state = make_ecliptic_net(jax.random.key(0))

    def randomise(path, leaf):
        # A key per parameter name, so values do not move when the tree's layout does.
        if isinstance(leaf, jax.Array) and jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating):
            name = jax.tree_util.keystr(path).encode()
            key = jax.random.fold_in(jax.random.key(1), zlib.crc32(name))
            return 0.3 * jax.random.normal(key, leaf.shape, leaf.dtype)
        return leaf

    model = jax.tree_util.tree_map_with_path(randomise, model)
    k_mean, k_var = jax.random.split(jax.random.key(2))
    mean = 0.3 * jax.random.normal(k_mean, (C,))
    var = 0.5 + jax.random.uniform(k_var, (C,))  # running variances are positive
    state = state.set(model.bn.batch_state_index, (mean, var))
    state = state.set(model.bn.batch_counter, jax.numpy.array(7, jax.numpy.int32))
    ecliptic.save(NATIVE, (model, state))
    ecliptic.save(ECLIPTIC_TORCH, ecliptic.state_dict(model, state=state, format="torch"))
    print(f"wrote {NATIVE.name}, {ECLIPTIC_TORCH.name}")


# --------------------------------------------------------------------------------- torch


def torch_step() -> None:
    import safetensors.torch
    import torch  # pyright: ignore[reportMissingImports]
    import torch.nn as nn  # pyright: ignore[reportMissingImports]

    class TorchNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv1d(C_IN, C, 3, padding=1), nn.PReLU(C))
            self.bn = nn.BatchNorm1d(C)
            self.convt = nn.ConvTranspose1d(C, C, 2, stride=2, groups=2)
            self.gnorm = nn.GroupNorm(2, C)
            self.attn = nn.MultiheadAttention(C, HEADS, batch_first=True)
            self.lnorm = nn.LayerNorm(C)
            self.lstm = nn.LSTMCell(C, HIDDEN)
            self.gru = nn.GRUCell(C, HIDDEN)
            self.head = nn.Linear(2 * HIDDEN, OUT)

        def forward(self, x):  # x: (batch, C_IN, LENGTH)
            h = self.gnorm(self.convt(self.bn(self.stem(x))))
            s = h.transpose(1, 2)
            a, _ = self.attn(s, s, s, need_weights=False)
            s = self.lnorm(s + a)
            zeros = s.new_zeros(s.shape[0], HIDDEN)
            hl, cl, hg = zeros, zeros, zeros
            for t in range(s.shape[1]):
                hl, cl = self.lstm(s[:, t], (hl, cl))
                hg = self.gru(s[:, t], hg)
            return self.head(torch.cat([hl, hg], dim=1))

    torch.manual_seed(0)
    net = TorchNet()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn_like(p))
        net.bn.running_mean.copy_(0.3 * torch.randn(C))
        net.bn.running_var.copy_(0.5 + torch.rand(C))
        net.bn.num_batches_tracked.fill_(5)
    net.eval()
    x = torch.randn(BATCH, C_IN, LENGTH)
    with torch.no_grad():
        y_torch = net(x)
        other = TorchNet()
        other.load_state_dict(safetensors.torch.load_file(ECLIPTIC_TORCH), strict=True)
        other.eval()
        y_from_ecliptic = other(x)
    safetensors.torch.save_file(net.state_dict(), TORCH)
    np.savez(IO, x=x.numpy(), y_torch=y_torch.numpy(), y_from_ecliptic=y_from_ecliptic.numpy())
    print(f"wrote {TORCH.name}, {IO.name}")


if __name__ == "__main__":
    steps = {"ecliptic": ecliptic_step, "torch": torch_step}
    if len(sys.argv) != 2 or sys.argv[1] not in steps:
        sys.exit(f"usage: {sys.argv[0]} ecliptic|torch  (see the docstring)")
    steps[sys.argv[1]]()
