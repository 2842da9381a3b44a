"""Model transformations: functions that take a model and return a new one (mixed
precision, LoRA adapters, captured intermediate outputs). Each works on any model,
because a model is a plain pytree."""

from ._intermediates import Intermediates, intermediates
from ._lora import (
    LoRALinear,
    load_lora_state_dict,
    lora,
    lora_filter,
    lora_state_dict,
    merge_lora,
)
from ._loss_scale import DynamicLossScale, all_finite, select_tree
from ._mixed_precision import MixedPrecision, cast_floating, mixed_precision

# Re-exported as is by `ecliptic/__init__.py`: this is the one list of these names.
__all__ = [
    "DynamicLossScale",
    "Intermediates",
    "LoRALinear",
    "MixedPrecision",
    "all_finite",
    "cast_floating",
    "intermediates",
    "load_lora_state_dict",
    "lora",
    "lora_filter",
    "lora_state_dict",
    "merge_lora",
    "mixed_precision",
    "select_tree",
]
