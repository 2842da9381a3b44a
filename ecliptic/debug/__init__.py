"""Debugging tools: trace counting, transformation announcements, NaN hunting,
conditional breakpoints and dead-code inspection. See docs/debugging.md."""

from ._announce import announce_transform
from ._breakpoints import breakpoint_if
from ._dce import inspect_dce, store_dce
from ._nan import backward_nan
from ._traces import MaxTracesExceededError, assert_max_traces, get_num_traces

__all__ = [
    "MaxTracesExceededError",
    "announce_transform",
    "assert_max_traces",
    "backward_nan",
    "breakpoint_if",
    "get_num_traces",
    "inspect_dce",
    "store_dce",
]
