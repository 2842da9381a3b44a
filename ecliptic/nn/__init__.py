"""ecliptic.nn: layers with PyTorch's semantics, acting on one unbatched example."""

from ._batch_norm import BatchNorm
from ._inference import inference_mode
from ._shared import Shared
from ._spectral_norm import SpectralNorm
from ._stateful import State, StatefulLayer, StateIndex, delete_init_state, make_with_state
from ._weight_norm import WeightNorm

__all__: list[str] = [
    # State, inference mode and weight tying.
    "BatchNorm",
    "Shared",
    "SpectralNorm",
    "State",
    "StateIndex",
    "StatefulLayer",
    "WeightNorm",
    "delete_init_state",
    "inference_mode",
    "make_with_state",
]
