"""Checkpoints at the disk's speed: `ecliptic.save` / `ecliptic.load` against plain
safetensors on the same arrays.

The baselines do the least a safe checkpoint needs: `safetensors.numpy.save_file` into a
temporary file, fsync, rename (no checksums), and `safetensors.numpy.load_file` followed
by `jax.device_put` (no checks). ecliptic does everything it always does (SHA-256 of
every tensor, fsync of file and directory, atomic rename, every structural check), so
the ratios are the price of that safety (goals: save <= 1.25x, load <= 1.1x).

Loads are timed from a fresh C heap: before each timed load, the previous results are
collected and `malloc_trim` hands their freed pages back to the system, so every load
writes into new pages, as a load at a program's start does. Otherwise a contender's
speed depends on whether the allocator happens to reuse the pages that the other's
result just freed (safetensors' rounds varied 3.7x that way: 95 to 352 ms). The loads
are timed that way too, "heap reused", for information: there ecliptic's time is
bounded by SHA-256 (about 1.7 GB/s per core, the model hashed over the machine's cores).

Peak host memory is measured in a fresh subprocess per operation: the rise of the
resident set's high-water mark (VmHWM, reset just before the operation) above what was
resident before it, and tracemalloc's peak of Python-level allocations. For loads, the
loaded arrays themselves (the model's size) are subtracted: what is left is the
temporary memory, to be compared with the largest array (goal: a bounded buffer, not a
second copy of the model).

    python benchmarks/checkpoint_io.py [--quick] [--dir DIRECTORY]

(`--dir`: where to write, default the system's temporary directory; use a real disk,
not a tmpfs, for meaningful fsync times.)
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _timing import Row, interleaved, print_rows  # noqa: E402

import ecliptic  # noqa: E402

FULL = (24, 2048)  # 24 float32 arrays of 2048 x 2048: 400 MB
QUICK = (4, 64)
BUFFER = 64 * 2**20  # ecliptic._io._checkpoint_data.BUFFER: the bound on temporary copies


def make_model(count: int, side: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(0)
    return {
        f"layer{i}": jax.device_put(rng.standard_normal((side, side), dtype=np.float32))
        for i in range(count)
    }


def safetensors_save(path: str, model: dict[str, Any]) -> None:
    import safetensors.numpy

    tmp = path + ".tmp"
    safetensors.numpy.save_file({k: np.asarray(v) for k, v in model.items()}, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def safetensors_load(path: str) -> dict[str, jax.Array]:
    import safetensors.numpy

    return {k: jax.device_put(v) for k, v in safetensors.numpy.load_file(path).items()}


def fresh_heap() -> None:
    """Collect garbage and return the C heap's free pages to the system (glibc's
    `malloc_trim`; elsewhere only the collection)."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


HASH_FLOOR = "SHA-256 alone, all cores (verification's floor)"


def hash_all(model: dict[str, Any]) -> list[str]:
    """SHA-256 of every array's bytes, spread over all cores: what verifying a load
    costs at the least, before any reading."""
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(lambda a: hashlib.sha256(np.asarray(a)).hexdigest(), model.values()))  # pyright: ignore[reportArgumentType]


def _operations(directory: str, model: dict[str, Any]) -> dict[str, Any]:
    ours, theirs = os.path.join(directory, "ecliptic.st"), os.path.join(directory, "plain.st")
    return {
        "safetensors save + fsync + rename": lambda: safetensors_save(theirs, model),
        "ecliptic.save": lambda: ecliptic.save(ours, model),
        "safetensors load_file + device_put": lambda: safetensors_load(theirs),
        "ecliptic.load": lambda: ecliptic.load(ours, model),
    }


# ----------------------------------------------------------------------- peak memory

