"""On a CUDA device: runtime from CUDA events, out-of-memory back-off on a real out-of-memory error, autocast.

Run with ``pytest -m cuda`` (``benchmarks/gpu.sh`` does); the CUDA tests are skipped without a device, and
the autocast test also runs on the CPU (bf16).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.explainers.cam import GradCAM
from bench.guards import timed, with_backoff
from bench.models.base import prepare
from bench.models.cifar_resnet import CifarResNet
from bench.store import read_results
from bench.types import ModelSpec
from tests.conftest import tiny_suite, write_suite

NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


@pytest.mark.cuda
@NO_CUDA
def test_runtime_is_the_kernel_time_from_cuda_events() -> None:
    """Kernels run asynchronously: a host clock around the launch would see microseconds."""

    def work() -> torch.Tensor:
        torch.cuda._sleep(100_000_000)  # a kernel that spins for 1e8 GPU cycles (tens of milliseconds)
        return torch.zeros(1, device=CUDA)

    work()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    work()
    end.record()
    torch.cuda.synchronize()
    reference = start.elapsed_time(end) / 1000
    _, seconds = timed(work, CUDA)
    assert reference > 0.005
    assert seconds == pytest.approx(reference, rel=0.5)


@pytest.fixture
def memory_cap():
    """Cap this process's CUDA memory to ``allocated + nbytes`` for the test (a real OutOfMemoryError above)."""
    total = torch.cuda.get_device_properties(CUDA).total_memory

    def cap(nbytes: int) -> None:
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_allocated() + nbytes) / total))

    yield cap
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


@pytest.mark.cuda
@NO_CUDA
def test_out_of_memory_halves_the_batch_with_the_same_maps(memory_cap) -> None:
    """Grad-CAM of 32 images at 224 px under a memory cap that 8 images fit: the batch is halved until it
    fits, and the maps equal those of batches of 8."""
    torch.manual_seed(0)
    model = prepare(CifarResNet(20), ModelSpec(num_classes=10, target_layer="net.layer3", input_size=(224, 224)), CUDA)
    x = torch.rand(32, 3, 224, 224, device=CUDA)
    target = torch.arange(32, device=CUDA) % 10
    explainer = GradCAM()
    reference = torch.cat([explainer.explain(model, x[i : i + 8], target[i : i + 8]) for i in range(0, 32, 8)])
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    explainer.explain(model, x[:8], target[:8])
    eight = torch.cuda.max_memory_allocated() - base
    calls: list[int] = []

    def explain(positions: list[int]) -> torch.Tensor:
        calls.append(len(positions))
        return explainer.explain(model, x[positions], target[positions])

    memory_cap(int(1.5 * eight))  # 8 images fit, 16 do not
    maps = with_backoff(explain, 32, torch.cat)
    assert calls == [32, 16, 8, 8, 16, 8, 8]  # real out-of-memory errors at 32 and 16, then halves of 8
    torch.testing.assert_close(maps, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("device", "precision"),
    [pytest.param("cuda", "bf16", marks=[pytest.mark.cuda, NO_CUDA]),
     pytest.param("cuda", "fp16", marks=[pytest.mark.cuda, NO_CUDA]), ("cpu", "bf16")],
)  # fmt: skip
def test_autocast_precision_runs_every_metric_and_stays_close(tmp_path: Path, device: str, precision: str) -> None:
    """The tiny suite at fp32 and under autocast: every row ok, runtimes measured, scores close. (On the CPU
    too: insertion's blur baseline came out in bf16 there and failed every insertion row.)"""
    means = {}
    for prec in ("fp32", precision):
        suite = tiny_suite(device=device, precision=prec, output=str(tmp_path / prec))
        suite["metrics"][1]["params"]["baseline"] = "blur"  # insertion's blur baseline under autocast
        assert main(["run", str(write_suite(tmp_path, suite, f"{prec}.yaml")), "--no-progress"]) == 0
        df = read_results(tmp_path / prec)
        assert (df[df["metric"] != "runtime.peak_memory_mb"]["status"] == "ok").all()
        assert (df[df["metric"] == "runtime"]["value"] > 0).all()
        if device == "cuda":
            assert (df[df["metric"] == "runtime.peak_memory_mb"]["value"] > 0).all()  # measured on the device
        means[prec] = df[df["metric"].isin(["deletion", "insertion", "iou"])].groupby(["explainer", "metric"]).value
        means[prec] = means[prec].mean()
    assert (means["fp32"] - means[precision]).abs().max() < 0.05
