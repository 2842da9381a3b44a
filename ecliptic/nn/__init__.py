"""ecliptic.nn: layers with PyTorch's semantics, acting on one unbatched example."""

from ._adaptive_pool import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    AdaptivePool,
)
from ._batch_norm import BatchNorm
from ._conv import Conv, Conv1d, Conv2d, Conv3d
from ._conv_transpose import ConvTranspose, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from ._inference import inference_mode
from ._linear import Identity, Linear
from ._mlp import MLP
from ._pool import (
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    Pool,
)
from ._sequential import Lambda, Sequential
from ._shared import Shared
from ._spectral_norm import SpectralNorm
from ._stateful import State, StatefulLayer, StateIndex, delete_init_state, make_with_state
from ._weight_norm import WeightNorm

__all__: list[str] = [
    # Part A: linear, composition, convolutions, pooling.
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AdaptivePool",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "Conv",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Identity",
    "Lambda",
    "Linear",
    "MLP",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "Pool",
    "Sequential",
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
