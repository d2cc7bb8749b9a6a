"""The X desktop source under a flood of drawing: ``yes`` in an xterm.

X reports every glyph xterm draws as a damage rectangle; python-xlib parses events slower
than X can send them, so a capture that reads raw rectangles one by one never gets to its next
grab.  These tests show the screen still reaches the source while the flood goes on, that it
ends exact, and that the source stops promptly.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import numpy as np
import pytest

from spiceserver.sources.desktop import DesktopSource
from tests.interop.clients import Xvfb, _kill, have_tools, x_env
from tests.interop.test_desktop import settled_screen

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not have_tools("Xvfb", "xterm", "xsetroot", "import"),
        reason="Xvfb, xterm, xsetroot or ImageMagick missing",
    ),
]

TIMEOUT = 20.0


def test_a_flood_of_drawing_does_not_starve_the_capture() -> None:
    with Xvfb(1024, 768) as display:
        env = x_env(display)
        subprocess.run(["xsetroot", "-solid", "#203040"], env=env, check=True, timeout=10)
        flood = subprocess.Popen(
            ["xterm", "-geometry", "80x24+0+0", "-e", "yes", "a flood of glyphs"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

        async def scenario() -> None:
            source = DesktopSource(display)
            await source.start()
            try:
                # Let the flood build up in the X server's queue for us, then change the root
                # far from the xterm: the source must show it while the flood goes on.
                await asyncio.sleep(1.0)
                colour = np.array([0x60, 0x50, 0x40], dtype=np.uint8)  # B, G, R of #405060
                await asyncio.to_thread(
                    subprocess.run, ["xsetroot", "-solid", "#405060"], env=env, check=True
                )
                deadline = time.monotonic() + TIMEOUT
                while not np.array_equal(source.frame[700, 1000, :3], colour):
                    assert time.monotonic() < deadline, "the root change never reached the source"
                    await asyncio.sleep(0.05)
                assert flood.poll() is None, "the flood ended early"
                _kill(flood)
                deadline = time.monotonic() + TIMEOUT
                while True:
                    expected = await asyncio.to_thread(settled_screen, display)
                    if np.array_equal(source.frame[..., :3], expected):
                        break
                    assert time.monotonic() < deadline, "the frame never equalled the X screen"
                    await asyncio.sleep(0.05)
            finally:
                started = time.monotonic()
                await source.stop()
                assert time.monotonic() - started < 5.0, "the capture thread was slow to stop"

        try:
            asyncio.run(asyncio.wait_for(scenario(), 3 * TIMEOUT))
        finally:
            _kill(flood)
