"""spice-html5 with sound on: it links the playback channel it is offered and still shows the
screen.  It plays Opus only, at 48 kHz stereo (spice-html5:src/playback.js), which is what a
client advertising PLAYBACK_CAP_OPUS gets here."""

from __future__ import annotations

import pytest

from spiceserver import NumpySource
from spiceserver.protocol.enums import AudioDataMode
from spiceserver.server.channels.playback import PlaybackHandler
from spiceserver.server.transports.web import DEBIAN_SPICE_HTML5
from spiceserver.sinks.audio import NumpyRecordSink
from spiceserver.sources.image import load_image
from spiceserver.testing import RunningServer
from tests.conftest import CORPUS, data_file
from tests.interop.html5_client import Html5Client, have_html5, html5_url

pytestmark = pytest.mark.interop

PASSWORD = "html5-audio"


def test_spice_html5_shows_the_screen_with_a_playback_channel() -> None:
    assert have_html5(), "chromium, spice-html5 or tests/interop/html5/node_modules missing"
    corpus = load_image(data_file(CORPUS / "testpattern_bars_1024x768.png"))
    with (
        RunningServer(
            NumpySource(frame=corpus),
            password=PASSWORD,
            audio="tone",
            web_root=str(DEBIAN_SPICE_HTML5),
        ) as st,
        Html5Client() as browser,
    ):
        browser.open(html5_url(f"http://127.0.0.1:{st.port}/", "127.0.0.1", st.port, PASSWORD))
        browser.wait_for_canvas(corpus, timeout=30)
        link = st.wait_for_event("link", channel="playback", result="ok")
        assert link["channel"] == "playback"
        handlers = [c.handler for c in st.server.context.connections]  # type: ignore[union-attr]
        (playback,) = [h for h in handlers if isinstance(h, PlaybackHandler)]
        # Chromium's MediaSource takes webm/opus, so spice-html5 advertised CAP_OPUS.
        assert playback.mode == AudioDataMode.OPUS
        st.call(lambda: None)  # the loop is alive and serving
        assert not browser.errors, browser.errors


def test_spice_html5_links_an_offered_record_channel_generically_and_keeps_its_screen() -> None:
    """spice-html5 has no record support: it links the offered record channel as a bare
    SpiceConn (spice-html5:main.js ``extra_channels``) and only logs our START as unknown."""
    assert have_html5(), "chromium, spice-html5 or tests/interop/html5/node_modules missing"
    corpus = load_image(data_file(CORPUS / "testpattern_bars_1024x768.png"))
    with (
        RunningServer(
            NumpySource(frame=corpus),
            password=PASSWORD,
            audio="tone",
            microphone=NumpyRecordSink(),
            web_root=str(DEBIAN_SPICE_HTML5),
        ) as st,
        Html5Client() as browser,
    ):
        browser.open(html5_url(f"http://127.0.0.1:{st.port}/", "127.0.0.1", st.port, PASSWORD))
        browser.wait_for_canvas(corpus, timeout=30)
        st.wait_for_event("link", channel="record", result="ok")
        st.wait_for_event("record_start", channel="record")
        st.call(lambda: None)  # the loop is alive and serving
        assert not any(e["event"] == "disconnect" for e in st.events)
        assert not browser.errors, browser.errors
