"""Every image codec, decoded by spice-gtk, pixel for pixel (corpus frames and synthetic ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spiceserver import ImageCompression, NumpySource, Rect
from spiceserver.sources.image import load_image
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread

pytestmark = pytest.mark.interop

PASSWORD = "codecs"
MODES = ["off", "lz", "glz", "quic", "auto-glz", "auto-lz"]
NAMES = {
    "off": ImageCompression.OFF, "lz": ImageCompression.LZ, "glz": ImageCompression.GLZ,
    "quic": ImageCompression.QUIC, "auto-glz": ImageCompression.AUTO_GLZ,
    "auto-lz": ImageCompression.AUTO_LZ,
}  # fmt: skip
CORPUS_FRAMES = [
    "terminal_manpage_1920x1080.png",
    "desktop_xapps_1280x800.png",
    "web_pydoc_tutorial_1920x1080.png",
    "photo_dune_1920x1080.png",
    "testpattern_bars_1024x768.png",
]


def noise(width: int, height: int, seed: int) -> np.ndarray:
    frame = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    frame[..., 3] = 0
    return frame


@pytest.mark.parametrize("mode", MODES)
def test_codec_round_trips_through_spice_gtk(mode: str, corpus: Path) -> None:
    source = NumpySource(frame=noise(97, 61, 1))
    with (
        ServerThread(source, password=PASSWORD, image_compression=NAMES[mode]) as st,
        GtkClient(st.uri, PASSWORD) as client,
    ):
        client.wait_for_frame(source.frame, timeout=30)
        for name in CORPUS_FRAMES:
            frame = load_image(corpus / name)
            st.call(lambda frame=frame: source.update(frame))
            client.wait_for_frame(frame, timeout=60)
        # Partial updates: tiny (raw), thin, and a scrolled copy (GLZ refers back to it).
        current = source.frame.copy()
        updates = [
            (Rect(5, 5, 2, 3), noise(2, 3, 2)),
            (Rect(0, 100, 1000, 1), noise(1000, 1, 3)),
            (Rect(100, 200, 640, 400), current[300:700, 100:740].copy()),
        ]
        for rect, patch in updates:
            st.call(lambda rect=rect, patch=patch: source.update(patch, rect))
            current[rect.y : rect.bottom, rect.x : rect.right] = patch
            client.wait_for_frame(current, timeout=60)
        server = st.server
        assert server is not None
        codecs = {
            codec for session in server.sessions() for codec in session.metrics.bytes_by_codec
        }
        # QUIC needs 3x3 pixels: the 1-row update goes out as LZ.
        expected = {"off": {"raw"}, "lz": {"lz", "raw"}, "glz": {"glz", "raw"},
                    "quic": {"quic", "lz", "raw"}}.get(mode)  # fmt: skip
        if expected is not None:
            assert codecs == expected
        elif mode == "auto-glz":
            assert {"glz", "quic"} <= codecs
