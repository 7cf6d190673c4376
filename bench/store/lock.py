"""One writer per run directory: an advisory lock that the driver of ``xbench run`` holds for the
whole run.

The lock is ``filelock``'s ``flock`` on ``<run>/.xbench.lock``; the kernel releases it
when the holding process dies, however it dies (SIGKILL included), so a lock left by
a dead run is simply free again: taking it over needs no guessing about staleness.
Beside it, ``.xbench.lock.json`` names the holder (pid, host, start time, command)
so that a second run can say who holds the directory. That file is informative
only: the flock is the truth. Like every flock, this assumes a local file system
(on some network file systems flock is not shared between hosts).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout

from bench import atomic
from bench.errors import OutputError

LOCK_NAME = ".xbench.lock"
HOLDER_NAME = ".xbench.lock.json"


class RunLocked(OutputError):
    """Another live process holds the run directory."""


def holder(run_dir: Path) -> dict[str, Any]:
    """Who holds (or last held) the lock of ``run_dir``: pid, host, started, argv; {} when unknown."""
    try:
        return dict(json.loads((Path(run_dir) / HOLDER_NAME).read_text()))
    except (OSError, ValueError):
        return {}


def describe(info: dict[str, Any]) -> str:
    if not info:
        return "another process (its details are unreadable)"
    return f"process {info.get('pid')} on {info.get('host')} (started {info.get('started')}: {info.get('command')})"


class RunLock:
    """The exclusive lock of one run directory (a context manager).

    ``wait=False``: a held lock raises ``RunLocked`` (exit code 2) naming the holder and what to do;
    ``wait=True``: block until the holder finishes, logging once who it waits for.
    """

    def __init__(self, run_dir: Path, *, wait: bool = False, log: Any = print):
        self.run_dir = Path(run_dir)
        self.wait = wait
        self.log = log
        self._lock = FileLock(
            self.run_dir / LOCK_NAME, timeout=-1, thread_local=False, preserve_lock_file=True, fallback_to_soft=False
        )

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            info = holder(self.run_dir)
            if not self.wait:
                raise RunLocked(
                    f"the run directory {self.run_dir} is in use by {describe(info)}",
                    field="output",
                    fix="wait for it to finish, or rerun with --wait to queue behind it; to run both at once "
                    "give this one another directory (--output DIR or --run-id ID)",
                ) from None
            self.log(f"waiting for {describe(info)} to release {self.run_dir} ...")
            begin = time.monotonic()
            self._lock.acquire(timeout=-1)
            self.log(f"got {self.run_dir} after {time.monotonic() - begin:.0f} s")
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        # informative only: the flock is held either way, and writing results will report a bad disk
        with contextlib.suppress(OSError):
            atomic.write_json(self.run_dir / HOLDER_NAME, info)
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            (self.run_dir / HOLDER_NAME).unlink(missing_ok=True)
            self._lock.release(force=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
