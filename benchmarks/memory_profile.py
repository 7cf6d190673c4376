"""Where the quickstart's memory goes: one fresh run (empty cache) with its resident memory sampled.

Runs ``xbench run suites/quickstart.yaml`` in a child process with a temporary ``XBENCH_CACHE`` and reads
its ``VmRSS`` from ``/proc`` every 0.1 s (Linux), printing the samples (every second) interleaved with the
run's own log lines, so each phase (imports, training epochs, test accuracy, each cell) shows its
memory; the last line is the peak.

    python benchmarks/memory_profile.py [suite]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    suite = sys.argv[1] if len(sys.argv) > 1 else "suites/quickstart.yaml"
    cache, out = tempfile.mkdtemp(), tempfile.mkdtemp()
    env = {**os.environ, "XBENCH_CACHE": cache, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bench.cli", "run", suite, "--output", out, "--no-progress"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    start, lines, samples = time.time(), [], []

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append((time.time() - start, line.rstrip()))

    threading.Thread(target=read, daemon=True).start()
    while child.poll() is None:
        try:
            with open(f"/proc/{child.pid}/status") as status:
                rss = next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))
            samples.append((time.time() - start, rss))
        except (FileNotFoundError, StopIteration):
            break
        time.sleep(0.1)
    events = sorted([(t, f"RSS {mb} MB") for t, mb in samples[::10]] + [(t, line[:110]) for t, line in lines])
    for t, text in events:
        print(f"{t:7.1f} s  {text}")
    peak = max(samples, key=lambda s: s[1]) if samples else (0.0, 0)
    print(f"peak RSS {peak[1]} MB at {peak[0]:.1f} s; exit code {child.returncode}")
    return int(child.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
