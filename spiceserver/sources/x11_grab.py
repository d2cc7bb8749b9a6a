"""Grabbing X pixels: XShmGetImage on a connection of our own, mss for anything else.

A small change (a typed glyph) is one XShmGetImage round trip on the path from X damage to
the client.  :meth:`mss.MSS.grab` wraps that request in a lock, a monitor dictionary, a
``bytearray`` copy of the shared segment and a ``ScreenShot`` object; going through
libxcb-shm with ctypes instead (the previous way here) still cost two foreign calls, their
argument conversion, a typed cookie, libxcb's locking and its ``poll()``.  On a CPU coming out
of an idle spell every one of those is paid again: a 64x32 box, 150 ms apart, took 245 µs
(p50) that way and 190 µs as written here (warm: 19 against 14 µs; interleaved, Xvfb, this
project's 2-vCPU machines).

So :class:`ShmConnection` speaks the two MIT-SHM requests itself (``xorgproto:shmproto.h``:
``ShmAttach``, ``ShmGetImage``) on a python-xlib connection that python-xlib opened
(authentication, byte order) and never uses again: one ``send`` of 32 bytes, one ``recv`` of
the 32-byte reply, and a copy out of a System V segment of its own, sized for the whole
screen.  A connection carries no events (none are selected), so the reply is all that comes.
mss stays for every case this does not cover: no MIT-SHM (another host, another IPC
namespace), a segment that cannot be made, and the error of a box off the screen (mss
raises ScreenShotError, which becomes ScreenShrank: the capture follows the new size).
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
from typing import Any

import numpy as np

from spiceserver.errors import SpiceError
from spiceserver.sources.base import Rect

__all__ = ["Grabber", "ScreenShrank", "ShmConnection"]

logger = logging.getLogger("spiceserver.desktop")

#: ``xorgproto:shmproto.h``: the minor opcodes, and the requests' layouts (native byte
#: order, as python-xlib set the connection up).
_SHM_ATTACH, _SHM_GET_IMAGE = 1, 4
_ATTACH = struct.Struct("=BBHIIB3x")  # major, minor, length 4, shmseg, shmid, read-only
_GET_IMAGE = struct.Struct("=BBHIhhHHIB3xII")  # ..., drawable, box, planes, format, seg, offset
#: GetInputFocus (core opcode 43, no body): a round trip that says the attach went through.
_GET_INPUT_FOCUS = struct.pack("=BxH", 43, 1)
_REPLY_BYTES = 32
#: The first byte of what X sends: an error, a reply, or an event (GenericEvent is longer).
_ERROR, _REPLY, _GENERIC_EVENT = 0, 1, 35
#: A reply's (and a GenericEvent's) count of 4-byte words after its first 32 bytes.
_LENGTH = struct.Struct("=I")
_Z_PIXMAP = 2
_ALL_PLANES = 0xFFFF_FFFF
#: ``<sys/ipc.h>``, ``<sys/shm.h>`` on Linux.
_IPC_PRIVATE, _IPC_CREAT, _IPC_RMID = 0, 0o1000, 0


class ScreenShrank(SpiceError):
    """A grab box is off the screen: it changed size before its events were read."""


class Grabber:
    """Pixels of boxes of an X display's root window, B,G,R,X (one thread at a time)."""

    def __init__(self, display_name: str) -> None:
        import mss
        import mss.exception

        self._refused = mss.exception.ScreenShotError
        self.display_name = display_name
        self.sct: Any = mss.MSS(display=display_name)
        #: Our XShm connection, made at the first grab (None after: mss grabs everything).
        self._shm: ShmConnection | None = None
        self._shm_tried = False

    @property
    def shm_status(self) -> str | None:
        """None when grabs go through shared memory (ours, or mss's), else why not."""
        if self._shm is not None:
            return None
        status = " ".join(getattr(self.sct, "performance_status", []))
        return None if "MIT-SHM is working" in status else (status or "mss without XShm")

    def grab(self, box: Rect, *, borrowed: bool = False) -> np.ndarray:
        """The pixels under ``box``, an array of its own (H, W, 4); ``borrowed``: possibly a
        view of the shared memory instead, valid until the next grab.  Raises ScreenShrank
        for a box outside the screen."""
        shm = self._shm
        if shm is None and not self._shm_tried:
            shm = self._shm = self._connect()
        if shm is not None:
            pixels = shm.grab(box, borrowed=borrowed)
            if pixels is not None:
                return pixels
            # too big for the segment, or X refused (a box off a shrunk screen): mss says why
        try:
            shot = self.sct.grab(
                {"left": box.x, "top": box.y, "width": box.width, "height": box.height}
            )
        except self._refused as exc:
            # The screen shrank under this grab (its events are not read yet): follow.
            logger.debug("grab of %s failed (%s): checking the screen size", box, exc)
            raise ScreenShrank(str(exc)) from exc
        return np.frombuffer(shot.raw, dtype=np.uint8).reshape(box.height, box.width, 4)

    def _connect(self) -> ShmConnection | None:
        self._shm_tried = True
        try:
            return ShmConnection(self.display_name)
        except (OSError, SpiceError) as exc:
            logger.debug("XShm of our own unavailable (%s): grabs through mss", exc)
            return None

    def close(self) -> None:
        shm, self._shm = self._shm, None
        if shm is not None:
            shm.close()
        self.sct.close()


