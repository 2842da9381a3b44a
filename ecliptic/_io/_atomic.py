"""Writing a file atomically, and cleaning up after writers that were killed.

`atomic_write` writes into a temporary file beside the target, flushes and fsyncs it,
renames it over the target (`os.replace`, atomic) and fsyncs the directory: a crash at
any point leaves either the old file or the new one, never a mixture.

A writer killed mid-write (SIGKILL, power loss, out of memory) cannot remove its
temporary file. The name says whose it is: ``.NAME.ecliptic-tmp.HOST.PID.RANDOM``, and
the next save or load of ``NAME`` removes those whose writer, on this host, is no longer
alive. A live writer's file (or one from another host, as on a shared file system) is
never touched.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO

from ._errors import CheckpointError

__all__ = ["atomic_write", "remove_stale_temporaries", "temporary_prefix"]

_MARK = ".ecliptic-tmp."


def _host() -> str:
    # Dots separate the fields of the name: keep them out of the host part.
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"


def temporary_prefix(target: str) -> str:
    """The name prefix (without directory) of this process's temporary files for
    `target`: ``.NAME.ecliptic-tmp.HOST.PID.``."""
    return f".{os.path.basename(target)}{_MARK}{_host()}.{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid <= 0 or os.name != "posix":
        # Not a pid we can judge (on Windows, os.kill would terminate the process rather
        # than probe it): keep the file.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. EPERM: it exists, owned by someone else
    return True


def remove_stale_temporaries(target: Any) -> list[str]:
    """Remove (and return the paths of) the temporary files that killed writers left beside
    `target`: only those whose name says they were written on this host by a process that no
    longer exists. Errors (a read-only directory, a file removed meanwhile) are ignored."""
    target = os.path.abspath(os.fspath(target))
    directory, base = os.path.split(target)
    start = f".{base}{_MARK}{_host()}."
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(start):
            continue
        pid_text = name[len(start) :].split(".", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        path = os.path.join(directory, name)
        try:
            os.unlink(path)
        except OSError:
            continue
        removed.append(path)
    return removed


def fsync_directory(directory: str) -> None:
    """fsync a directory (so that a rename in it is durable); a no-op where directories
    cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Any, write: Callable[[BinaryIO], None]) -> None:
    """Write the file `path` (its directory must exist) atomically with `write(file)`.

    `write` fills a temporary file beside `path` (it may seek and fsync it), which is then
    flushed, fsynced and renamed over `path`, and the directory fsynced. On failure the
    temporary file is removed, `path` is untouched, and an `OSError` becomes a
    `CheckpointError` saying so. Stale temporary files of killed writers of `path` are
    removed first."""
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise CheckpointError(
            f"cannot save to {os.fspath(path)!r}: the directory {directory!r} does not exist"
        )
    if os.path.isdir(target):
        raise CheckpointError(f"cannot save to {os.fspath(path)!r}: it is a directory")
    remove_stale_temporaries(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(target), suffix="", dir=directory)
    except OSError as e:
        raise CheckpointError(
            f"cannot save to {os.fspath(path)!r}: cannot create a file in {directory!r} "
            f"({e.strerror or e})"
        ) from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = os.stat(target).st_mode & 0o777
        except OSError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(
                f"cannot save to {os.fspath(path)!r}: {e.strerror or e}; the previous file, "
                "if any, is unchanged"
            ) from e
        raise
    fsync_directory(directory)
