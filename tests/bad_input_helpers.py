"""The shape of the bad-input catalogue (tests/test_bad_input*.py): one table row per misuse.

Each row is `misuse(id, fn, exception_type, regex)`: calling `fn()` must raise exactly
that exception type (or a subclass), with a message matching `regex` (which names the
offending argument or path and what was expected), and the exception must be raised by
ecliptic (or by the test's own code standing in for the user), never from deep inside
JAX or NumPy: the last frame of the traceback must lie in the ecliptic package or in
tests/.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import pytest

import ecliptic

ECLIPTIC_DIR = pathlib.Path(ecliptic.__file__).resolve().parent
TESTS_DIR = pathlib.Path(__file__).resolve().parent


def misuse(id: str, fn: Callable[[], Any], exception: type[BaseException], regex: str) -> Any:
    """One row of a catalogue table."""
    return pytest.param(fn, exception, regex, id=id)


def _last_frame_file(tb: Any) -> pathlib.Path:
    while tb.tb_next is not None:
        tb = tb.tb_next
    return pathlib.Path(tb.tb_frame.f_code.co_filename).resolve()


def check_misuse(fn: Callable[[], Any], exception: type[BaseException], regex: str) -> None:
    """Run one catalogue row: the right type, a clear message, raised by ecliptic."""
    with pytest.raises(exception, match=regex) as info:
        fn()
    last = _last_frame_file(info.tb)
    assert last.is_relative_to(ECLIPTIC_DIR) or last.is_relative_to(TESTS_DIR), (
        f"{info.typename} was raised from {last}, not by ecliptic: {info.value}"
    )
