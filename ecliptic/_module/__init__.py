"""Modules: callable pytrees."""

from ._abstract import AbstractClassVar, AbstractVar, StrictConfig
from ._field import field, static_field
from ._module import BoundMethod, Module, module_update_wrapper
from ._partial import Partial, bind_partial

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
