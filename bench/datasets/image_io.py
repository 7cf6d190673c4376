"""Reading image files into Batches, shared by the file-based datasets (imagefolder, imagelist).

One place decides how a file becomes a tensor (RGB, float32 in [0, 1], CHW), how
it is resized, and what happens to a file that cannot be read: it is left out
of the Batch and reported in ``Batch.skipped``, so that one corrupt image among
thousands does not stop a benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.errors import DataError
from bench.types import Batch, ImageShape, SampleRef

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")

# What PIL raises for missing, truncated, corrupt or absurdly large files.
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class UnreadableImage(Exception):
    """A single image file could not be decoded; ``reason`` says why (for ``Batch.skipped``)."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read {path}: {reason}")


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has one of the image suffixes the datasets read."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path) -> torch.Tensor:
    """The image at ``path`` as a (3, H, W) float32 tensor in [0, 1]; UnreadableImage when it cannot be read."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except _READ_ERRORS as exc:
        raise UnreadableImage(path, str(exc) or type(exc).__name__) from exc
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def stored_shape(path: Path) -> ImageShape | None:
    """(3, H, W) of the image at ``path`` as ``read_image`` returns it, from its header (nothing is
    decoded); None when it cannot be read."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except _READ_ERRORS:
        return None
    return (3, height, width)


def first_image_shape(refs: Sequence[SampleRef], root: Path) -> ImageShape | None:
    """The stored shape of the first of ``refs`` (files under ``root``; the images of a dataset that does not
    resize must share it); None when there is no readable first sample."""
    return stored_shape(root / refs[0].id) if refs else None


def resize(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """``x`` ((C, H, W) or (N, C, H, W)) resized bilinearly to ``size`` (H, W); unchanged when it already fits.

    Antialiased, like PIL's bilinear resize, so that shrinking large photos does not alias.
    """
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    batched = x if x.dim() == 4 else x[None]
    out = F.interpolate(batched, size=tuple(size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    return out if x.dim() == 4 else out[0]


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a (1, h, w) uint8 mask, so its values stay 0, 1 and VOID.

    "nearest-exact" samples pixel centres, like the bilinear image resize
    (align_corners=False) and PIL; torch's "nearest" would shift the mask by up
    to a pixel against the image.
    """
    if tuple(mask.shape[-2:]) == size:
        return mask
    return F.interpolate(mask[None].float(), size=size, mode="nearest-exact")[0].to(torch.uint8)


def load_image_batch(
    refs: Sequence[SampleRef], paths: Sequence[Path], size: tuple[int, int] | None, where: Path | str
) -> Batch:
    """A Batch of the images at ``paths`` (one per ref), resized to ``size`` when given.

    Files that cannot be read are left out and reported in ``skipped`` as
    ``(id, "cannot read <path>: <reason>")``; ids and labels stay aligned with
    the images that were read. Readable images of different sizes (and no
    ``size``) are an error: they cannot be stacked, and silently resizing would
    hide the choice.
    """
    images: list[torch.Tensor] = []
    kept: list[SampleRef] = []
    skipped: list[tuple[str, str]] = []
    for ref, path in zip(refs, paths, strict=True):
        try:
            x = read_image(path)
        except UnreadableImage as exc:
            skipped.append((ref.id, str(exc)))
            continue
        images.append(resize(x, size))
        kept.append(ref)
    _check_same_size(images, kept, where)
    x = torch.stack(images) if images else torch.empty(0, 3, *(size or (1, 1)))
    labels = torch.tensor([r.label for r in kept], dtype=torch.long)
    return Batch(x=x, label=labels, ids=[r.id for r in kept], skipped=skipped)


def _check_same_size(images: Sequence[torch.Tensor], refs: Sequence[SampleRef], where: Path | str) -> None:
    """DataError naming two samples of different sizes when ``images`` cannot be stacked."""
    first: dict[tuple[int, ...], str] = {}
    for x, ref in zip(images, refs, strict=True):
        first.setdefault(tuple(x.shape), ref.id)
    if len(first) > 1:
        examples = ", ".join(f"{sid} is {shape[1]}x{shape[2]}" for shape, sid in list(first.items())[:3])
        raise DataError(
            f"images under {where} differ in size ({examples})",
            field="image_size",
            fix="set params.image_size (H, W) so that they are resized to one size",
        )


def mask_batch(
    kept: Sequence[tuple[SampleRef, torch.Tensor, torch.Tensor]],
    skipped: list[tuple[str, str]],
    size: tuple[int, int],
    keep_original_masks: bool,
) -> Batch:
    """A Batch of (ref, image already at ``size``, (1, h, w) mask at the image's own size) triples.

    Masks are resized by nearest neighbour to ``size``; with ``keep_original_masks``
    they are also kept at full resolution (metrics with ``resolution: original``).
    Shared by the datasets with masks of images that vary in size (voc2012, coco, segfolder).
    """
    if not kept:
        x, mask = torch.empty(0, 3, *size), torch.empty(0, 1, *size, dtype=torch.uint8)
    else:
        x = torch.stack([x for _, x, _ in kept])
        mask = torch.stack([resize_mask(m, size) for _, _, m in kept])
    return Batch(
        x=x,
        label=torch.tensor([ref.label for ref, _, _ in kept], dtype=torch.long),
        ids=[ref.id for ref, _, _ in kept],
        mask=mask,
        original_masks=[m for _, _, m in kept] if keep_original_masks else None,
        skipped=skipped,
    )
