"""Model transformations: functions that take a model and return a new one (mixed
precision, LoRA adapters, captured intermediate outputs). Each works on any model,
because a model is a plain pytree."""

from ._intermediates import Intermediates, intermediates
from ._lora import (
    PEFT_PREFIX,
    LoRALinear,
    load_lora_state_dict,
    lora,
    lora_filter,
    lora_state_dict,
    merge_lora,
)
from ._loss_scale import DynamicLossScale, all_finite, select_tree
from ._mixed_precision import (
    DEFAULT_FLOAT32_LAYERS,
    MixedPrecision,
    cast_floating,
    mixed_precision,
)

__all__ = [
    "DEFAULT_FLOAT32_LAYERS",
    "DynamicLossScale",
    "Intermediates",
    "LoRALinear",
    "MixedPrecision",
    "PEFT_PREFIX",
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
