"""Helpers shared by the QUIC tests: golden vectors, frame loading, no-JIT skipping."""

from __future__ import annotations

import numpy as np
import pytest

from encoders._jit import JIT_ENABLED
from encoders.bench import load_frame as _load_bgrx
from tests.conftest import CORPUS, QUIC_GOLDEN, data_file

GOLDEN = QUIC_GOLDEN
#: Vectors small enough for the pure-Python (NUMBA_DISABLE_JIT=1) run.
SMALL_VECTORS = ("tiny_1x1", "noise_7x3", "gradient_64x64", "wide_2100x3", "runs_300x120")
#: Every vector of ``tests/data/quic/README.md``: the synthetic ones (their PNG next to them) and
#: the corpus frames (their PNG in ``tests/data/corpus/``).
SYNTHETIC_VECTORS = (*SMALL_VECTORS, "stripes_2500x200", "noise_256x256")
CORPUS_VECTORS = (
    "desktop_xapps_1280x800",
    "photo_dune_1920x1080",
    "terminal_manpage_1920x1080",
    "testpattern_bars_1024x768",
    "web_pydoc_tutorial_1920x1080",
)


def golden_names() -> list[str]:
    """Every golden vector name (the listed ones: a vector missing from the folder fails)."""
    return sorted((*SYNTHETIC_VECTORS, *CORPUS_VECTORS))


def golden_bytes(name: str) -> bytes:
    """The C encoder's stream for ``name`` (fails when the file is missing)."""
    return data_file(GOLDEN / f"{name}.quic").read_bytes()


def load_frame(name: str) -> np.ndarray:
    """The vector's input frame: its PNG as RGB turned into B,G,R,X with X = 0."""
    folder = CORPUS if name in CORPUS_VECTORS else GOLDEN
    return _load_bgrx(data_file(folder / f"{name}.png"))


def skip_if_slow(name: str) -> None:
    """Pure Python encodes ~50k pixels/s: keep the no-JIT run to the small vectors."""
    if not JIT_ENABLED and name not in SMALL_VECTORS:
        pytest.skip("large vector: JIT disabled")
