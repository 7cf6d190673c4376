"""The CPU fast path: process-wide settings applied once, before any model runs.

Two settings change how fast a CPU runs the same computation, never its numbers:

- **The allocator** (glibc). glibc serves every allocation above its mmap
  threshold (dynamic, at most 32 MiB) with freshly mapped pages and unmaps
  them on free, so each large activation of each forward pass is faulted in
  page by page: a deletion metric on a ResNet-50 at 224 px took 7.9 M minor
  page faults and 4.6 s of system time per call. ``tune_allocator`` raises
  glibc's mmap and trim thresholds with ``mallopt`` (what the environment
  variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` do, but
  from inside the process), so freed blocks are reused from the heap.
- **Threads**. torch's OpenMP threads wait for each other at the end of every
  parallel operator; when another process holds one of the cores, the thread
  that shares it stalls all of them (measured: a ResNet-20 forward at 16.5
  ms/image with 2 threads against 3.5 ms with 1, with another process busy on
  one of 2 cores). ``threads: auto`` starts as many threads as there are cores
  that other processes leave free, measured at start-up.

The command line calls ``configure`` (``xbench run``/``train``: the suite's
``threads``, ``--threads``, ``--allocator``); a process that runs cells
elsewhere (a Ray worker) calls ``configure_from_env`` with the variables that
``environment`` returns.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ThreadSetting = int | Literal["auto"]
AllocatorSetting = Literal["tuned", "default"]

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# Blocks up to this size come from the heap and are reused: covers the activations of a ResNet-50
# forward of 256 images at 224 px (a 64x112x112 float32 map is 3.2 MB per image, 822 MB at 256).
MMAP_THRESHOLD = 1 << 30
# Free memory at the top of the heap is returned to the system only above this size: large enough that
# a training step or forward pass does not hand its activations back before the next one (128 MiB: 10.7 M
# page faults and 21 s of system time in the quickstart's training, against 0.31 M and 1.6 s at 256 MiB),
# small enough to bound what the process keeps (its peak was 1.48 GB against 1.53 GB).
TRIM_THRESHOLD = 256 << 20
ENV_THREADS, ENV_ALLOCATOR = "XBENCH_THREADS", "XBENCH_ALLOCATOR"
# glibc's own variables for the same thresholds: when one is set, the user chose, and configure keeps it
GLIBC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
SAMPLE_SECONDS = 0.2  # how long ``free_cores`` watches the machine


@dataclass(frozen=True)
class FastPath:
    """What ``configure`` did: the torch threads, the allocator state and the free cores it saw."""

    threads: int
    setting: str  # the requested thread setting ("auto" or a number)
    allocator: str  # "tuned", "default", or "default (not glibc)" where mallopt is unavailable
    cores: int  # cores this process may use (affinity and cgroup quota)
    free_cores: float | None  # cores other processes left idle at start-up (auto only)

    def describe(self) -> str:
        seen = f", {self.free_cores:.1f} of {self.cores} cores free" if self.free_cores is not None else ""
        return f"{self.threads} torch thread(s) ({self.setting}{seen}), allocator {self.allocator}"


_applied: FastPath | None = None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine from /proc/stat, in clock ticks; None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def free_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores that other processes leave idle: the lower of two estimates, so that neither a quiet
    moment nor a past burst decides alone. Measured over ``seconds`` (Linux: /proc/stat minus this
    process's own CPU time): a test run between two files looked idle for 0.2 s and got 2 threads
    on a machine at load 3; and the machine's cores minus the 1-minute load average (both machine
    wide, as /proc/stat is, so a container's share of a large host is not mistaken for its load)."""
    cores = usable_cores()
    try:
        by_load = (os.cpu_count() or cores) - os.getloadavg()[0]
    except OSError:
        by_load = float(cores)
    before, own_before, start = _busy_jiffies(), time.process_time(), time.perf_counter()
    if before is None:
        return max(0.0, min(float(cores), by_load))
    time.sleep(seconds)
    after, own, wall = _busy_jiffies(), time.process_time() - own_before, time.perf_counter() - start
    assert after is not None
    tick = os.sysconf("SC_CLK_TCK")
    busy_cores = (after[0] - before[0]) / tick / wall
    machine = (after[1] - before[1]) / tick / wall  # cores of the whole machine, busy or idle
    others = max(0.0, busy_cores - own / wall)
    return max(0.0, min(float(cores), machine - others, by_load))


