"""The cursor channel's server side: the source's cursor shape and position, latest-wins."""

from __future__ import annotations

from typing import Any

from spiceserver.protocol.cursor import CursorChannel
from spiceserver.protocol.messages import CursorShape
from spiceserver.server.channels.base import ChannelHandler
from spiceserver.sources.base import Head, Rect

__all__ = ["CursorHandler"]


class CursorHandler(ChannelHandler[CursorChannel]):
    """Cursor shape and position, latest-wins: a client that is not reading gets only the
    newest shape and position once it reads again, never a backlog."""

    protocol = CursorChannel
    _NOTHING: Any = object()

    def start(self, now: float) -> None:
        self._pending_shape: Any = self._NOTHING
        self._pending_move: tuple[int, int] | None = None
        self.channel.start(now, self.context.source.cursor)
        self.context.source.add_listener(self)

    # Source listener: called on the loop thread.
    def on_cursor(self, shape: CursorShape | None) -> None:
        self._pending_shape = shape
        self._pending_move = None  # the new shape comes with the current position
        self._send_pending()

    def on_cursor_move(self, x: int, y: int) -> None:
        self._pending_move = (x, y)
        self._send_pending()

    def on_damage(self, rects: list[Rect]) -> None: ...

    def on_resize(self, width: int, height: int) -> None: ...

    def on_scroll(self, rect: Rect, dy: int, damage: list[Rect]) -> None: ...

    def on_heads(self, heads: tuple[Head, ...]) -> None: ...

    def on_events(self, events: list[Any], now: float) -> None:
        super().on_events(events, now)
        self._send_pending()  # an ACK may have reopened the window

    def on_writable(self) -> None:
        self._send_pending()

    def _send_pending(self) -> None:
        if not self.connection.writable:
            return
        if self._pending_shape is not self._NOTHING:
            shape, self._pending_shape = self._pending_shape, self._NOTHING
            if shape is None:
                self.channel.hide()
            else:
                self.channel.set_shape(shape)
        if self._pending_move is not None:
            self.channel.move(*self._pending_move)
            self._pending_move = None
        self.connection.flush()

    def closed(self) -> None:
        self.context.source.remove_listener(self)
