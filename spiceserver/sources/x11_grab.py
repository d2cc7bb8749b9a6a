"""Grabbing X pixels with mss: XShmGetImage, without mss's per-grab wrapping for small boxes.

A small change (a typed glyph) is one XShmGetImage round trip on the path from X damage to
the client.  :meth:`mss.MSS.grab` wraps that request in a lock, a monitor dictionary, a
``bytearray`` copy of the shared segment and a ``ScreenShot`` object: about 60 µs of a
cold CPU on each small grab (``bench_desktop --trace-hops``: 0.38 ms against 0.32 ms for the
bare request and one copy, 150 ms apart, as the latency probe's changes come).  Once mss has
shown the shared segment working, :class:`Grabber` sends that request itself, through mss's
own XCB connection and segment, and copies the box out with numpy; anything else (no
MIT-SHM, a box larger than the segment, an mss whose internals moved) takes ``mss.grab``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from spiceserver.errors import SpiceError
from spiceserver.sources.base import Rect

__all__ = ["Grabber", "ScreenShrank"]

logger = logging.getLogger("spiceserver.desktop")


class ScreenShrank(SpiceError):
    """A grab box is off the screen: it changed size before its events were read."""


class Grabber:
    """Pixels of boxes of an X display's root window, B,G,R,X (one thread at a time)."""

    def __init__(self, display_name: str) -> None:
        import mss

        self.sct: Any = mss.MSS(display=display_name)
        #: The direct request's parts (mss internals), None until the segment has worked.
        self._shm: tuple[Any, ...] | None = None
        self._shm_tried = False

    @property
    def performance_status(self) -> list[str]:
        return list(getattr(self.sct, "performance_status", []))

    def grab(self, box: Rect) -> np.ndarray:
        """The pixels under ``box``, an array of its own (H, W, 4).  Raises mss's
        ScreenShotError for a box outside the screen."""
        shm = self._shm
        if shm is None and not self._shm_tried and self._shm_works():
            shm = self._shm = self._direct()
        if shm is not None:
            request, conn, drawable, planes, zpixmap, segment, buffer, size = shm
            count = box.area * 4
            if count <= size:
                request(conn, drawable, box.x, box.y, box.width, box.height, planes, zpixmap,
                        segment, 0)  # fmt: skip
                pixels = np.frombuffer(buffer, np.uint8, count)
                return pixels.reshape(box.height, box.width, 4).copy()
        shot = self.sct.grab(
            {"left": box.x, "top": box.y, "width": box.width, "height": box.height}
        )
        return np.frombuffer(shot.raw, dtype=np.uint8).reshape(box.height, box.width, 4)

    def _shm_works(self) -> bool:
        return "MIT-SHM is working correctly." in self.performance_status

    def _direct(self) -> tuple[Any, ...] | None:
        """mss's XShmGetImage request, connection and segment (mss >= 10.2 internals), or
        None (then every grab goes through ``mss.grab``)."""
        self._shm_tried = True
        try:
            from mss.linux import xcb
            from mss.linux.base import ALL_PLANES

            impl = self.sct._impl
            parts = (
                xcb.shm_get_image,
                impl.conn,
                impl.drawable,
                ALL_PLANES,
                xcb.ImageFormat.ZPixmap,
                impl._shmseg,
                impl._buf,
                int(impl._bufsize),
            )
        except (ImportError, AttributeError) as exc:
            logger.debug("mss internals not as expected (%s): small grabs through mss.grab", exc)
            return None
        if any(part is None for part in parts):
            return None
        return parts

    def close(self) -> None:
        self._shm = None
        self.sct.close()
