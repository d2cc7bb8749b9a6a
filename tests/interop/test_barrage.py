"""A server judged from outside: a barrage of hostile clients, then spice-gtk, pixel-exact."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from spiceserver.sources.image import load_image
from tests.barrage import HalfOpen, answered, good_link, run_cases
from tests.conftest import run
from tests.interop.clients import GtkClient
from tests.interop.serverprocess import ServerProcess

pytestmark = pytest.mark.interop

PASSWORD = "barrage-pw"


def test_server_survives_the_barrage(corpus: Path) -> None:
    image = corpus / "desktop_xapps_1280x800.png"
    # The half-open links must outlive the cases however slow a loaded machine runs them:
    # the handshake timeout (10 s by default) is not what this test is about.
    args = ["--source", f"image:{image}", "--handshake-timeout", "300"]
    with ServerProcess(args, PASSWORD) as server:
        rss_before = server.rss_mib()

        async def barrage() -> tuple[dict[str, str], int]:
            idle = await HalfOpen.open(server.port, 300)
            results = await run_cases(server.port, PASSWORD)
            await good_link(server.port, PASSWORD)  # served while 300 are half-open
            held = await idle.still_open()
            await idle.close()
            await asyncio.sleep(0)
            return results, held

        results, held = run(barrage(), timeout=300)
        assert server.alive()
        assert held == 300
        problems = {name: what for name, what in results.items() if not answered(what)}
        assert not problems, problems
        with GtkClient(server.uri, PASSWORD) as client:
            client.wait_for_frame(load_image(image), timeout=60)
        growth = server.rss_mib() - rss_before
        assert growth < 100, f"RSS grew by {growth:.0f} MiB"
    log = server.output()
    assert "Traceback" not in log
    assert PASSWORD not in log
