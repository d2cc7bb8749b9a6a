"""Helpers shared by the QUIC tests: golden vectors, frame loading, no-JIT skipping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders._jit import JIT_ENABLED

GOLDEN = Path("/work/shared/golden/quic")
CORPUS = Path("/work/shared/corpus")
#: Vectors small enough for the pure-Python (NUMBA_DISABLE_JIT=1) run.
SMALL_VECTORS = ("tiny_1x1", "noise_7x3", "gradient_64x64", "wide_2100x3", "runs_300x120")


def golden_names() -> list[str]:
    """Every golden vector name (empty when the shared folder is absent)."""
    return sorted(p.stem for p in GOLDEN.glob("*.quic"))


def load_frame(name: str) -> np.ndarray:
    """The vector's input frame: its PNG as RGB turned into B,G,R,X with X = 0."""
    from PIL import Image

    path = GOLDEN / f"{name}.png"
    if not path.exists():
        path = CORPUS / f"{name}.png"
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    frame = np.zeros((*rgb.shape[:2], 4), dtype=np.uint8)
    frame[..., 0] = rgb[..., 2]
    frame[..., 1] = rgb[..., 1]
    frame[..., 2] = rgb[..., 0]
    return frame


def skip_if_slow(name: str) -> None:
    """Pure Python encodes ~50k pixels/s: keep the no-JIT run to the small vectors."""
    if not JIT_ENABLED and name not in SMALL_VECTORS:
        pytest.skip("large vector: JIT disabled")
