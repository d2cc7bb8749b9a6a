"""spice-html5 in headless Chromium, straight to the server's own port (no websockify).

The page comes from the same port (``web_root``), its WebSockets too; the canvas read back with
``getImageData`` must equal the served image pixel for pixel; clicks and keys must reach the
session record.  The same port keeps serving spice-gtk, TLS serves ``https``/``wss``, and a
Unix socket serves spice-gtk (``spice+unix://``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spiceserver import NumpySource
from spiceserver.server.transports.web import DEBIAN_SPICE_HTML5
from spiceserver.sources.image import load_image
from spiceserver.testing import RunningServer
from tests.conftest import CORPUS, data_file
from tests.interop.clients import GtkClient
from tests.interop.html5_client import Html5Client, have_html5, html5_url
from tests.tlsutil import make_tls_files

pytestmark = pytest.mark.interop

PASSWORD = "html5-pw"


@pytest.fixture(autouse=True)
def _require_html5() -> None:
    # tests/run.sh installs chromium, spice-html5 and the driver's npm packages: a missing one
    # is a broken set-up, not a reason to skip.
    assert have_html5(), "chromium, spice-html5 or tests/interop/html5/node_modules missing"


def sample_frame(seed: int, width: int = 320, height: int = 200) -> np.ndarray:
    """Distinct colours with flat areas and noise: every codec path is exercised."""
    rng = np.random.default_rng(seed)
    frame = np.zeros((height, width, 4), np.uint8)
    frame[:, : width // 2, :3] = (40, 160, 220)
    frame[height // 2 :, :, :3] = rng.integers(0, 256, (height - height // 2, width, 3))
    frame[10:30, 10:200, :3] = (0, 0, 255)
    return frame


@pytest.mark.parametrize("mode", ["auto-glz", "auto-lz", "quic"])
def test_spice_html5_shows_the_frame_exactly_and_sends_input(mode: str) -> None:
    corpus = load_image(data_file(CORPUS / "testpattern_bars_1024x768.png"))
    source = NumpySource(frame=corpus)
    with (
        RunningServer(
            source, password=PASSWORD, image_compression=mode, web_root=str(DEBIAN_SPICE_HTML5)
        ) as st,
        Html5Client() as browser,
    ):
        base = f"http://127.0.0.1:{st.port}/"
        browser.open(html5_url(base, "127.0.0.1", st.port, PASSWORD))
        browser.wait_for_canvas(corpus, timeout=30)
        # A partial update, then the canvas again.
        patch = sample_frame(int(mode == "quic"))
        version = st.push(patch, (100, 150, patch.shape[1], patch.shape[0]))
        expected = corpus.copy()
        expected[150 : 150 + patch.shape[0], 100 : 100 + patch.shape[1]] = patch
        st.wait_client_frame(version)
        browser.wait_for_canvas(expected, timeout=30)
        # Input: a click at a known pixel and typed keys reach the session record.
        start = len(st.events)
        browser.wait_canvas(inputs=True)
        browser.click(123, 45)
        st.wait_for_event("button", start=start, button="left", pressed=True)
        position = st.wait_for_event("pointer_position", start=start, x=123, y=45)
        assert position["channel"] == "inputs"
        browser.type("Hi")
        st.wait_for_event("key", start=start, key="H", pressed=True)
        st.wait_for_event("key", start=start, key="I", pressed=False)
        links = [e for e in st.events if e.get("event") == "link" and e.get("result") == "ok"]
        assert {e["channel"] for e in links} >= {"main", "display", "inputs", "cursor"}
        assert not browser.errors, browser.errors


def test_pattern_animates_in_the_browser_and_spice_gtk_shares_the_port() -> None:
    with (
        # The pattern keeps its size: spice-html5 asks for its window's (test_agent_html5).
        RunningServer(
            "pattern:320x240", password=PASSWORD, web_root=str(DEBIAN_SPICE_HTML5), resize="off"
        ) as st,
        Html5Client() as browser,
    ):
        browser.open(html5_url(f"http://127.0.0.1:{st.port}/", "127.0.0.1", st.port, PASSWORD))
        browser.wait_canvas(timeout=30)
        first = browser.canvas()
        for _ in range(100):  # the pattern moves at 30 fps: the canvas changes
            if not np.array_equal(browser.canvas(), first):
                break
        else:
            pytest.fail("the pattern did not animate in spice-html5")
        with GtkClient(st.uri, PASSWORD) as client:  # raw SPICE on the same port
            client.wait_for("mark", timeout=30)  # the first full frame is drawn
            frame = client.dump_frame()
            assert frame.shape[:2] == (240, 320)


def test_wss_on_the_tls_port(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    frame = sample_frame(3)
    source = NumpySource(frame=frame)
    with (
        RunningServer(
            source,
            password=PASSWORD,
            tls_port=0,
            tls_cert=str(tls.cert),
            tls_key=str(tls.key),
            web_root=str(DEBIAN_SPICE_HTML5),
        ) as st,
        Html5Client(chromium_args=["--ignore-certificate-errors"]) as browser,
    ):
        assert st.server is not None
        port = st.server.tls_port
        assert port is not None
        # Loaded over https, spice-html5 opens wss:// to the same port.
        browser.open(html5_url(f"https://127.0.0.1:{port}/", "127.0.0.1", port, PASSWORD))
        browser.wait_for_canvas(frame, timeout=30)
        secure = st.call(
            lambda: [
                c.secure
                for c in st.server.context.connections  # type: ignore[union-attr]
                if c.channel is not None
            ]
        )
        assert secure and all(secure)


def test_spice_gtk_over_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "spice.sock"
    frame = sample_frame(4)
    source = NumpySource(frame=frame)
    with RunningServer(source, password=PASSWORD, unix_path=str(path)) as st:
        assert st.server is not None
        assert st.server.uri == f"spice+unix://{path}"
        with GtkClient(st.server.uri, PASSWORD) as client:
            client.wait_for_frame(frame, timeout=30)
        peers = {s.peer for s in st.call(st.server.sessions)}
        assert peers <= {"unix"}
    assert not path.exists()  # the socket file is removed at close
