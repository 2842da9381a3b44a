"""The errors of the I/O services: leaf files, checkpoints and state dicts.

`CheckpointError` is the one error type for the contents of a file or a state dict;
the others are its subclasses, each also an instance of the built-in type Equinox (or
`open`) raises in the same place, so that existing ``except`` clauses keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._state_dict import StateDictReport


class CheckpointError(ValueError):
    """Raised when a checkpoint, leaf file or state dict cannot be saved or loaded.

    The message says what is wrong and where: the leaf path (``layers.2.weight``), what
    was expected and what was found. Every problem with the *contents* of a file
    (truncated, corrupted, foreign format, another architecture, wrong shapes or dtypes)
    raises this, as do failures to write a file (the underlying `OSError` is chained).
    A subclass of `ValueError`.
    """


class CheckpointFileNotFound(CheckpointError, FileNotFoundError):
    """A checkpoint file that does not exist: also a `FileNotFoundError`, so that
    ``except FileNotFoundError`` works as it does around `open` (and Equinox)."""


class LeafMismatchError(CheckpointError):
    """A leaf record whose shape or dtype differs from the expected one (``found`` and
    ``expected`` are ``(shape, dtype)`` pairs)."""

    def __init__(self, message: str, found: tuple[Any, Any], expected: tuple[Any, Any]):
        super().__init__(message)
        self.found = found
        self.expected = expected


class LeafFileError(CheckpointError, RuntimeError):
    """A leaf file that cannot be read or written at some leaf. Also a `RuntimeError`, the
    type Equinox raises there, so that ``except RuntimeError`` keeps working."""


class StateDictError(CheckpointError):
    """Raised by `load_state_dict(..., strict=True)` when the state dict does not fit the
    model. The message lists every missing, unexpected and mismatched key; the details
    are in `.report`, a `StateDictReport`."""

    def __init__(self, report: StateDictReport, hint: str = ""):
        super().__init__(f"the state dict does not fit the model:\n{report}{hint}")
        self.report = report


def cannot_open(message: str, error: OSError) -> CheckpointError:
    """The `CheckpointError` for a file that `open` failed on with `error` (chained by the caller);
    also a `FileNotFoundError` when the file is missing."""
    if not isinstance(error, FileNotFoundError):
        return CheckpointError(message)
    missing = CheckpointFileNotFound(message)
    missing.errno = error.errno  # (`strerror`/`filename` would replace our message in str())
    return missing
