"""`launch_local`: start N processes of one Python script on this machine, as a
`torchrun`-style launcher does, and collect how they ended.

Each child gets ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``, ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` (read by `ecliptic.distributed.initialize`). Children run in
their own process group; when one fails, the others are given a short grace period and
then killed, and on a time-out every child is killed. Nothing is left running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class ProcessResult:
    """How one launched process ended.

    **Attributes:** `rank`; `returncode` (negative: killed by that signal); `stdout` and
    `stderr` (text); `timed_out` (killed because the launch ran past its time-out).
    """

    rank: int
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


class LaunchError(RuntimeError):
    """Raised by `launch_local(check=True)` when a process failed or timed out."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it), e.g. for a coordinator.

    **Returns:** the port number (another program may take it later; use it at once).

    ```python
    port = ecliptic.distributed.free_port()
    ```
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen) -> None:
    # The whole group, even when its leader has exited: what it started may still run.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def launch_local(
    script: str,
    args: Sequence[str] = (),
    *,
    num_processes: int = 2,
    devices_per_process: int | None = 2,
    timeout: float = 120.0,
    grace: float = 5.0,
    env: Mapping[str, str] | None = None,
    cpu: bool = True,
    check: bool = True,
) -> list[ProcessResult]:
    """Run `python script *args` in `num_processes` processes on this machine, as one job.

    **Arguments:**

    - `script`: the path of the Python script each process runs. It should call
        `ecliptic.distributed.initialize()` first.
    - `args`: its command-line arguments (strings), the same for every process.
    - `num_processes`: how many processes (ranks 0 .. n-1).
    - `devices_per_process`: with `cpu=True`, how many virtual CPU devices each process
        has (`None`: JAX's default).
    - `timeout`: seconds for the whole job; then every process is killed.
    - `grace`: seconds the other processes get to finish once one has failed.
    - `env`: extra environment variables for the children.
    - `cpu`: run the children on CPU devices only (``JAX_PLATFORMS=cpu``).
    - `check`: raise `LaunchError` (with each failed process's output) unless every
        process exits with status 0.

    **Returns:** a list of `ProcessResult`, one per rank.

    ```python
    results = ecliptic.distributed.launch_local("train.py", ["--steps", "10"])
    print(results[0].stdout)
    ```
    """
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(
            f"launch_local(num_processes=...) must be an int >= 1; got {num_processes!r}."
        )
    if devices_per_process is not None and (
        not isinstance(devices_per_process, int) or devices_per_process < 1
    ):
        raise ValueError(
            "launch_local(devices_per_process=...) must be None or an int >= 1; got "
            f"{devices_per_process!r}."
        )
    if not os.path.isfile(script):
        raise FileNotFoundError(f"launch_local(script=...): no such file {script!r}.")
    base = dict(os.environ)
    base.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(num_processes)
    )
    if cpu:
        base["JAX_PLATFORMS"] = "cpu"
        if devices_per_process is not None:
            base["JAX_NUM_CPU_DEVICES"] = str(devices_per_process)
    base.update(env or {})
    procs: list[subprocess.Popen] = []
    results = []
    with contextlib.ExitStack() as files:
        outs = []
        try:
            for rank in range(num_processes):
                out = files.enter_context(tempfile.TemporaryFile(mode="w+"))
                err = files.enter_context(tempfile.TemporaryFile(mode="w+"))
                outs.append((out, err))
                procs.append(
                    subprocess.Popen(
                        [sys.executable, script, *args],
                        env=dict(base, RANK=str(rank), LOCAL_RANK=str(rank)),
                        stdout=out,
                        stderr=err,
                        start_new_session=True,  # its own process group, killed as a whole
                    )
                )
            timed_out = _wait(procs, timeout, grace)
        finally:
            for proc in procs:
                _kill_group(proc)
        for rank, (proc, (out, err)) in enumerate(zip(procs, outs)):
            out.seek(0)
            err.seek(0)
            results.append(
                ProcessResult(rank, proc.returncode, out.read(), err.read(), rank in timed_out)
            )
    if check and any(r.returncode != 0 for r in results):
        raise LaunchError(_failure_report(results, timeout))
    return results


def _wait(procs: list[subprocess.Popen], timeout: float, grace: float) -> set[int]:
    """Wait for every process; return the ranks still running at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return set()
        if any(c not in (None, 0) for c in codes):
            deadline = min(deadline, time.monotonic() + grace)
        if time.monotonic() >= deadline:
            return {rank for rank, c in enumerate(codes) if c is None}
        time.sleep(0.02)


def _failure_report(results: list[ProcessResult], timeout: float) -> str:
    lines = []
    for r in results:
        if r.returncode == 0:
            continue
        why = f"timed out after {timeout} s" if r.timed_out else f"exit status {r.returncode}"
        lines.append(f"process {r.rank}: {why}\n--- stderr (tail) ---\n{r.stderr[-3000:]}")
    return "launch_local: not every process succeeded.\n" + "\n".join(lines)
