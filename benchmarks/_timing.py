"""Shared timing helpers: contenders timed side by side in one process.

Robust to a busy machine: contenders are interleaved in rounds (A B C, B C A, ...), each
round times a short batch of calls with the garbage collector off, and we report the
median (and the minimum) over rounds. Ratios are taken between medians.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Stats:
    """Per-call times in microseconds over the rounds."""

    median: float
    min: float
    samples: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a results table.

    `value` is in `unit`; `ratio` is `value / baseline value` (None for the baseline
    itself or where no baseline applies); `goal` is the target ratio, if any.
    """

    group: str
    name: str
    value: float
    unit: str
    ratio: float | None = None
    goal: str = ""
    note: str = ""
    min_ratio: float | None = None  # ratio of the best rounds, where measured


def _run_batch(fn: Callable[[], Any], number: int) -> float:
    out = None
    start = time.perf_counter()
    for _ in range(number):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / number * 1e6


def interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    number: int = 200,
    rounds: int = 21,
    warmup: int = 3,
    batch_seconds: float = 0.01,
    setup: Callable[[], Any] | None = None,
) -> dict[str, Stats]:
    """Time zero-argument callables against each other, interleaved in rounds.

    **Arguments:**

    - `fns`: name -> callable doing ONE call of the thing to time (it may update
        closed-over state, e.g. a training step).
    - `number`: the most calls per batch (the result of the last call is waited for);
        slow contenders get fewer, so that one batch takes about `batch_seconds`.
    - `rounds`: number of batches per contender; the order rotates every round.
    - `warmup`: untimed calls per contender first (compilation, caches).
    - `setup`: called (untimed) before every timed batch, to start each from the same
        state.

    **Returns:** name -> `Stats` of microseconds per call.
    """
    names = list(fns)
    numbers = {}
    for name in names:
        for _ in range(warmup):
            jax.block_until_ready(fns[name]())
        one = _run_batch(fns[name], 1) * 1e-6
        numbers[name] = max(1, min(number, int(batch_seconds / max(one, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                if setup is not None:
                    setup()
                samples[name].append(_run_batch(fns[name], numbers[name]))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Stats(statistics.median(s), min(s), tuple(s)) for name, s in samples.items()}


def time_call(fn: Callable[[], Any], *, number: int = 2000, repeat: int = 15) -> float:
    """Median over `repeat` batches of the mean time of `number` calls, in microseconds."""
    return interleaved({"fn": fn}, number=number, rounds=repeat).get("fn").median  # type: ignore[union-attr]


def wall(fn: Callable[[], Any]) -> float:
    """Seconds taken by one call of `fn` (waiting for its result), GC off."""
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        jax.block_until_ready(fn())
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def rows_from_stats(
    group: str,
    stats: dict[str, Stats],
    baseline: str,
    *,
    goals: dict[str, str] | None = None,
    unit: str = "us/call",
) -> list[Row]:
    """Table rows for `interleaved` results, with ratios to `baseline`'s median."""
    base, base_min = stats[baseline].median, stats[baseline].min
    goals = goals or {}
    return [
        Row(
            group,
            name,
            s.median,
            unit,
            None if name == baseline else s.median / base,
            goals.get(name, ""),
            f"min {s.min:.3g}" + ("" if name == baseline else f" ({s.min / base_min:.2f}x)"),
            None if name == baseline else s.min / base_min,
        )
        for name, s in stats.items()
    ]


def optional(name: str) -> ModuleType | None:
    """Import an optional competitor (Equinox, Flax) or return None when missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def goal_met(row: Row) -> str:
    """ "yes"/"no" for a row whose goal is a ratio bound such as "<=1.15x", else ""."""
    goal = row.goal.strip()
    if row.ratio is None or not goal.startswith("<=") or not goal.endswith("x"):
        return ""
    # Conservative on a noisy machine: the bound must hold for the median ratio and, where
    # measured, for the ratio of the best rounds too.
    worst = max(row.ratio, row.min_ratio) if row.min_ratio is not None else row.ratio
    return "yes" if worst <= float(goal[2:-1]) else "no"


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table of rows, in order."""
    lines = [
        "| benchmark | contender | median | unit | ratio | goal | met | note |",
        "|---|---|---:|---|---:|---|---|---|",
    ]
    for row in rows:
        ratio = "baseline" if row.ratio is None else f"{row.ratio:.2f}x"
        value = f"{row.value:.3g}" if row.value < 100 else f"{row.value:.0f}"
        lines.append(
            f"| {row.group} | {row.name} | {value} | {row.unit} | {ratio} | {row.goal} | "
            f"{goal_met(row)} | {row.note} |"
        )
    return "\n".join(lines)


def print_rows(rows: Sequence[Row]) -> None:
    """Print rows as a plain aligned table (for running one script by hand)."""
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:6.2f}x"
        print(
            f"{row.group:28s} {row.name:44s} {row.value:10.2f} {row.unit:9s} {ratio:>8s}"
            f"  {row.goal:8s} {row.note}"
        )


def machine() -> str:
    """A one-line description of the machine and versions."""
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    versions = [f"jax {jax.__version__}"]
    for name in ("equinox", "flax", "optax"):
        module = optional(name)
        if module is not None:
            versions.append(f"{name} {getattr(module, '__version__', '?')}")
    try:
        load = "load avg " + "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = "load avg n/a"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores ({load}), "
        f"Python {platform.python_version()}, {', '.join(versions)}, devices: {devices}"
    )


def smoke_flag(argv: Sequence[str] | None = None) -> bool:
    """Whether `--smoke` was passed on the command line."""
    return "--smoke" in (sys.argv[1:] if argv is None else argv)
