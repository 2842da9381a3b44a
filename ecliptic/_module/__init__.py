"""Modules: callable pytrees."""

from ._abstract import AbstractClassVar, AbstractVar, StrictConfig
from ._field import field, static_field
from ._module import BoundMethod, Module, Partial, bind_partial, module_update_wrapper

__all__ = [
    "AbstractClassVar",
    "AbstractVar",
    "BoundMethod",
    "bind_partial",
    "Module",
    "Partial",
    "field",
    "module_update_wrapper",
    "static_field",
    "StrictConfig",
]
