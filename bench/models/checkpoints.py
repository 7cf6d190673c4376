"""Loading state dicts safely (``weights_only=True``) with errors that name the file and keys."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import DataError

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")


def read_state_dict(path: str | Path, *, field: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor dict stored in ``path``: a bare state dict, or one nested under a usual key
    (``state_dict``, ``model``...), with DataParallel's ``module.`` prefixes removed.

    Loads with ``weights_only=True``: a file that would need to run code to load is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"checkpoint {str(path)!r} does not exist", field=field, fix="give the path of a state dict file"
        )
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(
            f"cannot load checkpoint {path}: {str(exc).splitlines()[0]}",
            field=field,
            fix="give a state dict saved with torch.save(model.state_dict(), path); files that need arbitrary "
            "code to unpickle are refused (weights_only=True)",
        ) from exc
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            raise DataError(
                f"checkpoint {path} holds a dict without tensors under any of {', '.join(STATE_DICT_KEYS)}",
                field=field,
                fix="save the model's state_dict()",
            )
        obj = nested
    if not isinstance(obj, Mapping):
        raise DataError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict", field=field)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def load_into(net: nn.Module, state: Mapping[str, torch.Tensor], source: str, *, field: str = "checkpoint") -> None:
    """``net.load_state_dict(state, strict=True)`` with an error naming the source and the keys."""
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_few(shapes)}")
        raise DataError(
            f"state dict from {source} does not fit the model: " + "; ".join(parts),
            field=field,
            fix="check that the checkpoint was saved from this architecture (and num_classes)",
        )
    net.load_state_dict(state, strict=False)  # num_batches_tracked may be absent in old checkpoints


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
