"""The pure parts of the desktop input: what a handler does before it has an X connection.

The X side is covered by ``tests/interop/test_desktop.py`` against a real Xvfb.
"""

from __future__ import annotations

from spiceserver.desktop_input import X11Input, ignore_input
from spiceserver.protocol.events import KeyEvent


def test_view_only_and_unstarted_handlers_queue_nothing() -> None:
    handler = X11Input(":0", view_only=True)
    handler(KeyEvent(0x1E, True))
    assert handler._queue.empty()
    ignore_input(KeyEvent(0x1E, True))
