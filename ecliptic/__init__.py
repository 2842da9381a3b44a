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
from ._version import __version__