def auto_threads(free: float, cores: int) -> int:
    """Threads for ``free`` idle cores out of ``cores``: one per core that is at least 3/4 free
    (a thread on a shared core stalls the others at every barrier), at least one."""
    return max(1, min(cores, math.floor(free + 0.25)))


def tune_allocator(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds with ``mallopt``; False where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold))
        ok &= libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold))
    except (OSError, AttributeError):
        return False
    return bool(ok)


@contextmanager
def training_threads() -> Iterator[int]:
    """Torch threads while training: one when ``configure`` chose the count by the load (``threads: auto``).

    A trained model depends on the thread count (torch's parallel reductions round differently: one epoch
    of the quickstart's CNN with 1 and with 2 threads gave weights up to 0.013 apart), so a count that
    follows the load would train different models from the same seed. An explicit count, or no fast path
    (library use), keeps torch's setting. Restored afterwards.
    """
    import torch

    before = torch.get_num_threads()
    count = 1 if _applied is not None and _applied.setting == "auto" else before
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)


def release_memory() -> bool:
    """Hand the C heap's free memory back to the system (glibc ``malloc_trim``): after a phase that held
    much (training data), so that the process's resident size drops instead of staying at its peak.
    False where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def parse_threads(value: str | int | None) -> ThreadSetting | None:
    """``"auto"``, a positive count, or None (unset): the form of ``--threads`` and ``XBENCH_THREADS``."""
    if value is None or value == "":
        return None
    if value == "auto":
        return "auto"
    count = int(value)
    if count < 1:
        raise ValueError(f"threads must be at least 1 or 'auto', got {value!r}")
    return count


def configure(threads: ThreadSetting | None = "auto", allocator: AllocatorSetting = "tuned") -> FastPath:
    """Apply the settings to this process (once: later calls return the first result unchanged).

    ``threads``: a count, ``"auto"`` (the cores other processes leave free), or None to keep
    torch's own choice. ``allocator``: ``"tuned"`` raises glibc's thresholds, ``"default"``
    leaves the allocator alone (an allocator cannot be un-tuned later in the same process).
    """
    global _applied
    if _applied is not None:
        return _applied
    if allocator == "tuned" and any(os.environ.get(name) for name in GLIBC_SETTINGS):
        state = "set by " + ", ".join(name for name in GLIBC_SETTINGS if os.environ.get(name))  # glibc applied them
    elif allocator == "tuned" and tune_allocator():
        state = "tuned"
    else:
        state = "default" if allocator == "default" else "default (not glibc)"
    import torch

    cores, free = usable_cores(), None
    if threads == "auto":
        free = free_cores()
        count = auto_threads(free, cores)
    else:
        count = threads if threads is not None else torch.get_num_threads()
    torch.set_num_threads(count)
    _applied = FastPath(count, str(threads or "torch default"), state, cores, free)
    return _applied


def environment(threads: ThreadSetting | None, allocator: AllocatorSetting) -> dict[str, str]:
    """The variables that make ``configure_from_env`` in another process (a Ray worker) apply the same settings."""
    env: dict[str, str] = {ENV_ALLOCATOR: allocator}
    if threads is not None:
        env[ENV_THREADS] = str(threads)
    return env


def configure_from_env() -> FastPath:
    """``configure`` with ``XBENCH_THREADS`` (default auto) and ``XBENCH_ALLOCATOR`` (default tuned)."""
    threads = parse_threads(os.environ.get(ENV_THREADS)) or "auto"
    allocator = os.environ.get(ENV_ALLOCATOR, "tuned")
    return configure(threads, "default" if allocator == "default" else "tuned")


def applied() -> FastPath | None:
    """The settings ``configure`` applied in this process, if it ran."""
    return _applied
