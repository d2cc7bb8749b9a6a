"""``spiceserver serve --vv-file``: remote-viewer opens the file and shows the screen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.interop.clients import RemoteViewer, Xvfb
from tests.interop.test_remote_viewer_tshark import ARTIFACTS, find_frame

pytestmark = pytest.mark.interop


def test_remote_viewer_opens_the_connection_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    rgb[:100] = (30, 120, 200)
    Image.fromarray(rgb).save(tmp_path / "screen.png")
    vv = tmp_path / "spice.vv"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spiceserver",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--source",
            f"image:{tmp_path / 'screen.png'}",
            "--vv-file",
            str(vv),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:  # bounded: the server prints this line or exits
            if "connection file written" in line:
                break
        assert vv.stat().st_mode & 0o777 == 0o600
        text = vv.read_text()
        assert "password=" in text and "port=0\n" not in text
        assert "spice://" not in line and "password" not in line  # not on a command line
        expected = np.dstack([rgb[..., ::-1], np.zeros((300, 400), np.uint8)])  # as BGRX
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with (
            Xvfb(width=1024, height=768) as display,
            RemoteViewer(display, "", 0, vv_file=vv) as viewer,
        ):
            viewer.wait_for_screen(lambda shot: find_frame(shot, expected) is not None, timeout=60)
            viewer.screenshot(ARTIFACTS / "remote-viewer-vv-file.png")
    finally:
        server.terminate()
        server.wait(timeout=20)
