"""remote-viewer on a virtual X screen, and Wireshark's SPICE dissector on a whole session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from spiceserver import PatternSource
from tests.interop.clients import GtkClient, RemoteViewer, TsharkCapture, Xvfb, have_tools
from tests.interop.serverthread import ServerThread

pytestmark = pytest.mark.interop

PASSWORD = "viewer-pw"
ARTIFACTS = Path(os.environ.get("SPICESERVER_ARTIFACTS", "/tmp/spiceserver-artifacts"))


def find_frame(screen_rgb: np.ndarray, frame_bgrx: np.ndarray) -> tuple[int, int] | None:
    """Top-left of an exact, unscaled copy of ``frame`` on the screen, if there is one."""
    frame = frame_bgrx[..., 2::-1]  # B,G,R,X -> R,G,B
    h, w = frame.shape[:2]
    sh, sw = screen_rgb.shape[:2]
    if sh < h or sw < w:
        return None
    # Candidates: where the frame's first pixels of row 0 and of its middle row match.
    probes = [(0, 0), (0, w - 1), (h // 2, w // 2), (h - 1, 0), (h - 1, w - 1)]
    mask = np.ones((sh - h + 1, sw - w + 1), dtype=bool)
    for py, px in probes:
        mask &= (screen_rgb[py : py + sh - h + 1, px : px + sw - w + 1] == frame[py, px]).all(2)
    for y, x in zip(*np.nonzero(mask), strict=True):
        if np.array_equal(screen_rgb[y : y + h, x : x + w], frame):
            return int(x), int(y)
    return None


@pytest.mark.skipif(
    not have_tools("Xvfb", "remote-viewer", "xdotool", "import"),
    reason="xvfb, virt-viewer, xdotool or imagemagick missing",
)
def test_remote_viewer_shows_the_pattern() -> None:
    source = PatternSource(800, 600)
    source.pause()
    expected = source.render(0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with ServerThread(source, password=PASSWORD) as st, Xvfb(width=1280, height=1024) as display:
        with RemoteViewer(display, "127.0.0.1", st.port, PASSWORD) as viewer:
            viewer.wait_for_screen(lambda shot: find_frame(shot, expected) is not None, timeout=60)
            viewer.screenshot(ARTIFACTS / "remote-viewer-pattern.png")


@pytest.mark.skipif(not have_tools("dumpcap", "tshark"), reason="tshark missing")
def test_wireshark_parses_every_message_of_a_session() -> None:
    source = PatternSource(640, 480)
    with ServerThread(source, password=PASSWORD) as st:
        with TsharkCapture(st.port) as capture:
            with GtkClient(st.uri, PASSWORD) as client:
                client.wait_channel_open("inputs")
                client.wait_for("mark", timeout=20)
                for _ in range(10):
                    client.wait_for("invalidate", timeout=10)
                client.key_press_and_release(0x1E)
                client.position(10, 10)
                client.ping()
        text, problems = capture.dissect()
    assert problems == 0, text[-5000:]
    for name in (
        "Server INIT (103)",
        "Server SURFACE_CREATE (314)",
        "Server DRAW_COPY (304)",
        "Server MARK (102)",
        "Server INIT (101)",
        "Client MOUSE_POSITION (112)",
        "Client PONG (3)",
    ):
        assert name in text, name
    assert "Previous segment not captured" not in text  # the capture itself was complete
