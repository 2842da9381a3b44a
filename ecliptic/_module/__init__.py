"""Modules: callable pytrees."""

from ._abstract import AbstractClassVar, AbstractVar, StrictConfig
from ._copy import new_instance, replace_fields
from ._field import field, static_field
from ._module import BoundMethod, Module, module_update_wrapper
from ._partial import FunctionWrapper, Partial, bind_partial

__all__ = [
    "AbstractClassVar",
    "AbstractVar",
    "BoundMethod",
    "bind_partial",
    "FunctionWrapper",
    "Module",
    "Partial",
    "field",
    "module_update_wrapper",
    "new_instance",
    "replace_fields",
    "static_field",
    "StrictConfig",
]
