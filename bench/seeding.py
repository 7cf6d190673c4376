"""Stable seeds: the same numbers on every machine, Python version and process.

Python's ``hash()`` is salted per process, so everything here goes through
SHA-256. Random draws are made per *sample* (seeded from the suite seed and the
sample id), so results do not depend on batch size, batch order, or which other
cells a suite contains.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a draw is made: hashing ids (leaderboards, compare) needs none
    import torch

_MASK63 = (1 << 63) - 1


def stable_hash(*parts: Any) -> int:
    """A 63-bit integer from the JSON form of ``parts`` (deterministic everywhere)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") & _MASK63


def short_digest(obj: Any, length: int = 10) -> str:
    """A hex digest of the JSON form of ``obj``: for file names and cache keys."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def sample_seeds(suite_seed: int, ids: Sequence[str]) -> list[int]:
    """One seed per sample id: every stochastic draw about a sample starts from it."""
    return [stable_hash("sample", suite_seed, sample_id) for sample_id in ids]


def generator(seed: int, salt: str = "", device: torch.device | str = "cpu") -> torch.Generator:
    """A torch Generator seeded from ``seed`` and a component-specific ``salt``."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(stable_hash(seed, salt) if salt else seed)
    return g


def per_sample_rand(
    seeds: Sequence[int], shape: Sequence[int], salt: str, device: torch.device | str = "cpu", normal: bool = False
) -> torch.Tensor:
    """(N, *shape) uniform [0,1) (or standard normal) noise, sample i drawn from its own seed.

    Drawn on the CPU so that the numbers are identical on every device, then moved.
    """
    import torch

    draw = torch.randn if normal else torch.rand
    rows = [draw(*shape, generator=generator(s, salt)) for s in seeds]
    out = torch.stack(rows) if rows else torch.empty(0, *shape)
    return out.to(device)
