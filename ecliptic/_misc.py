"""Tiny helpers shared across the package."""

from __future__ import annotations

from typing import Any


def type_name(x: Any) -> str:
    """A short, readable name of ``x``'s type for error messages."""
    kind = type(x)
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module}.{kind.__qualname__}"


def short_repr(x: Any, limit: int = 80) -> str:
    """``repr(x)``, cut to ``limit`` characters so that error messages stay readable."""
    try:
        text = repr(x)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type_name(x)} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
