"""Write `lora.npz`: a LoRA-adapted MLP in PEFT's state-dict layout, with its expected
output computed in float64 NumPy. NumPy only: no PyTorch, no PEFT needed.

The model is ecliptic.nn.MLP(in_size=5, out_size=3, width_size=6, depth=2) (ReLU
between layers, none after the last), i.e. in PyTorch a module with a ModuleList
`layers` of three nn.Linear. PEFT (`get_peft_model(model, LoraConfig(r=2, lora_alpha=4,
target_modules=["layers.0", "layers.1", "layers.2"]))`) names, for a target `layers.i`:

- the frozen base weights (full state dict): `base_model.model.layers.i.base_layer.weight`
  and `.bias`;
- the adapters (`get_peft_model_state_dict`, `adapter_model.safetensors`):
  `base_model.model.layers.i.lora_A.weight` of shape (r, in) and
  `base_model.model.layers.i.lora_B.weight` of shape (out, r);

and computes `base(x) + (lora_alpha / r) * lora_B @ lora_A @ x` for each target.

Keys in the file: `base/<name>` (the plain model's PyTorch state dict),
`adapter/<PEFT key>`, `x` (4, 5), `expected` (4, 3), `rank`, `alpha`.

Run: python tests/torch_goldens/gen_lora.py
"""

import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SIZES = [(5, 6), (6, 6), (6, 3)]  # (in, out) of layers.0, layers.1, layers.2
RANK, ALPHA = 2, 4.0


def main() -> None:
    rng = np.random.default_rng(20261204)
    out: dict[str, np.ndarray] = {}
    layers = []
    for i, (n_in, n_out) in enumerate(SIZES):
        w = rng.uniform(-0.5, 0.5, (n_out, n_in))
        b = rng.uniform(-0.5, 0.5, n_out)
        a = rng.uniform(-0.5, 0.5, (RANK, n_in))
        bb = rng.uniform(-0.5, 0.5, (n_out, RANK))  # nonzero: a trained adapter
        out[f"base/layers.{i}.weight"] = w.astype(np.float32)
        out[f"base/layers.{i}.bias"] = b.astype(np.float32)
        out[f"adapter/base_model.model.layers.{i}.lora_A.weight"] = a.astype(np.float32)
        out[f"adapter/base_model.model.layers.{i}.lora_B.weight"] = bb.astype(np.float32)
        layers.append(tuple(v.astype(np.float32).astype(np.float64) for v in (w, b, a, bb)))
    x = rng.normal(size=(4, 5)).astype(np.float32)
    h = x.astype(np.float64)
    for i, (w, b, a, bb) in enumerate(layers):
        h = h @ w.T + b + (ALPHA / RANK) * (h @ a.T) @ bb.T
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    out["x"] = x
    out["expected"] = h
    out["rank"] = np.asarray(RANK)
    out["alpha"] = np.asarray(ALPHA)
    np.savez(HERE / "lora.npz", **out)  # pyright: ignore[reportArgumentType]


if __name__ == "__main__":
    main()
