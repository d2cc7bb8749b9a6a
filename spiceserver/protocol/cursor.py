"""The cursor channel (type 4), sans I/O.

spice-gtk ignores SET/MOVE until it has an INIT, and a second INIT until a RESET (pitfall 35),
so INIT goes first, right after SET_ACK, as spice-server's ``red_marshall_cursor_init`` does.

Shapes are cached on the client by their ``unique`` the way spice-server's ``cursor_fill`` does
it: the first SET of a shape carries CACHE_ME and its pixels, later ones FROM_CACHE and only the
header (an I-beam/arrow switch costs ~30 bytes instead of kilobytes).  The cache is bounded
here, as the client's is not: the shape evicted is dropped on the client with INVAL_ONE first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

from spiceserver.protocol import messages as m
from spiceserver.protocol.channel import ChannelProtocol, Handler
from spiceserver.protocol.enums import ChannelType, CursorFlags

__all__ = ["CLIENT_CURSOR_CACHE_SIZE", "CursorChannel"]

#: Shapes a client is asked to keep (spice-server keeps 256; ours are ≤ 256×256 ARGB, so this
#: bounds a client's cursor memory at 16 MiB).
CLIENT_CURSOR_CACHE_SIZE = 64


class CursorChannel(ChannelProtocol):
    channel_type = ChannelType.CURSOR

    def start(self, now: float, shape: m.CursorShape | None, x: int = 0, y: int = 0) -> None:
        self.start_acks(now)
        self.send(m.CursorInit(x=x, y=y, visible=int(shape is not None), shape=shape))

    _cached: OrderedDict[int, m.CursorShape] | None = None

    def set_shape(self, shape: m.CursorShape | None, x: int = 0, y: int = 0) -> None:
        """A new cursor image (None hides it: SET with flags NONE), from the client's cache
        when it already holds this very shape under its ``unique`` (0: never cached)."""
        cache = 0
        if shape is not None and shape.unique:
            if self._cached is None:
                self._cached = OrderedDict()
            cached = self._cached
            known = cached.get(shape.unique)
            if known is shape or known == shape:
                cached.move_to_end(shape.unique)
                cache = CursorFlags.FROM_CACHE
            else:
                if known is not None:  # a new image under an old unique: replace it
                    self.send(m.CursorInvalOne(unique=shape.unique))
                    del cached[shape.unique]
                elif len(cached) >= CLIENT_CURSOR_CACHE_SIZE:
                    self.send(m.CursorInvalOne(unique=cached.popitem(last=False)[0]))
                cached[shape.unique] = shape
                cache = CursorFlags.CACHE_ME
        self.send(m.CursorSet(x=x, y=y, visible=int(shape is not None), shape=shape, cache=cache))

    def move(self, x: int, y: int) -> None:
        self.send(m.CursorMove(x=x, y=y))

    def hide(self) -> None:
        self.send(m.CursorHide())

    _handlers: ClassVar[dict[type[m.Message], Handler]] = {}