_MEMORY_CHILD = """
import json, os, sys, tracemalloc
sys.path.insert(0, {bench!r})
import jax, numpy as np
import checkpoint_io as bench
count, side, directory, name = {count}, {side}, {directory!r}, {name!r}
model = bench.make_model(count, side)
operation = bench._operations(directory, model)[name]

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return -1

out = None
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark
    f.write("5")
tracemalloc.start()
out = operation()
jax.block_until_ready(out)
python_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({{"rss": status("VmHWM") - before, "python": python_peak}}))
"""


def peak_memory(directory: str, count: int, side: int, name: str) -> dict[str, int] | None:
    """Peak extra host memory of one operation, in a fresh process (Linux only)."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    code = _MEMORY_CHILD.format(
        bench=os.path.dirname(os.path.abspath(__file__)),
        count=count,
        side=side,
        directory=directory,
        name=name,
    )
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main(smoke: bool = False, directory: str | None = None) -> list[Row]:
    """Time saves and loads interleaved, and measure peak memory; return the rows."""
    count, side = QUICK if smoke else FULL
    rounds = 2 if smoke else 7
    model = make_model(count, side)
    model_bytes = count * side * side * 4
    largest = side * side * 4
    workdir = tempfile.mkdtemp(prefix="ecliptic-bench-", dir=directory)
    rows: list[Row] = []
    try:
        ops = _operations(workdir, model)
        for op in ops.values():  # write both files before any load is timed
            jax.block_until_ready(op())
        mb = f"{model_bytes / 2**20:.0f} MB"
        timings = (
            ("save", "save", "<=1.25x", None),
            ("load", "load", "<=1.1x", fresh_heap),
            ("load", "load, heap reused", "", None),
        )
        for kind, label, goal, setup in timings:
            names = [n for n in ops if (" save" in n or ".save" in n) == (kind == "save")]
            contenders = {n: ops[n] for n in names}
            if setup is not None:
                contenders[HASH_FLOOR] = lambda: hash_all(model)
            stats = interleaved(
                contenders,
                number=1,
                rounds=rounds + (2 if setup else 0),
                warmup=1,
                setup=setup,
            )
            base = stats[names[0]]
            for n in stats:
                s = stats[n]
                rows.append(
                    Row(
                        f"checkpoint {label} ({count} x f32[{side},{side}], {mb})",
                        n,
                        s.median / 1e3,
                        "ms",
                        None if n == names[0] else s.median / base.median,
                        goal if n.startswith("ecliptic") else "",
                        f"min {s.min / 1e3:.3g} ms"
                        + ("" if n == names[0] else f" ({s.min / base.min:.2f}x)"),
                        None if n == names[0] else s.min / base.min,
                    )
                )
        bound = largest + BUFFER
        peaks = {}
        for n in ops:
            peak = peak_memory(workdir, count, side, n)
            if peak is None:  # not Linux
                break
            peaks[n] = peak
        for kind in ("save", "load") if peaks else ():
            names = [n for n in ops if (" save" in n or ".save" in n) == (kind == "save")]
            result = model_bytes if kind == "load" else 0
            extras = {n: max(0, peaks[n]["rss"] - result) for n in names}
            base = max(extras[names[0]], 2**20)
            for n in names:
                ours = n != names[0]
                within = "within" if extras[n] <= bound else "ABOVE"
                rows.append(
                    Row(
                        f"checkpoint {kind} peak extra host memory",
                        n,
                        extras[n] / 2**20,
                        "MB",
                        extras[n] / base if ours else None,
                        "",
                        f"RSS rise {peaks[n]['rss'] / 2**20:.0f} MB"
                        + (f" minus the loaded {mb}" if result else "")
                        + f"; Python allocations {peaks[n]['python'] / 2**20:.0f} MB"
                        + (
                            f"; {within} largest array + buffer = {bound / 2**20:.0f} MB"
                            if ours
                            else ""
                        ),
                    )
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]
    where = args[args.index("--dir") + 1] if "--dir" in args else None
    print_rows(main("--quick" in args, where))
