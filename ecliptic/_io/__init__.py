"""File I/O and PyTorch interop: Equinox leaf files (`_leaves`, `_npy`), safetensors
checkpoints (`_checkpoint`, `_checkpoint_data`, `_safetensors`, `_fingerprint`), state
dicts (`_state_dict`, `_state_dict_reader`) and the table of PyTorch layouts
(`_torch_registry`, filled by `_torch_layouts` and `_torch_containers`). A service above
`ecliptic.nn`: the PyTorch layouts know the layer types. `ecliptic/__init__.py`
re-exports the public names."""
