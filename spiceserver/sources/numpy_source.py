"""A source whose frame is a numpy array owned by the embedding program."""

from __future__ import annotations

import numpy as np

from spiceserver.sources.base import FramebufferSource, Rect, _check_frame

__all__ = ["NumpySource"]


class NumpySource(FramebufferSource):
    """The program writes into :attr:`frame` and calls :meth:`damage` with what changed.

    ``frame`` is ``uint8`` ``(height, width, 4)`` in B, G, R, X order.  Use
    :meth:`replace_frame` to change the size.  Screen updates read the array when a client can
    take them, so a program that writes faster than clients read simply has its intermediate
    states skipped (latest wins).

    Example::

        source = NumpySource(640, 480)
        source.frame[10:20, 10:20] = (0, 0, 255, 0)   # a red square (B, G, R, X)
        source.damage([Rect(10, 10, 10, 10)])
    """

    kind = "numpy"

    def __init__(self, width: int = 1024, height: int = 768, frame: np.ndarray | None = None):
        if frame is not None:
            _check_frame(frame)
            super().__init__(frame.shape[1], frame.shape[0])
            self.frame = frame
        else:
            super().__init__(width, height)

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
