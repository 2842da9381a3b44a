"""Keeping error messages short: a long list of problems is shown as its first few
items and a count of the rest, so that a checkpoint with 200,000 mismatched tensors
gives a readable message (and a fast one), not a 200,000-line one."""

from __future__ import annotations

from collections.abc import Sequence

SHOWN = 20


def first_few(items: Sequence[str], limit: int = SHOWN) -> list[str]:
    """The first `limit` items, then one ``"... and N more"`` line for the rest."""
    if len(items) <= limit:
        return list(items)
    return [*items[:limit], f"... and {len(items) - limit} more"]
