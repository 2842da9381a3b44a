"""File I/O and PyTorch interop: Equinox leaf files, safetensors checkpoints, state dicts
and the table of PyTorch layouts. A service above `ecliptic.nn` (the PyTorch layouts know
the layer types); `ecliptic/__init__.py` re-exports the public names."""

from ._arrays import array_like, as_numpy, is_key_dtype, key_data_struct, key_impl
from ._checkpoint import load, load_metadata, save
from ._errors import CheckpointError, StateDictError
from ._leaves import (
    default_deserialise_filter_spec,
    default_serialise_filter_spec,
    tree_deserialise_leaves,
    tree_serialise_leaves,
)
from ._state_dict import (
    StateDictReport,
    check_state_dict,
    load_state_dict,
    named_parameters,
    state_dict,
)
from ._torch_registry import register_torch_layout

__all__ = [
    "CheckpointError",
    "StateDictError",
    "StateDictReport",
    "array_like",
    "as_numpy",
    "check_state_dict",
    "default_deserialise_filter_spec",
    "default_serialise_filter_spec",
    "is_key_dtype",
    "key_data_struct",
    "key_impl",
    "load",
    "load_metadata",
    "load_state_dict",
    "named_parameters",
    "register_torch_layout",
    "save",
    "state_dict",
    "tree_deserialise_leaves",
    "tree_serialise_leaves",
]
