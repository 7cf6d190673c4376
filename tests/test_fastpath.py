"""The CPU fast path (threads, allocator) and start-up hygiene: light commands never import torchvision."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import fastpath
from bench.cli import build_parser
from bench.config import SuiteConfig
from tests.conftest import ROOT, tiny_suite, write_suite

# Runs a command in a fresh interpreter and reports which modules it imported and who imported
# torchvision first (the module whose code ran the import statement).
PROBE = """
import json, sys, traceback
first = []

class Finder:
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" and not first:
            stack = [f.filename for f in traceback.extract_stack() if "/bench/" in f.filename]
            first.append(stack[-1] if stack else "?")
        return None

sys.meta_path.insert(0, Finder())
from bench.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "torchvision": "torchvision" in sys.modules, "torch": "torch" in sys.modules,
                  "first": first[0] if first else None}))
"""


def probe(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the kept quickstart results (leaderboard writes into the folder it reads)."""
    dest = tmp_path_factory.mktemp("reference") / "quickstart"
    shutil.copytree(ROOT / "reports" / "quickstart", dest)
    return dest


@pytest.mark.parametrize(
    "command",
    [["--help"], ["list"], ["list", "--format", "markdown"], ["validate", "suites/quickstart.yaml"],
     ["validate", "suites/standin/cifar10-cnn-vs-vit.yaml", "--no-time"], ["leaderboard", "{run}"],
     ["compare", "{run}", "{run}"]],
    ids=["help", "list", "list-markdown", "validate-quickstart", "validate-vit-standin", "leaderboard", "compare"],
)  # fmt: skip
def test_light_commands_never_import_torchvision(command: list[str], reference_run: Path) -> None:
    """torchvision's import takes seconds (it loads torch._dynamo): checking or reading never needs it.

    (``validate`` times the models it has not timed before by building them, and a torchvision
    architecture needs torchvision then; ``--no-time`` checks without building any model.)"""
    args = [arg.replace("{run}", str(reference_run)) for arg in command]
    if command[0] == "--help":
        done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT)
        assert "usage: xbench" in done.stdout  # argparse exits before the probe reports
        return
    result = probe(args, ROOT)
    assert result["rc"] in (0, 1), result
    assert not result["torchvision"], f"imported by {result['first']}"
    if command[0] == "compare":
        assert not result["torch"]  # comparing results is pandas work


@pytest.mark.slow
def test_run_imports_torchvision_only_for_components_that_need_it(tmp_path: Path) -> None:
    """The tiny suite (synthetic data, small CNN, captum and CAM explainers) needs no torchvision."""
    suite = write_suite(tmp_path, tiny_suite(output=str(tmp_path / "run"), explainers=["saliency", "gradcam"]))
    result = probe(["run", str(suite)], tmp_path)
    assert result["rc"] == 0
    if result["torchvision"] and result["first"].endswith("datasets/label_maps.py"):
        pytest.xfail("bench/datasets/label_maps.py imports torchvision for the ImageNet class names (being removed)")
    assert not result["torchvision"], f"imported by {result['first']}"


def test_threads_setting_and_flag() -> None:
    base = {"datasets": ["synthetic"], "models": ["small_cnn"], "explainers": ["random"], "metrics": ["iou"]}
    assert SuiteConfig(**base).threads == "auto"
    assert SuiteConfig(**base, threads=3).threads == 3
    for bad in (0, -1, "two", True, 2.5):
        with pytest.raises(ValueError, match="threads must be auto or a number"):
            SuiteConfig(**base, threads=bad)
    parser = build_parser()
    assert parser.parse_args(["run", "s.yaml", "--threads", "auto"]).threads == "auto"
    assert parser.parse_args(["run", "s.yaml", "--threads", "3"]).threads == 3
    assert parser.parse_args(["train", "s.yaml"]).threads is None  # the suite decides
    assert parser.parse_args(["run", "s.yaml"]).allocator == "tuned"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "s.yaml", "--threads", "0"])


@pytest.mark.parametrize(
    ("free", "cores", "threads"), [(2.0, 2, 2), (1.8, 2, 2), (1.7, 2, 1), (1.0, 2, 1), (0.0, 2, 1), (13.9, 16, 14)]
)
def test_auto_threads_leave_busy_cores_alone(free: float, cores: int, threads: int) -> None:
    """A thread on a core another process uses stalls the others at every barrier: count only free cores."""
    assert fastpath.auto_threads(free, cores) == threads


