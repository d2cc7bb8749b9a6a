"""Video streams in spice-html5 (Chromium), issue 16 item 3.

The clip of ``test_streams_gtk`` plays at 30 fps; spice-html5 (Debian 0.3.0) gets it as an
MJPEG stream (each frame an ``Image`` drawn onto its canvas: ``spice-html5:src/display.js``),
its canvas shows a close copy of one of the clip's last frames once it stops (PSNR >= 30 dB,
not exact), and the exact pixels after the stream ended and its area was repainted.  As a
VP8 stream (which spice-html5 advertises and plays through MediaSource in a ``<video>``
element over the canvas, ``src/webm.js``) it is sent, and the canvas ends exact; the video
element's pixels are not read here.
"""

from __future__ import annotations

import pytest

from spiceserver.server.transports.web import DEBIAN_SPICE_HTML5
from spiceserver.testing import RunningServer
from tests.interop.html5_client import Html5Client, have_html5, html5_url
from tests.interop.test_streams_gtk import (
    best_lossy_psnr,
    clip_frames,
    flat_desktop,
    metrics,
    play,
)

pytestmark = pytest.mark.interop

PASSWORD = "html5-streams"


@pytest.mark.parametrize("codec", ["mjpeg", "vp8"])
def test_spice_html5_plays_a_stream_then_the_area_settles_exact(codec: str) -> None:
    assert have_html5(), "chromium, spice-html5 or tests/interop/html5/node_modules missing"
    desktop, source = flat_desktop()
    frames = clip_frames(75)

    with (
        RunningServer(
            source,
            password=PASSWORD,
            web_root=str(DEBIAN_SPICE_HTML5),
            streaming_video="filter",
            video_codecs=(codec,),
        ) as st,
        Html5Client() as browser,
    ):
        browser.open(html5_url(f"http://127.0.0.1:{st.port}/", "127.0.0.1", st.port, PASSWORD))
        browser.wait_for_canvas(desktop, timeout=30)
        st.run(play(source, frames), timeout=30)
        streams, stream_frames, sizes = metrics(st)  # type: ignore[arg-type]
        assert streams == 1 and stream_frames >= 30, (streams, stream_frames, sizes)
        assert sizes.get(f"stream-{codec}", 0) > 0, sizes
        if codec == "mjpeg":  # VP8 plays in a <video> element over the canvas (MediaSource)
            # The stream ends 1 s after the clip.
            best = best_lossy_psnr(browser.canvas_bgrx, frames[-4:], seconds=0.8)
            assert best >= 30, best
        browser.wait_for_canvas(source.frame.copy(), timeout=30)
        errors = [e for e in browser.errors if "handle_draw_jpeg_onload" not in str(e)]
        assert not errors, errors
