"""DamageNotify read straight off the X socket (spiceserver/sources/x11_events.py), on Xvfb:
the rectangles X reports, and python-xlib still whole for everything else."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from spiceserver.sources.base import Rect
from spiceserver.sources.x11_capture import X_READ_BYTES, open_display
from spiceserver.sources.x11_events import DirectDamage, use_lean_damage_events
from tests.interop.clients import Xvfb


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    with Xvfb(320, 240) as name:
        yield name


def _damaged_connection(name: str) -> tuple[Any, DirectDamage]:
    from Xlib.ext import damage

    conn = open_display(name)
    conn.damage_query_version()
    conn.screen().root.damage_create(damage.DamageReportRawRectangles)
    event_type = conn.extension_event.DamageNotify
    assert use_lean_damage_events(conn, event_type)
    direct = DirectDamage.create(conn, event_type, X_READ_BYTES)
    assert direct is not None
    conn.sync()
    while conn.pending_events():  # the root's damage so far, read by python-xlib
        conn.next_event()
    return conn, direct


def _read_until(direct: DirectDamage, count: int, timeout: float = 10.0) -> list[Rect]:
    """Direct reads until ``count`` rectangles came (the drawing reaches us asynchronously)."""
    rects: list[Rect] = []
    deadline = time.monotonic() + timeout
    while len(rects) < count and time.monotonic() < deadline:
        _, xlib, drained = direct.read(rects.append)
        assert not xlib, "only damage was sent"
        if drained and len(rects) < count:
            time.sleep(0.01)
    return rects


def test_damage_comes_straight_off_the_socket(display: str) -> None:
    conn, direct = _damaged_connection(display)
    painter = open_display(display)
    try:
        win = painter.screen().root.create_window(
            0, 0, 320, 240, 0, painter.screen().root_depth, override_redirect=True
        )
        win.map()
        painter.sync()
        time.sleep(0.2)  # its exposure (if any) is read and dropped
        while direct.read(lambda rect: None)[0]:
            pass
        gc = win.create_gc(foreground=painter.screen().white_pixel)
        boxes = [Rect(10, 20, 30, 5), Rect(100, 50, 7, 9), Rect(200, 200, 40, 20)]
        for box in boxes:
            win.fill_rectangle(gc, box.x, box.y, box.width, box.height)
        painter.sync()
        assert _read_until(direct, 3) == boxes
        assert direct.read(lambda rect: None) == (0, False, True)  # nothing more: drained
        # python-xlib was never involved, and still works: a round trip, no stray events
        assert conn.screen().root.query_pointer() is not None
        assert conn.pending_events() == 0
    finally:
        painter.close()
        conn.close()


def test_what_is_not_damage_goes_to_python_xlib(display: str) -> None:
    from Xlib import X

    conn, direct = _damaged_connection(display)
    painter = open_display(display)
    try:
        root = conn.screen().root
        win = painter.screen().root.create_window(
            0, 0, 50, 50, 0, painter.screen().root_depth, override_redirect=True
        )
        painter.sync()
        root.change_attributes(event_mask=X.SubstructureNotifyMask)
        conn.sync()
        win.map()  # MapNotify on our connection, then the window's damage
        win.configure(x=5)  # ConfigureNotify
        painter.sync()
        rects: list[Rect] = []
        deadline = time.monotonic() + 10
        xlib = False
        while not xlib and time.monotonic() < deadline:
            _, xlib, drained = direct.read(rects.append)
            if drained:
                time.sleep(0.01)
        assert xlib, "a MapNotify must be handed over"
        # python-xlib's parser has the rest (or waits for it on its next read)
        names: list[str] = []
        deadline = time.monotonic() + 10
        while "ConfigureNotify" not in names and time.monotonic() < deadline:
            while conn.pending_events():
                event = conn.next_event()
                names.append(type(event).__name__)
                if hasattr(event, "area"):
                    rects.append(Rect(event.area.x, event.area.y, 0, 0))
        assert "MapNotify" in names and "ConfigureNotify" in names
        # while python-xlib holds queued events, the direct reader leaves the socket alone
        win.configure(x=9)
        painter.sync()
        conn.sync()  # the ConfigureNotify is now queued by python-xlib
        assert conn.display.event_queue and direct.queued()
        assert direct.read(rects.append) == (0, True, False)
        while conn.display.event_queue:  # (the move's damage is queued too)
            conn.next_event()
        assert not direct.queued()
    finally:
        painter.close()
        conn.close()


def test_a_closed_x_connection_is_python_xlibs_error() -> None:
    from Xlib import error as xerror

    ours, theirs = socket.socketpair()
    closed: list[str] = []
    protocol = SimpleNamespace(
        socket=ours, data_recv=b"", recv_packet_len=0, event_queue=[], sent_requests=[],
        recv_active=0, send_active=0, parse_response=None,
        close_internal=closed.append, socket_error=xerror.ConnectionClosedError("server"),
    )  # fmt: skip
    direct = DirectDamage.create(SimpleNamespace(display=protocol), 91, 4096)  # type: ignore[arg-type]
    assert direct is not None
    assert direct.read(lambda rect: None) == (0, False, True)  # nothing yet
    theirs.close()
    with pytest.raises(xerror.ConnectionClosedError):
        direct.read(lambda rect: None)
    assert closed == ["server"]
    ours.close()
    # a connection without python-xlib's internals is read by python-xlib alone
    assert DirectDamage.create(SimpleNamespace(), 91, 4096) is None  # type: ignore[arg-type]
