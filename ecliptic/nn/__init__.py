"""ecliptic.nn: layers with PyTorch's semantics, acting on one unbatched example."""

from ._activations import PReLU
from ._adaptive_pool import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    AdaptivePool,
)
from ._attention import MultiheadAttention
from ._attention_functions import dot_product_attention, dot_product_attention_weights
from ._batch_norm import BatchNorm
from ._conv import Conv, Conv1d, Conv2d, Conv3d
from ._conv_transpose import (
    ConvTranspose,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    conv_transpose_weight_from_torch,
    conv_transpose_weight_to_torch,
)
from ._dropout import Dropout
from ._embedding import Embedding, RotaryPositionalEmbedding
from ._inference import inference_mode
from ._linear import Identity, Linear
from ._mlp import MLP
from ._normalisation import GroupNorm, LayerNorm, RMSNorm
from ._pool import (
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    Pool,
)
from ._rnn import GRUCell, LSTMCell
from ._sequential import Lambda, Sequential
from ._shared import Shared
from ._spectral_norm import SpectralNorm
from ._stacked import Stacked, stack_layers
from ._stateful import State, StatefulLayer, StateIndex, delete_init_state, make_with_state
from ._weight_norm import WeightNorm

__all__: list[str] = [
    # Linear, composition, convolutions, pooling.
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
    "conv_transpose_weight_from_torch",
    "conv_transpose_weight_to_torch",
    "Identity",
    "Lambda",
    "Linear",
    "MLP",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "Pool",
    "Sequential",
    # Dropout, embeddings, attention, normalisation, activations, recurrent cells.
    "Dropout",
    "Embedding",
    "GRUCell",
    "GroupNorm",
    "LSTMCell",
    "LayerNorm",
    "MultiheadAttention",
    "PReLU",
    "RMSNorm",
    "RotaryPositionalEmbedding",
    "dot_product_attention",
    "dot_product_attention_weights",
    # State, inference mode and weight tying.
    "BatchNorm",
    "Shared",
    "SpectralNorm",
    "Stacked",
    "State",
    "StateIndex",
    "StatefulLayer",
    "WeightNorm",
    "delete_init_state",
    "inference_mode",
    "make_with_state",
    "stack_layers",
]
