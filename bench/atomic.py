"""Atomic file writes: a reader sees the old file or the complete new one, never a part.

Each write goes to a hidden temporary file in the destination folder, is flushed
and fsynced, then renamed over the destination (``os.replace`` is atomic on
POSIX and Windows within one file system). A process killed mid-write leaves at
most a ``.*.tmp-*`` file, which ``remove_stale_temporaries`` cleans up.

Fault injection (for tests/test_faults.py; inert unless ``XBENCH_FAULTS`` is set):
every atomic write is numbered in order, and ``XBENCH_FAULTS`` names what happens
at one of them: ``kill-before:N`` SIGKILLs the process with the N-th write's
temporary file complete but not yet renamed, ``kill-after:N`` right after its
rename, ``enospc:N`` / ``erofs:N`` make the N-th and every later write fail as a
full or read-only file system would. ``XBENCH_FAULT_LOG=FILE`` appends each write's
number and path to FILE, so a test can choose its fault points among real writes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"
_writes = 0  # atomic writes so far in this process (numbers the fault points)


def _fault(stage: str, dest: Path) -> None:
    """Inject the fault ``XBENCH_FAULTS`` asks for at this write and stage (see the module docstring)."""
    global _writes
    spec = os.environ.get("XBENCH_FAULTS")
    log = os.environ.get("XBENCH_FAULT_LOG")
    if not spec and not log:
        return
    if stage == "start":
        _writes += 1
        if log:
            with open(log, "a") as fh:
                fh.write(f"{_writes} {dest}\n")
    kind, _, at = (spec or "").partition(":")
    if not at.isdigit():
        return
    n = int(at)
    if stage == "start" and kind in ("enospc", "erofs") and _writes >= n:
        code = errno.ENOSPC if kind == "enospc" else errno.EROFS
        raise OSError(code, os.strerror(code), str(dest))
    if _writes == n and (kind, stage) in (("kill-before", "written"), ("kill-after", "renamed")):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success it replaces ``dest``."""
    dest = Path(dest)
    _fault("start", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        _fault("written", dest)
        os.replace(tmp, dest)
        _fault("renamed", dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(dest: Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: Path, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: Path, obj: Any) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_with(dest: Path, writer: Callable[[Path], object]) -> None:
    """Atomically create ``dest`` with ``writer(tmp_path)`` (e.g. torch.save, pyarrow)."""
    with atomic_path(dest) as tmp:
        writer(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporaries that dead processes left in ``folder``; returns how many."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob(f".*{TMP_MARK}*"):
        pid = path.name.rsplit(TMP_MARK, 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another live process is writing it
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed
