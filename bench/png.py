"""PNG bytes made small: charts and screenshots as 256-colour palette images."""

from __future__ import annotations

import io


def paletted(png: bytes) -> bytes:
    """``png`` re-encoded with an adaptive 256-colour palette (no dithering).

    Charts and screenshots of text are flat colours and anti-aliased edges: they look the same at about a
    third of the bytes of an RGB(A) PNG, which keeps a report of a few models (its images are embedded in
    the HTML) under 2 MB.
    """
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="png", optimize=True)
    return out.getvalue()
