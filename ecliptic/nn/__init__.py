"""ecliptic.nn: layers with PyTorch's semantics, acting on one unbatched example."""

from ._activations import PReLU
from ._batch_norm import BatchNorm
from ._dropout import Dropout
from ._embedding import Embedding, RotaryPositionalEmbedding
from ._inference import inference_mode
from ._normalisation import GroupNorm, LayerNorm, RMSNorm
from ._rnn import GRUCell, LSTMCell
from ._shared import Shared
from ._spectral_norm import SpectralNorm
from ._stateful import State, StatefulLayer, StateIndex, delete_init_state, make_with_state
from ._weight_norm import WeightNorm

__all__: list[str] = [
    # Part B: dropout, embeddings, attention, normalisation, activations, recurrent cells.
    "Dropout",
    "Embedding",
    "GRUCell",
    "GroupNorm",
    "LSTMCell",
    "LayerNorm",
    "PReLU",
    "RMSNorm",
    "RotaryPositionalEmbedding",
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
