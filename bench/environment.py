"""What a run records about the machine and software it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

PACKAGES = (
    "xbench",
    "torch",
    "torchvision",
    "captum",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "quantus",
    "grad-cam",
    "zennit",
)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_revision(start: Path | None = None) -> str | None:
    """The commit of the xbench source tree (with '+dirty' when modified), if it is a git checkout."""
    folder = start or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def resolve_device(setting: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a clear error."""
    from bench.errors import ConfigError

    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device is cuda but no CUDA device is available", field="device", fix="set device: auto or device: cpu"
        )
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def describe_device(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    info["cpu"] = platform.processor() or platform.machine()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        info["name"] = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return info


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_revision": git_revision(),
        "device": describe_device(device),
        "cuda_version": torch.version.cuda,
    }
