"""Measuring what an explanation costs: model passes (counted, not estimated) and peak memory."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from torch import nn


class PassCounter:
    """Counts the images that go through ``module``'s forward and backward while active.

    A forward hook adds the batch size of every forward call; when the output
    takes part in autograd, a hook on it adds the batch size again when the
    gradient flows back through it. Explainers that expand a batch (Integrated
    Gradients' steps, RISE's masks) are therefore counted in images.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.forward_images = 0
        self.backward_images = 0
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _on_forward(self, _module: nn.Module, _inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        if not isinstance(output, torch.Tensor):
            return
        self.forward_images += output.shape[0]
        if output.requires_grad:
            output.register_hook(self._on_backward)  # type: ignore[no-untyped-call]  # torch leaves it unannotated

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backward_images += grad.shape[0]

    def __enter__(self) -> PassCounter:
        self._handle = self.module.register_forward_hook(self._on_forward)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class PeakMemory:
    """Peak device memory (MiB) allocated while active; NaN on devices without the statistic."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = float("nan")
        self._base = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
