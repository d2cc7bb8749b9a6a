"""Image generators for the QUIC property tests: noise, few-colour (run-heavy) and smooth frames."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

KINDS = ("noise", "palette", "smooth", "flat_alpha")


def make_image(kind: str, height: int, width: int, seed: int, colors: int = 3) -> np.ndarray:
    """A (height, width, 4) uint8 B,G,R,A frame of the given kind, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    if kind == "palette":
        # Few colours in horizontal streaks: runs start and stop everywhere, incl. at i <= 2.
        palette = rng.integers(0, 256, (colors, 4), dtype=np.uint8)
        idx = rng.integers(0, colors, (height, width))
        keep = rng.random((height, width)) < 0.7
        for x in range(1, width):
            idx[:, x] = np.where(keep[:, x], idx[:, x - 1], idx[:, x])
        rows_same = rng.random(height) < 0.3
        for y in range(1, height):
            if rows_same[y]:
                idx[y] = idx[y - 1]
        return palette[idx]
    if kind == "smooth":
        y, x = np.mgrid[0:height, 0:width]
        base = rng.integers(0, 256, 4)
        img = base + x[..., None] * rng.integers(-3, 4, 4) + y[..., None] * rng.integers(-3, 4, 4)
        img = img + rng.integers(-2, 3, (height, width, 4))
        return (img & 0xFF).astype(np.uint8)
    # flat_alpha: noisy colour, alpha mostly constant with a few edges (alpha-plane runs).
    img = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    img[..., 3] = 255
    img[rng.random((height, width)) < 0.05, 3] = 0
    return img


@st.composite
def images(draw: st.DrawFn, max_width: int = 48, max_height: int = 8) -> np.ndarray:
    """Hypothesis strategy over small frames of every kind."""
    kind = draw(st.sampled_from(KINDS))
    height = draw(st.integers(1, max_height))
    width = draw(st.integers(1, max_width))
    seed = draw(st.integers(0, 2**32 - 1))
    colors = draw(st.integers(1, 4))
    return make_image(kind, height, width, seed, colors)
