"""Images shared by the LZ and GLZ tests: corpus frames, structured and random strategies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from encoders._jit import JIT_ENABLED
from encoders.bench import load_frame as _load_bgrx
from tests.conftest import CORPUS, data_file

#: Bytes of the reference C encoders on the corpus (from the brief): LZ, GLZ fresh.
C_SIZES = {
    "terminal_manpage_1920x1080": (156_570, 133_001),
    "desktop_xapps_1280x800": (72_355, 76_191),
    "web_pydoc_tutorial_1920x1080": (209_192, 162_830),
    "photo_dune_1920x1080": (4_664_485, 4_667_135),
}

#: C's LZ and GLZ bytes (``../shared/refcodec``) for ``encoders.bench_bytes.grain_frame(300,
#: 400, 6, 1)``: near noise, where the few repeats decide.  Before one-pixel copies our LZ was
#: 1 byte above C here.
C_GRAIN = (363_777, 363_783)

needs_jit = pytest.mark.skipif(not JIT_ENABLED, reason="large image: JIT disabled")


def load_frame(name: str) -> np.ndarray:
    """A corpus PNG as (H, W, 4) B,G,R,X with X = 0 (see the corpus README); fails if missing."""
    return _load_bgrx(data_file(CORPUS / f"{name}.png"))


def rgb(img: np.ndarray) -> np.ndarray:
    """The B,G,R planes (X is not coded by RGB32)."""
    return np.ascontiguousarray(img[..., :3])


def text_like(height: int, width: int, seed: int) -> np.ndarray:
    """A synthetic 'terminal': a few glyph tiles on a flat background, repeated irregularly."""
    rng = np.random.default_rng(seed)
    glyphs = rng.integers(0, 4, size=(6, 9, 6)) * 60
    img = np.zeros((height, width, 4), dtype=np.uint8)
    img[..., 0] = 30
    img[..., 1] = 30
    img[..., 2] = 30
    for y in range(0, height - 8, 9):
        for x in range(0, width - 5, 6):
            if rng.random() < 0.7:
                g = glyphs[rng.integers(0, 6)]
                img[y : y + 9, x : x + 6, :3] = g[..., None]
    img[..., 3] = rng.integers(0, 256, size=(height, width))  # junk X must not matter
    return img


@st.composite
def images(draw: st.DrawFn, max_width: int = 48, max_height: int = 24) -> np.ndarray:
    """Random (H, W, 4) images: noise, few-colour palettes, runs, repeated rows, junk X."""
    height = draw(st.integers(1, max_height))
    width = draw(st.integers(1, max_width))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["noise", "palette2", "palette5", "rows", "runs"]))
    rng = np.random.default_rng(seed)
    shape = (height, width)
    if kind == "noise":
        img = rng.integers(0, 256, size=(*shape, 4), dtype=np.uint8)
    elif kind in ("palette2", "palette5"):
        palette = rng.integers(0, 256, size=(2 if kind == "palette2" else 5, 4), dtype=np.uint8)
        img = palette[rng.integers(0, len(palette), size=shape)]
    elif kind == "rows":
        row = rng.integers(0, 4, size=(width, 4), dtype=np.uint8) * 80
        img = np.repeat(row[None], height, axis=0)
        flips = rng.random(shape) < 0.05
        img[flips] = 255
    else:
        values = rng.integers(0, 3, size=height * width // 7 + 1, dtype=np.uint8) * 100
        flat = np.repeat(values, 7)[: height * width]
        img = np.stack([flat, flat, flat, flat], axis=-1).reshape(*shape, 4)
    img = np.array(img, dtype=np.uint8)
    img[..., 3] = rng.integers(0, 256, size=shape, dtype=np.uint8)
    return img