def _local(sock: socket.socket) -> bool:
    """Whether ``sock`` reaches an X server on this host (a Unix socket, or loopback)."""
    if sock.family == socket.AF_UNIX:
        return True
    try:
        host = sock.getpeername()[0]
    except OSError:
        return False
    return host in ("127.0.0.1", "::1") or str(host).startswith("127.")


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmget.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_int)
    libc.shmget.restype = ctypes.c_int
    libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
    libc.shmat.restype = ctypes.c_void_p
    libc.shmdt.argtypes = (ctypes.c_void_p,)
    libc.shmctl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
    return libc


class ShmConnection:
    """An X connection that only grabs: ``ShmGetImage`` into a segment of the screen's size.

    Raises:
        SpiceError: the X server has no MIT-SHM, or refused the segment.
        OSError: no segment could be made (or the connection broke).
    """

    def __init__(self, display_name: str) -> None:
        from Xlib import display as xdisplay

        try:
            self._display = display = xdisplay.Display(display_name)
        except Exception as exc:  # DisplayError, OSError …: mss grabs then
            raise SpiceError(f"cannot open {display_name!r} for grabbing: {exc}") from exc
        self._address: int | None = None
        try:
            extension = display.query_extension("MIT-SHM")
            if extension is None:
                raise SpiceError(f"{display_name}: no MIT-SHM")
            screen = display.screen()
            self.size = screen.width_in_pixels * screen.height_in_pixels * 4
            self._major = extension.major_opcode
            self._root = screen.root.id
            self._segment = display.display.allocate_resource_id()
            # python-xlib is done: from here on its socket is ours alone (and its request
            # count stale, which nothing reads).
            display.sync()
            self._socket: socket.socket = display.display.socket
            if not _local(self._socket):  # a segment id means nothing on another host
                raise SpiceError(f"{display_name}: not a local X server")
            self._reply = bytearray(_REPLY_BYTES)
            self._attach()
        except BaseException:
            self.close()
            raise

    def _attach(self) -> None:
        libc = _libc()
        shmid = libc.shmget(_IPC_PRIVATE, self.size, _IPC_CREAT | 0o600)
        if shmid < 0:
            raise OSError(ctypes.get_errno(), "shmget failed")
        try:
            address = libc.shmat(shmid, None, 0)
            if address in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), "shmat failed")
            self._address = address
            self.view = np.frombuffer(
                (ctypes.c_uint8 * self.size).from_address(address), dtype=np.uint8
            )
            self._socket.sendall(
                _ATTACH.pack(self._major, _SHM_ATTACH, 4, self._segment, shmid, 0)
                + _GET_INPUT_FOCUS
            )
            if not self._read_reply():
                raise SpiceError("the X server refused the shared memory segment")
        finally:
            # Gone once both sides detach (X attached it above, or never will).
            libc.shmctl(shmid, _IPC_RMID, None)

    def _read_reply(self) -> bool:
        """Read up to the next reply: True for it, False for an X error in its place.
        Events are skipped: X sends some to every client, selected or not (MappingNotify
        when a key is remapped, as xdotool does), and one taken for the reply would shift
        every later grab by one."""
        while True:
            self._read_exactly(self._reply)
            kind = self._reply[0] & 0x7F
            if kind in (_ERROR, _REPLY, _GENERIC_EVENT):
                # replies and generic events say how many 4-byte words follow the 32
                (extra,) = _LENGTH.unpack_from(self._reply, 4)
                if kind != _ERROR and extra:
                    self._skip(extra * 4)
            if kind in (_ERROR, _REPLY):
                return kind == _REPLY

    def _read_exactly(self, buffer: bytearray) -> None:
        view, have = memoryview(buffer), 0
        while have < len(buffer):
            got = self._socket.recv_into(view[have:], len(buffer) - have)
            if not got:
                raise OSError("the X server closed the grab connection")
            have += got

    def _skip(self, count: int) -> None:
        while count > 0:
            chunk = bytearray(min(count, 1 << 16))
            self._read_exactly(chunk)
            count -= len(chunk)

    def grab(self, box: Rect, *, borrowed: bool = False) -> np.ndarray | None:
        """The pixels under ``box``, an array of its own (``borrowed``: a view of the segment,
        which the next grab overwrites); None when it does not fit the segment or X refused
        it (a box off the screen)."""
        count = box.area * 4
        if count > self.size:
            return None
        request = _GET_IMAGE.pack(
            self._major, _SHM_GET_IMAGE, 8, self._root, box.x, box.y, box.width, box.height,
            _ALL_PLANES, _Z_PIXMAP, self._segment, 0,
        )  # fmt: skip
        self._socket.send(request)
        if not self._read_reply():
            return None
        pixels = self.view[:count].reshape(box.height, box.width, 4)
        return pixels if borrowed else pixels.copy()

    def close(self) -> None:
        """Detach the segment and close the connection (X detaches its side with it)."""
        self.view = np.empty(0, np.uint8)
        try:
            self._display.close()
        except Exception:  # the connection may already be gone
            logger.debug("closing the grab connection failed", exc_info=True)
        address, self._address = self._address, None
        if address is not None:
            _libc().shmdt(address)
