"""Grabbing X pixels with mss: XShmGetImage, without mss's per-grab wrapping for small boxes.

A small change (a typed glyph) is one XShmGetImage round trip on the path from X damage to
the client.  :meth:`mss.MSS.grab` wraps that request in a lock, a monitor dictionary, a
``bytearray`` copy of the shared segment and a ``ScreenShot`` object: about 60 µs of a
cold CPU on each small grab (``bench_desktop --trace-hops``: 0.38 ms against 0.32 ms for the
bare request and one copy, 150 ms apart, as the latency probe's changes come).  Once mss has
shown the shared segment working, :class:`Grabber` sends that request itself, on mss's own
XCB connection and segment, and copies the box out with numpy; anything else (no MIT-SHM, a
box larger than the segment, an mss whose internals moved) takes ``mss.grab``.

The request goes through libxcb-shm's two calls with plain ctypes prototypes of our own
(:class:`_ShmRequest`), not mss's wrappers of them: those build a typed cookie, a pointer
object and a ``weakref.finalize`` per reply, ~70 µs of a cold CPU per grab (a 40x20 box
after 150 ms idle with the caches evicted: 265-290 µs through mss's request and
np.frombuffer, 205-220 µs here).
"""

from __future__ import annotations

import ctypes
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
        #: The direct request (on mss internals), None until the segment has worked.
        self._shm: _ShmRequest | None = None
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
            count = box.area * 4
            if count <= shm.size and shm.get(box.x, box.y, box.width, box.height):
                return shm.view[:count].reshape(box.height, box.width, 4).copy()
            # too big for the segment, or X refused (a box off a shrunk screen): mss says why
        shot = self.sct.grab(
            {"left": box.x, "top": box.y, "width": box.width, "height": box.height}
        )
        return np.frombuffer(shot.raw, dtype=np.uint8).reshape(box.height, box.width, 4)

    def _shm_works(self) -> bool:
        return "MIT-SHM is working correctly." in self.performance_status

    def _direct(self) -> _ShmRequest | None:
        """XShmGetImage on mss's connection and segment (mss >= 10.2 internals), or None
        (then every grab goes through ``mss.grab``)."""
        self._shm_tried = True
        try:
            from mss.linux.base import ALL_PLANES
            from mss.linux.xcb import ImageFormat
            from mss.linux.xcbhelpers import LIB

            impl = self.sct._impl
            return _ShmRequest(
                LIB.shm._name,
                ctypes.addressof(impl.conn),
                int(impl.drawable.value),
                int(ALL_PLANES),
                int(ImageFormat.ZPixmap),
                int(impl._shmseg.value),
                np.frombuffer(impl._buf, dtype=np.uint8),
                int(impl._bufsize),
            )
        except (ImportError, AttributeError, OSError, TypeError, ValueError) as exc:
            logger.debug("mss internals not as expected (%s): small grabs through mss.grab", exc)
            return None

    def close(self) -> None:
        self._shm = None
        self.sct.close()


class _Cookie(ctypes.Structure):
    """``xcb_shm_get_image_cookie_t`` (xcb/shm.h): the request's sequence number."""

    _fields_ = (("sequence", ctypes.c_uint),)


class _ShmRequest:
    """XShmGetImage of a box into mss's segment: ``xcb_shm_get_image`` then its reply."""

    def __init__(
        self,
        library: str,
        connection: int,
        drawable: int,
        planes: int,
        image_format: int,
        segment: int,
        view: np.ndarray,
        size: int,
    ) -> None:
        from ctypes import c_int16, c_uint8, c_uint16, c_uint32, c_void_p

        # Function objects of our own (a second handle on the library mss loaded), so mss's
        # prototypes of the same functions stay as mss set them.
        shm = ctypes.CDLL(library)
        request = shm.xcb_shm_get_image
        request.argtypes = (
            c_void_p, c_uint32, c_int16, c_int16, c_uint16, c_uint16,
            c_uint32, c_uint8, c_uint32, c_uint32,
        )  # fmt: skip
        request.restype = _Cookie
        reply = shm.xcb_shm_get_image_reply
        reply.argtypes = (c_void_p, _Cookie, c_void_p)
        reply.restype = c_void_p
        free = ctypes.CDLL(None).free
        free.argtypes = (c_void_p,)
        free.restype = None
        self._request, self._reply, self._free = request, reply, free
        self._args = (connection, drawable, planes, image_format, segment)
        # The reply's error, if any (one thread at a time uses a Grabber).
        self._error = c_void_p()
        self._error_ref = ctypes.byref(self._error)
        self.view = view
        self.size = size

    def get(self, x: int, y: int, width: int, height: int) -> bool:
        """Whether X copied the box into the segment (False: an X error, freed here)."""
        conn, drawable, planes, fmt, segment = self._args
        cookie = self._request(conn, drawable, x, y, width, height, planes, fmt, segment, 0)
        reply = self._reply(conn, cookie, self._error_ref)
        if reply:
            self._free(reply)
            return True
        if self._error:
            self._free(self._error)
            self._error.value = None
        return False
