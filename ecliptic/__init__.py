"""ecliptic: neural networks in JAX. Models are callable PyTrees; transformations are filtered."""

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
from . import nn as nn
from ._module import (
    AbstractClassVar,
    AbstractVar,
    BoundMethod,
    Module,
    Partial,
    field,
    module_update_wrapper,
    static_field,
)
from ._caches import clear_caches
from ._enum import Enumeration, EnumerationItem
from ._jit import filter_jit
from ._seed_api import gradf, jitf, value_and_grad_f
from ._pretty_print import tree_pformat, tree_pprint
from ._tree import tree_at, tree_check, tree_equal, tree_flatten_one_level
from ._update import apply_updates
from ._version import __version__
from ._vmap_pmap import filter_vmap, if_array

__all__ = [
    # Modules
    "AbstractClassVar",
    "AbstractVar",
    "BoundMethod",
    "Enumeration",
    "EnumerationItem",
    "Module",
    "Partial",
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
    "tree_pformat",
    "tree_pprint",
    # Errors
    "EclipticRuntimeError",
    "EclipticTracetimeError",
    "EquinoxRuntimeError",
    "EquinoxTracetimeError",
    # Submodules
    "nn",
    "__version__",
]
