"""spice-html5 (Debian 0.3.0) in Chromium against the built-in agent: a file dropped on the
page lands byte-exact (its FILE_XFER, tokens honoured, pieces of 2042 bytes), and the browser
window's size reaches the server as a monitors config (real client)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from spiceserver import PatternSource
from spiceserver.server.transports.web import DEBIAN_SPICE_HTML5
from spiceserver.testing import RunningServer
from tests.interop.clients import HarnessError
from tests.interop.html5_client import Html5Client, have_html5, html5_url

pytestmark = pytest.mark.interop

PASSWORD = "html5-agent"


def test_dropped_file_lands_and_window_size_is_a_monitors_config(tmp_path: Path) -> None:
    assert have_html5(), "chromium, spice-html5 or tests/interop/html5/node_modules missing"
    downloads = tmp_path / "downloads"
    data = os.urandom(300_000)  # five 64 KiB chunks: ~150 AGENT_DATA, many token returns
    with (
        RunningServer(
            PatternSource(320, 240),
            password=PASSWORD,
            web_root=str(DEBIAN_SPICE_HTML5),
            file_transfer_dir=str(downloads),
        ) as st,
        Html5Client() as browser,
    ):
        browser.open(html5_url(f"http://127.0.0.1:{st.port}/", "127.0.0.1", st.port, PASSWORD))
        browser.wait_canvas(timeout=30)
        monitors = st.run(
            st.recorder.wait_for(lambda e: e.get("event") == "monitors_config", timeout=20)
        )
        assert monitors["heads"] and monitors["heads"][0][2] > 0  # the window's width
        deadline = time.monotonic() + 20
        while True:  # the page connects its agent a moment after the canvas appears
            try:
                browser.drop_file("notes ../x.txt", data, "text/plain")
                break
            except HarnessError:
                assert time.monotonic() < deadline, "the page's agent never connected"
                time.sleep(0.1)
        done = st.run(st.recorder.wait_for(lambda e: e.get("event") == "file_transfer", timeout=30))
        assert done["result"] == "success", done
    assert [p.name for p in downloads.iterdir()] == ["x.txt"]
    assert (downloads / "x.txt").read_bytes() == data
