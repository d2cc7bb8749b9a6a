"""The cursor channel (type 4), sans I/O.

spice-gtk ignores SET/MOVE until it has an INIT, and a second INIT until a RESET (pitfall 35),
so INIT goes first, right after SET_ACK, as spice-server's ``red_marshall_cursor_init`` does.
"""

from __future__ import annotations

from typing import ClassVar

from spiceserver.protocol import messages as m
from spiceserver.protocol.channel import ChannelProtocol, Handler
from spiceserver.protocol.enums import ChannelType

__all__ = ["CursorChannel"]


class CursorChannel(ChannelProtocol):
    channel_type = ChannelType.CURSOR

    def start(self, now: float, shape: m.CursorShape | None, x: int = 0, y: int = 0) -> None:
        self.start_acks(now)
        self.send(m.CursorInit(x=x, y=y, visible=int(shape is not None), shape=shape))

    def set_shape(self, shape: m.CursorShape | None, x: int = 0, y: int = 0) -> None:
        """A new cursor image (None hides it: SET with flags NONE)."""
        self.send(m.CursorSet(x=x, y=y, visible=int(shape is not None), shape=shape))

    def move(self, x: int, y: int) -> None:
        self.send(m.CursorMove(x=x, y=y))

    def hide(self) -> None:
        self.send(m.CursorHide())

    _handlers: ClassVar[dict[type[m.Message], Handler]] = {}
