"""JPEG images and their lossless refresh in spice-html5 (Chromium), issue 16 item 2.

spice-html5 decodes SPICE_IMAGE_TYPE_JPEG through an ``Image`` element
(``spice-html5:src/display.js``): the canvas first holds a close copy of a photographic frame
(PSNR >= 30 dB), and the exact pixels after the lossless refresh.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from spiceserver import NumpySource
from spiceserver.server.transports.web import DEBIAN_SPICE_HTML5
from spiceserver.sources.image import load_image
from spiceserver.testing import RunningServer
from tests.conftest import CORPUS, data_file
from tests.interop.html5_client import Html5Client, have_html5, html5_url

pytestmark = pytest.mark.interop

PASSWORD = "html5-jpeg"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a[..., :3].astype(np.float64) - b[..., :3]) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_spice_html5_shows_jpeg_then_the_exact_frame() -> None:
    assert have_html5(), "chromium, spice-html5 or tests/interop/html5/node_modules missing"
    photo = load_image(data_file(CORPUS / "photo_dune_1920x1080.png"))[500:860, 0:640].copy()
    source = NumpySource(frame=photo)
    with (
        RunningServer(
            source,
            password=PASSWORD,
            web_root=str(DEBIAN_SPICE_HTML5),
            jpeg_wan_compression="always",
            lossless_refresh=3.0,  # long enough to read the lossy canvas first
        ) as st,
        Html5Client() as browser,
    ):
        browser.open(html5_url(f"http://127.0.0.1:{st.port}/", "127.0.0.1", st.port, PASSWORD))
        deadline = time.monotonic() + 30
        quality = 0.0
        while quality < 30:  # spice-html5 reports no "drawn" event: poll, bounded
            assert time.monotonic() < deadline, f"no close canvas (PSNR {quality:.1f} dB)"
            try:
                canvas = browser.canvas_bgrx()
            except Exception:  # no canvas yet
                canvas = None
            if canvas is not None and canvas.shape == photo.shape:
                quality = psnr(canvas, photo)
            if quality < 30:
                time.sleep(0.1)
        assert quality < float("inf"), "the first canvas was already exact: no JPEG seen"
        server = st.server
        assert server is not None
        (session,) = server.sessions()
        assert session.metrics.bytes_by_codec["jpeg"] > 0
        browser.wait_for_canvas(photo, timeout=30)
        assert session.metrics.lossless_refreshes >= 1
        # spice-html5's JPEG onload handler ends by reading ``sc.streams[id]``, which is
        # undefined until a stream was ever created: a TypeError after the image is drawn
        # (spice-html5:src/display.js handle_draw_jpeg_onload), harmless and its own bug.
        errors = [e for e in browser.errors if "handle_draw_jpeg_onload" not in str(e)]
        assert not errors, errors
