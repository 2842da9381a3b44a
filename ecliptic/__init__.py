"""ecliptic: neural networks in JAX. Models are callable PyTrees; transformations are filtered."""

from . import _model_transforms
from . import debug as debug
from . import distributed as distributed
from . import nn as nn
from . import sharding as sharding
from ._ad import (
    filter_grad,
    filter_hessian,
    filter_jacfwd,
    filter_jacrev,
    filter_jvp,
    filter_value_and_grad,
    filter_vjp,
)
from ._caches import clear_caches
from ._callback import filter_pure_callback
from ._closure_convert import filter_closure_convert
from ._custom_ad import filter_custom_jvp, filter_custom_vjp
from ._enum import Enumeration, EnumerationItem
from ._errors import branched_error_if, error_if
from ._eval_shape import filter_eval_shape
from ._exceptions import (
    EclipticRuntimeError,
    EclipticTracetimeError,
    EquinoxRuntimeError,
    EquinoxTracetimeError,
)
from ._filters import (
    combine,
    filter,
    is_array,
    is_array_like,
    is_inexact_array,
    is_inexact_array_like,
    partition,
)
from ._io._checkpoint import load, load_metadata, save
from ._io._errors import CheckpointError, StateDictError
from ._io._leaves import (
    default_deserialise_filter_spec,
    default_serialise_filter_spec,
    tree_deserialise_leaves,
    tree_serialise_leaves,
)
from ._io._state_dict import (
    StateDictReport,
    check_state_dict,
    load_state_dict,
    named_parameters,
    state_dict,
)
from ._io._torch_registry import register_torch_layout
from ._jit import filter_jit
from ._legacy_api import gradf, jitf, value_and_grad_f
from ._make_jaxpr import filter_make_jaxpr
from ._model_transforms import *  # noqa: F403 (the names in its __all__)
from ._module import (
    AbstractClassVar,
    AbstractVar,
    BoundMethod,
    Module,
    Partial,
    StrictConfig,
    field,
    module_update_wrapper,
    static_field,
)
from ._pmap import filter_pmap
from ._pretty_print import tree_pformat, tree_pprint
from ._remat import filter_checkpoint
from ._sharding._placement import (
    filter_shard,
    opt_state_shardings,
    param_shardings,
    shard_batch,
    shard_opt_state,
    shard_params,
)
from ._summary import Summary, SummaryRow, summary
from ._tree import tree_at, tree_check, tree_equal, tree_flatten_one_level
from ._update import apply_updates
from ._version import __version__
from ._vmap import filter_vmap, if_array
from .nn._inference import tree_inference

__all__ = [
    # Modules
    "AbstractClassVar",
    "AbstractVar",
    "BoundMethod",
    "Enumeration",
    "EnumerationItem",
    "Module",
    "Partial",
    "StrictConfig",
    "field",
    "module_update_wrapper",
    "static_field",
    # Filters
    "combine",
    "filter",
    "is_array",
    "is_array_like",
    "is_inexact_array",
    "is_inexact_array_like",
    "partition",
    # Filtered transformations
    "clear_caches",
    "filter_jit",
    "filter_vmap",
    "filter_pmap",
    "filter_shard",
    # Sharding (data / model parallel training)
    "sharding",
    "distributed",
    "opt_state_shardings",
    "param_shardings",
    "shard_batch",
    "shard_opt_state",
    "shard_params",
    "filter_checkpoint",
    "filter_closure_convert",
    "filter_custom_jvp",
    "filter_custom_vjp",
    "filter_eval_shape",
    "filter_grad",
    "filter_hessian",
    "filter_jacfwd",
    "filter_jacrev",
    "filter_jvp",
    "filter_make_jaxpr",
    "filter_pure_callback",
    "filter_value_and_grad",
    "filter_vjp",
    "if_array",
    "gradf",
    "jitf",
    "value_and_grad_f",
    # Tree utilities
    "apply_updates",
    "tree_at",
    "tree_check",
    "tree_equal",
    "tree_flatten_one_level",
    "tree_inference",
    "tree_pformat",
    "tree_pprint",
    # Saving, loading, PyTorch interop, summaries
    "CheckpointError",
    "StateDictError",
    "StateDictReport",
    "Summary",
    "SummaryRow",
    "check_state_dict",
    "default_deserialise_filter_spec",
    "default_serialise_filter_spec",
    "load",
    "load_metadata",
    "load_state_dict",
    "named_parameters",
    "register_torch_layout",
    "save",
    "state_dict",
    "summary",
    "tree_deserialise_leaves",
    "tree_serialise_leaves",
    # Errors
    "branched_error_if",
    "error_if",
    "EclipticRuntimeError",
    "EclipticTracetimeError",
    "EquinoxRuntimeError",
    "EquinoxTracetimeError",
    # Submodules
    "debug",
    "nn",
    "__version__",
]
__all__ += _model_transforms.__all__  # mixed precision, LoRA, intermediate outputs
