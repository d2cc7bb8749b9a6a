"""A source whose frame is a numpy array owned by the embedding program."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from spiceserver.sources.base import (
    FramebufferSource,
    Head,
    Rect,
    _check_frame,
    bounding_size,
    same_geometry,
)

__all__ = ["LayoutRequest", "NumpySource"]

#: ``on_layout_request(heads)``: a client asks for this monitor layout; True (or an awaitable
#: of True) if the program took it.
LayoutRequest = Callable[[tuple[Head, ...]], "bool | Awaitable[bool]"]


class NumpySource(FramebufferSource):
    """The program writes into :attr:`frame` and calls :meth:`damage` with what changed.

    ``frame`` is ``uint8`` ``(height, width, 4)`` in B, G, R, X order.  Use
    :meth:`replace_frame` to change the size.  Screen updates read the array when a client can
    take them, so a program that writes faster than clients read simply has its intermediate
    states skipped (latest wins).

    Several monitors: ``heads`` declares them (rectangles of the frame; clients open a window
    per head), :meth:`set_layout` changes them.  When a client asks for a layout (its window
    sizes, through the agent; the server debounces and drops repeats), ``on_layout_request``
    is called with the heads (top-left at 0, 0): return False to decline (the default without
    a callback), True to accept.  On True the source takes the layout — a black frame of the
    heads' bounding box — unless the callback already called :meth:`set_layout` (with a
    frame it drew, so clients never see the black one).  When the last client that changed
    the layout leaves, the callback is asked for the original layout again.

    Example::

        source = NumpySource(640, 480)
        source.frame[10:20, 10:20] = (0, 0, 255, 0)   # a red square (B, G, R, X)
        source.damage([Rect(10, 10, 10, 10)])
    """

    kind = "numpy"

    def __init__(
        self,
        width: int = 1024,
        height: int = 768,
        frame: np.ndarray | None = None,
        *,
        heads: Sequence[Head] | None = None,
        on_layout_request: LayoutRequest | None = None,
    ):
        if frame is not None:
            _check_frame(frame)
            super().__init__(frame.shape[1], frame.shape[0])
            self.frame = frame
        else:
            super().__init__(width, height)
        self.on_layout_request = on_layout_request
        self._heads: tuple[Head, ...] | None = None
        if heads is not None:
            self._heads = _fitting(tuple(heads), *self.size)
        self._original = self.heads()

    def heads(self) -> tuple[Head, ...]:
        """The declared heads while they fit the frame; else one head covering it."""
        width, height = self.size
        if self._heads is not None and all(
            h.x + h.width <= width and h.y + h.height <= height for h in self._heads
        ):
            return self._heads
        return super().heads()

    def set_layout(self, heads: Sequence[Head], frame: np.ndarray | None = None) -> None:
        """New heads, with ``frame`` (or a black frame of their bounding box) as the picture.
        Call on the event loop thread (e.g. from ``on_layout_request``)."""
        layout = tuple(heads)
        if frame is None:
            if not layout:
                raise ValueError("a layout needs at least one head")
            width, height = bounding_size(layout)
            frame = np.zeros((height, width, 4), dtype=np.uint8)
        _check_frame(frame)
        self._heads = _fitting(layout, frame.shape[1], frame.shape[0])
        self.replace_frame(frame)
        self.set_heads(self.heads())

    async def apply_layout(self, heads: tuple[Head, ...]) -> bool:
        callback = self.on_layout_request
        if callback is None:
            return False
        before = self.heads()
        answer = callback(heads)
        if inspect.isawaitable(answer):
            answer = await answer
        if not answer:
            return False
        if self.heads() == before and not same_geometry(before, heads):
            self.set_layout(heads)  # accepted, but the program left the frame to us
        return True

    async def restore_layout(self) -> None:
        if not same_geometry(self.heads(), self._original):
            await self.apply_layout(self._original)

    def update(self, frame: np.ndarray, rect: Rect | None = None) -> None:
        """Copy ``frame`` (a full frame, or the pixels of ``rect``) in and report the damage."""
        if rect is None:
            if frame.shape != self.frame.shape:
                self.replace_frame(np.array(frame, dtype=np.uint8, copy=True))
                return
            self.frame[...] = frame
            self.damage()
        else:
            self.frame[rect.y : rect.bottom, rect.x : rect.right] = frame
            self.damage([rect])


def _fitting(heads: tuple[Head, ...], width: int, height: int) -> tuple[Head, ...]:
    if not heads:
        raise ValueError("a layout needs at least one head")
    for h in heads:
        if h.width <= 0 or h.height <= 0 or h.x < 0 or h.y < 0:
            raise ValueError(f"bad head {h}: sizes must be positive, positions not negative")
        if h.x + h.width > width or h.y + h.height > height:
            raise ValueError(f"head {h} does not fit the {width}x{height} frame")
    return heads