def test_free_cores_is_within_the_machine() -> None:
    free = fastpath.free_cores(0.05)
    assert 0.0 <= free <= fastpath.usable_cores()


def test_environment_round_trip() -> None:
    assert fastpath.environment(3, "default") == {"XBENCH_THREADS": "3", "XBENCH_ALLOCATOR": "default"}
    assert fastpath.environment(None, "tuned") == {"XBENCH_ALLOCATOR": "tuned"}
    assert fastpath.parse_threads("auto") == "auto" and fastpath.parse_threads("4") == 4
    assert fastpath.parse_threads(None) is None and fastpath.parse_threads("") is None
    with pytest.raises(ValueError):
        fastpath.parse_threads("0")


CONFIGURE = """
import json, resource, sys
from bench import fastpath
applied = fastpath.configure(threads=int(sys.argv[1]), allocator=sys.argv[2])
import torch
x = torch.rand(8, 64, 112, 112)  # 25 MB: above glibc's default mmap threshold of 128 KB..32 MB
conv = torch.nn.Conv2d(64, 64, 3, padding=1)
with torch.no_grad():
    conv(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        conv(x)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
again = fastpath.configure(threads=7, allocator="default")  # once per process: the first settings stay
print(json.dumps({"threads": torch.get_num_threads(), "allocator": applied.allocator, "faults": faults,
                  "same": again is applied}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_tuned_allocator_stops_the_page_faults() -> None:
    """With glibc's defaults every large output is a fresh mapping faulted in page by page; tuned, the
    heap reuses it. Counted in minor page faults (numbers, not timings)."""
    runs = {}
    for allocator in ("default", "tuned"):
        done = subprocess.run([sys.executable, "-c", CONFIGURE, "1", allocator], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        runs[allocator] = json.loads(done.stdout)
    assert runs["tuned"]["threads"] == runs["default"]["threads"] == 1
    assert runs["tuned"]["same"] and runs["default"]["allocator"] == "default"
    if runs["tuned"]["allocator"] != "tuned":
        pytest.skip("not glibc: the allocator is left alone")
    # 10 outputs of 25 MB: about 60,000 faults (6,100 per output) with fresh maps; with the heap, at most
    # one output's pages are new (measured 163,000 against 6,300)
    assert runs["default"]["faults"] > 40_000
    assert runs["tuned"]["faults"] < runs["default"]["faults"] / 5


TRAINING = """
import json, os, sys
from bench import fastpath
setting = sys.argv[1]
applied = fastpath.configure(threads=setting if setting == "auto" else int(setting), allocator="tuned")
import torch
torch.set_num_threads(2)  # what auto might have picked on an idle machine
with fastpath.training_threads() as inside:
    during = torch.get_num_threads()
print(json.dumps({"inside": inside, "during": during, "after": torch.get_num_threads(),
                  "allocator": applied.allocator, "released": fastpath.release_memory()}))
"""


@pytest.mark.parametrize(("setting", "expected"), [("auto", 1), ("2", 2)])
def test_training_threads_do_not_follow_the_load(setting: str, expected: int) -> None:
    """A trained model depends on the thread count, so auto (which follows the load) trains on one thread."""
    done = subprocess.run([sys.executable, "-c", TRAINING, setting], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["inside"] == result["during"] == expected and result["after"] == 2


def test_glibc_variables_win_over_the_tuned_thresholds() -> None:
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}
    done = subprocess.run([sys.executable, "-c", TRAINING, "auto"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["allocator"] == "set by MALLOC_TRIM_THRESHOLD_"


def test_small_cnn_pooling_equals_max_pool2d() -> None:
    """The small CNN's pooling takes strided maxima where no gradient flows (torch's NCHW kernel is slow):
    the same values as nn.MaxPool2d, NaN included, and nn.MaxPool2d itself when a gradient is needed."""
    import torch

    from bench.models.small_cnn import MaxPool2x2

    fast, reference = MaxPool2x2(), torch.nn.MaxPool2d(2)
    for shape in [(3, 4, 8, 8), (2, 3, 7, 9), (1, 1, 2, 2)]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        x[0, 0, 0, 0] = float("nan")
        torch.testing.assert_close(fast(x), reference(x), rtol=0, atol=0, equal_nan=True)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    fast(x).sum().backward()
    grad, x.grad = x.grad, None
    reference(x).sum().backward()
    torch.testing.assert_close(grad, x.grad, rtol=0, atol=0)
