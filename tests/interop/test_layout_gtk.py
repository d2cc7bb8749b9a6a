"""Several monitors and layouts with real clients: spice-gtk's display channel reports the
source's heads, follows a new layout with a pixel-exact new surface, and remote-viewer opens
one window per head.

The agent (which turns a client's MONITORS_CONFIG into ``context.layout.request``) is not
part of this: the layouts are driven from the server side, as the agent would drive them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from spiceserver import Head, PatternSource
from tests.interop.clients import GtkClient, RemoteViewer, Xvfb, have_spice_gtk, have_tools
from tests.interop.serverthread import ServerThread
from tests.interop.test_remote_viewer_tshark import ARTIFACTS, find_frame

pytestmark = pytest.mark.interop

PASSWORD = "layout-pw"
TWO_HEADS = (Head(0, 0, 640, 480), Head(640, 0, 400, 300))


def as_monitors(heads: tuple[Head, ...]) -> list[dict[str, int]]:
    """What spice-gtk's ``monitors`` property should hold for ``heads`` on surface 0."""
    return [
        {"id": i, "surface_id": 0, "x": h.x, "y": h.y, "width": h.width, "height": h.height}
        for i, h in enumerate(heads)
    ]


def monitors_are(heads: tuple[Head, ...]) -> Any:
    return lambda event: event["monitors"] == as_monitors(heads)


@pytest.mark.skipif(not have_spice_gtk(), reason="spice-gtk introspection missing")
def test_spice_gtk_sees_two_heads_and_follows_a_new_layout_pixel_exact() -> None:
    source = PatternSource(heads=TWO_HEADS, fps=0)
    with ServerThread(source, password=PASSWORD) as st, GtkClient(st.uri, PASSWORD) as client:
        event = client.wait_for("monitors", monitors_are(TWO_HEADS), timeout=30)
        assert event["max"] == 16
        client.wait_for_frame(source.frame, timeout=20)

        # The same frame cut into other heads: a new MONITORS_CONFIG, no new surface.
        since = client.event_index
        whole = (Head(0, 0, 1040, 480),)
        assert st.run(source.apply_layout(whole))
        client.wait_for("monitors", monitors_are(whole), timeout=20)
        assert not [e for e in client.events[since:] if e["event"] == "primary-create"]

        # Driven from the server, as a layout applied to the source directly ...
        stacked = (Head(0, 0, 800, 600), Head(0, 600, 1024, 200))
        assert st.run(source.apply_layout(stacked))
        create = client.wait_for("primary-create", timeout=20)
        assert (create["width"], create["height"]) == (1024, 800)
        client.wait_for("monitors", monitors_are(stacked), timeout=20)
        frame = client.wait_for_frame(st.call(lambda: source.frame.copy()), timeout=20)
        assert np.array_equal(frame[600:, :1024, :3], source.render(0)[600:, :, :3])

        # ... and as a client's request through the layout controller (what the agent calls).
        server = st.server
        assert server is not None

        def request(heads: tuple[Head, ...]) -> None:
            (session,) = server.context.sessions.sessions.values()
            server.context.layout.request(session, heads)

        wanted = (Head(0, 0, 1280, 720),)
        st.call(lambda: request(wanted))
        create = client.wait_for("primary-create", timeout=20)
        assert (create["width"], create["height"]) == (1280, 720)
        client.wait_for("monitors", monitors_are(wanted), timeout=20)
        client.wait_for_frame(source.render(0), timeout=20)
        # The client asking for what it now has changes nothing: no new surface.
        applied = server.context.layout.applied
        since = client.event_index
        st.call(lambda: request(wanted))
        client.ping()
        st.run(server.context.layout.idle())
        assert server.context.layout.applied == applied
        assert not [e for e in client.events[since:] if e["event"] == "primary-create"]


@pytest.mark.skipif(
    not have_tools("Xvfb", "remote-viewer", "xdotool", "import"),
    reason="xvfb, virt-viewer, xdotool or imagemagick missing",
)
def test_remote_viewer_opens_a_window_per_head() -> None:
    # Two sizes, so the two pictures differ: each window must show its own head.
    source = PatternSource(heads=(Head(0, 0, 640, 480), Head(640, 0, 560, 400)), fps=0)
    title = "layout-heads"
    with ServerThread(source, password=PASSWORD) as st, Xvfb(width=1600, height=1200) as display:
        with RemoteViewer(display, "127.0.0.1", st.port, PASSWORD, title=title) as viewer:
            windows: list[str] = []

            def two_windows() -> bool:
                nonlocal windows
                found = viewer.xdotool("search", "--onlyvisible", "--name", title).split()
                windows = found
                return len(found) == 2

            _wait(two_windows, timeout=60, what=lambda: viewer.output())
            by_name = {viewer.xdotool("getwindowname", w).strip(): w for w in windows}
            assert sorted(by_name) == [f"{title} (1)", f"{title} (2)"], by_name
            # Side by side (no window manager places them), each shows its head, unscaled.
            viewer.xdotool("windowmove", by_name[f"{title} (1)"], "0", "0")
            viewer.xdotool("windowmove", by_name[f"{title} (2)"], "800", "0")
            frame = source.render(0)
            left, right = frame[:, :640], frame[:400, 640:]
            shot = viewer.wait_for_screen(
                lambda rgb: _found(rgb[:, :800], left) and _found(rgb[:, 800:], right),
                timeout=60,
            )
            viewer.screenshot(ARTIFACTS / "remote-viewer-two-heads.png")
            assert shot.shape[1] == 1600


def _found(screen_rgb: np.ndarray, frame_bgrx: np.ndarray) -> bool:
    return find_frame(np.ascontiguousarray(screen_rgb), frame_bgrx) is not None


def _wait(check: Any, timeout: float, what: Any) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s:\n{what()}")
        time.sleep(0.2)
