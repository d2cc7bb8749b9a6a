"""The GNOME (mutter) Wayland clipboard as a :class:`~spiceserver.clipboard.ClipboardBackend`.

:class:`GnomeClipboard` goes through the remote desktop session of a
:class:`~spiceserver.sources.gnome.GnomeSource`: mutter's selection methods on
``org.gnome.Mutter.RemoteDesktop.Session`` (``mutter:data/dbus-interfaces/
org.gnome.Mutter.RemoteDesktop.xml``, mutter 43; what follows is how
``mutter:src/backends/meta-remote-desktop-session.c`` behaves):

* ``EnableClipboard(a{sv})`` once per session; mutter then reports the desktop's owner at
  once (if any) and every change with ``SelectionOwnerChanged(a{sv})``: ``mime-types``
  (mutter sends it as a ``(as)`` structure, not the ``as`` the XML describes; both are read)
  and ``session-is-owner`` (our own grab coming back, ignored).  No ``mime-types``: nobody
  owns the clipboard.
* **Desktop → client.**  ``SelectionRead(s mime) → h``: a pipe mutter fills from the owner
  and closes.  mutter refuses a second read while one is running, so reads take turns.
* **Client → desktop.**  ``SetSelection({"mime-types": as})`` makes the session the owner
  (an empty dict gives it up).  A Wayland program pasting makes mutter emit
  ``SelectionTransfer(s mime, u serial)``; the data is fetched from the client, written into
  the pipe ``SelectionWrite(u serial) → h`` returns, and ``SelectionWriteDone(serial, b)``
  says how it went (false without a pipe when the client had nothing).  mutter's clipboard
  manager itself asks for the text right after each grab (it keeps a copy for when the owner
  leaves), so one fetch from the client follows every text grab.  mutter gives up on a
  transfer not answered within 15 s (``TRANSFER_REQUEST_CLEANUP_TIMEOUT_MS``): a client
  slower than that finds its serial gone (``SelectionWrite`` fails, logged).

Only the CLIPBOARD selection: mutter's session API has no PRIMARY (it follows
``META_SELECTION_CLIPBOARD`` only); grabs of other selections are ignored and reads of them
return None.

Bounds: each pipe is read and written on the event loop (``add_reader``/``add_writer``,
non-blocking), never blocking it; a whole read, fetch or write has ``timeout`` ×
:data:`TRANSFER_TIMEOUTS` seconds, D-Bus calls ``timeout``; data over ``max_bytes`` is
refused both ways; at most :data:`MAX_QUEUED_READS` reads wait and :data:`MAX_TRANSFERS`
transfers run at once (more are refused).  Warnings go through the server's log limiter.

mutter 43 ends the remote desktop session when the monitors change and the source opens a
new one (:mod:`spiceserver.sources.gnome`): the clipboard follows it, enabled anew in the new
session (with the client's grab, if one holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from spiceserver.clipboard import (
    ClipboardListener,
    ClipboardType,
    Fetch,
    Selection,
    check_limits,
)
from spiceserver.config import CLIPBOARD_MAX_BYTES, CLIPBOARD_TIMEOUT
from spiceserver.errors import ConfigError

if TYPE_CHECKING:
    from dbus_fast import Message

    from spiceserver.sources.gnome import GnomeSource
    from spiceserver.sources.mutter import MutterSession

__all__ = ["GnomeClipboard", "mime_types_for", "types_from_mimes"]

logger = logging.getLogger("spiceserver.clipboard")

_SESSION_IFACE = "org.gnome.Mutter.RemoteDesktop.Session"

#: A whole pipe transfer, and a client's fetch, may take this many ``timeout``\\ s.
TRANSFER_TIMEOUTS = 4
#: read() calls waiting (mutter serves one at a time); more return None at once.
MAX_QUEUED_READS = 4
#: SelectionTransfer requests served at once; more are answered "failed" at once.
MAX_TRANSFERS = 4
#: Bytes moved per read/write call on a pipe.
CHUNK = 64 * 1024

#: What a client's type is offered as on the desktop, best first.  Text is UTF-8 in each.
OFFERED_MIMES: dict[ClipboardType, tuple[str, ...]] = {
    ClipboardType.UTF8_TEXT: ("text/plain;charset=utf-8", "UTF8_STRING", "text/plain"),
    ClipboardType.PNG: ("image/png",),
    ClipboardType.BMP: ("image/bmp",),
    ClipboardType.TIFF: ("image/tiff",),
    ClipboardType.JPG: ("image/jpeg",),
}
#: A desktop owner's MIME type → the client type it is read as.  STRING is Latin-1 (X's
#: ICCCM meaning, which Xwayland programs and wl-copy keep) and converted; TEXT is not taken.
_READ_MIMES: dict[str, ClipboardType] = {
    **{mime: ctype for ctype, mimes in OFFERED_MIMES.items() for mime in mimes},
    "STRING": ClipboardType.UTF8_TEXT,
    "image/x-bmp": ClipboardType.BMP,
    "image/x-MS-bmp": ClipboardType.BMP,
    "image/jpg": ClipboardType.JPG,
}
_LATIN1 = "STRING"


def mime_types_for(types: tuple[ClipboardType, ...]) -> list[str]:
    """The MIME types a client's grab of ``types`` is offered under, in order, no repeats."""
    out: list[str] = []
    for ctype in types:
        for mime in OFFERED_MIMES.get(ctype, ()):
            if mime not in out:
                out.append(mime)
    return out


def types_from_mimes(mimes: list[str]) -> tuple[ClipboardType, ...]:
    """The client types a desktop owner offering ``mimes`` has, in the owner's order."""
    out: list[ClipboardType] = []
    for mime in mimes:
        ctype = _READ_MIMES.get(mime)
        if ctype is not None and ctype not in out:
            out.append(ctype)
    return tuple(out)


def _pick_mime(mimes: list[str], ctype: ClipboardType) -> str | None:
    """The owner's MIME type to read ``ctype`` as: ours in our order of preference, then any
    other that maps to it (STRING last for text)."""
    for mime in OFFERED_MIMES.get(ctype, ()):
        if mime in mimes:
            return mime
    others = [m for m in mimes if _READ_MIMES.get(m) == ctype]
    others.sort(key=lambda m: m == _LATIN1)
    return others[0] if others else None


def _mimes_of(options: dict[str, Any]) -> list[str] | None:
    """``mime-types`` of a SelectionOwnerChanged: ``(as)`` from mutter, ``as`` as documented;
    None when absent (no owner)."""
    variant = options.get("mime-types")
    if variant is None:
        return None
    value = getattr(variant, "value", variant)
    if getattr(variant, "signature", "") == "(as)" or (
        isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], list)
    ):
        value = value[0]
    return [str(m) for m in value if isinstance(m, str)]


def _close_late_fds(call: asyncio.Future[Any]) -> None:
    """Done callback of a method call nobody waits for any more: close the fds it brought."""
    if call.cancelled() or call.exception() is not None:
        return
    reply = call.result()
    for fd in getattr(reply, "unix_fds", None) or ():
        with contextlib.suppress(OSError):
            os.close(fd)


class _OverCap(Exception):
    """A pipe carried more than ``max_bytes``."""


async def read_pipe(fd: int, max_bytes: int) -> bytes:
    """Everything until EOF from ``fd`` (made non-blocking), on the loop; closes ``fd``.

    Raises:
        _OverCap: More than ``max_bytes`` came (the rest is not read).
    """
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    size = 0
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        nonlocal size
        if done.done():
            return
        try:
            chunk = os.read(fd, CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            done.set_exception(exc)
            return
        if not chunk:
            done.set_result(None)
            return
        size += len(chunk)
        if size > max_bytes:
            done.set_exception(_OverCap(size))
            return
        chunks.append(chunk)

    try:
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
        try:
            await done
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
    return b"".join(chunks)


async def write_pipe(fd: int, data: bytes) -> None:
    """All of ``data`` into ``fd`` (made non-blocking), on the loop; closes ``fd`` (the reader
    sees EOF).  OSError (a reader that went away: EPIPE) is raised."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    done: asyncio.Future[None] = loop.create_future()

    def writable() -> None:
        nonlocal view
        if done.done():
            return
        try:
            sent = os.write(fd, view[:CHUNK])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            done.set_exception(exc)
            return
        view = view[sent:]
        if not view:
            done.set_result(None)

    try:
        os.set_blocking(fd, False)
        if view:
            loop.add_writer(fd, writable)
            try:
                await done
            finally:
                loop.remove_writer(fd)
    finally:
        os.close(fd)


class GnomeClipboard:
    """The clipboard of the GNOME session ``source`` shares (see the module docstring).

    Args:
        source: The GNOME source whose remote desktop session carries the clipboard.
        max_bytes: Largest clipboard data taken from or given to the desktop.
        timeout: Seconds for one D-Bus call; a whole transfer and a client's fetch get
            :data:`TRANSFER_TIMEOUTS` times that.
    """

    def __init__(
        self,
        source: GnomeSource,
        *,
        max_bytes: int = CLIPBOARD_MAX_BYTES,
        timeout: float = CLIPBOARD_TIMEOUT,
    ) -> None:
        check_limits(max_bytes, timeout)
        self.source = source
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._listener: ClipboardListener | None = None
        self._session: MutterSession | None = None
        #: The client's grab of CLIPBOARD: its types and fetch.
        self._client: tuple[tuple[ClipboardType, ...], Fetch] | None = None
        #: The desktop owner's MIME types (None: the desktop owns nothing we know of).
        self._desktop_mimes: list[str] | None = None
        self._read_lock = asyncio.Lock()
        self._reads = 0
        self._transfers = 0
        #: Grabs sent to mutter and not answered yet (see _owner_changed).
        self._grabs_in_flight = 0
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closed = False

    # ------------------------------------------------------------------ ClipboardBackend

    def attach(self, listener: ClipboardListener) -> None:
        """Follow the source's session (this one and those after a monitor change)."""
        self._listener = listener
        self.source.add_session_listener(self._bind)
        if self.source.session is not None:
            self._bind(self.source.session)

    async def read(self, selection: Selection, type: ClipboardType) -> bytes | None:
        """The desktop owner's data of ``type`` (text as UTF-8), or None: not CLIPBOARD, not
        offered, no session, mutter refused, no data within the time or over the cap."""
        mimes = self._desktop_mimes
        if selection != Selection.CLIPBOARD or mimes is None:
            return None
        mime = _pick_mime(mimes, ClipboardType(type))
        if mime is None:
            return None
        if self._reads >= MAX_QUEUED_READS:
            logger.warning("%d GNOME clipboard reads already waiting: one refused", self._reads)
            return None
        self._reads += 1
        try:
            async with asyncio.timeout(self.timeout * TRANSFER_TIMEOUTS):
                async with self._read_lock:
                    data = await self._read(mime)
        except TimeoutError:
            logger.warning("the GNOME clipboard's %s data did not come in time", mime)
            return None
        finally:
            self._reads -= 1
        if data is not None and mime == _LATIN1:
            data = data.decode("latin-1").encode()
        return data

    def client_grabbed(
        self, selection: Selection, types: tuple[ClipboardType, ...], fetch: Fetch
    ) -> None:
        """Make the session the desktop's CLIPBOARD owner with the types' MIME types."""
        if selection != Selection.CLIPBOARD:
            return
        mimes = mime_types_for(tuple(types))
        self._client = (tuple(types), fetch) if mimes else None
        self._desktop_mimes = None
        self._spawn(self._set_selection(mimes))

    def client_released(self, selection: Selection) -> None:
        """Give CLIPBOARD up on the desktop, if the client's grab still holds it."""
        if selection != Selection.CLIPBOARD or self._client is None:
            return
        self._client = None
        self._spawn(self._set_selection([]))

    async def close(self) -> None:
        """Disable the clipboard in the session (if it still runs) and stop following it."""
        if self._closed:
            return
        self._closed = True
        self.source.remove_session_listener(self._bind)
        self._client = None
        session, self._session = self._session, None
        for task in list(self._tasks):
            task.cancel()
        if session is not None:
            session.bus.remove_message_handler(self._on_message)
            if not session.closed:
                with contextlib.suppress(ConfigError):
                    await self._call(session, "DisableClipboard")
        self._listener = None

    # ------------------------------------------------------------------ the session

    def _bind(self, session: MutterSession) -> None:
        """A (new) session of the source: enable its clipboard (on the loop)."""
        if self._closed:
            return
        old, self._session = self._session, session
        if old is not None and old is not session:
            old.bus.remove_message_handler(self._on_message)
        session.bus.add_message_handler(self._on_message)
        self._spawn(self._enable(session))

    async def _enable(self, session: MutterSession) -> None:
        from dbus_fast import Variant

        options: dict[str, Any] = {}
        mimes = [] if self._client is None else mime_types_for(self._client[0])
        if mimes:  # EnableClipboard with mime-types = enable and SetSelection at once
            options["mime-types"] = Variant("as", mimes)
        try:
            await self._call(session, "EnableClipboard", "a{sv}", [options])
        except ConfigError as exc:
            logger.warning("no GNOME clipboard: %s", exc)
            return
        logger.info("GNOME clipboard enabled (CLIPBOARD only: mutter has no PRIMARY here)")

    async def _set_selection(self, mimes: list[str]) -> None:
        from dbus_fast import Variant

        session = self._live_session()
        if session is None:
            return  # applied by _enable when a session comes
        options = {"mime-types": Variant("as", mimes)} if mimes else {}
        logger.debug("GNOME clipboard: SetSelection(%s)", mimes)
        self._grabs_in_flight += 1 if mimes else 0
        try:
            await self._call(session, "SetSelection", "a{sv}", [options])
        except ConfigError as exc:
            logger.warning("the GNOME clipboard refused the client's grab: %s", exc)
        finally:
            self._grabs_in_flight -= 1 if mimes else 0

    def _on_message(self, message: Message) -> None:
        from dbus_fast import MessageType

        session = self._session
        if (
            message.message_type != MessageType.SIGNAL
            or session is None
            or message.path != session.session_path
            or message.interface != _SESSION_IFACE
        ):
            return
        try:
            if message.member == "SelectionOwnerChanged":
                self._owner_changed(message.body[0])
            elif message.member == "SelectionTransfer":
                mime, serial = str(message.body[0]), int(message.body[1])
                self._transfer_requested(session, mime, serial)
        except (IndexError, TypeError, ValueError, AttributeError):
            logger.warning("a malformed %s signal from mutter: ignored", message.member)

    def _owner_changed(self, options: dict[str, Any]) -> None:
        is_ours = options.get("session-is-owner")
        if is_ours is not None and bool(getattr(is_ours, "value", is_ours)):
            return  # our own SetSelection coming back
        if self._grabs_in_flight:
            # mutter sent this before it took our grab (one thread, messages in order): the
            # grab replaces that owner, whose programs' copy the clients need not see.
            logger.debug("GNOME clipboard: an owner change before our grab: ignored")
            return
        mimes = _mimes_of(options)
        listener = self._listener
        types = () if mimes is None else types_from_mimes(mimes)
        if mimes is not None:
            self._client = None  # a desktop program took the clipboard over
        if not types:
            had = self._desktop_mimes is not None
            self._desktop_mimes = None
            if had and listener is not None:
                listener.desktop_released(Selection.CLIPBOARD)
            return
        self._desktop_mimes = list(mimes or ())
        logger.debug("GNOME clipboard owner offers %s", mimes)
        if listener is not None:
            listener.desktop_grabbed(Selection.CLIPBOARD, types)

    # ------------------------------------------------------------------ transfers

    async def _read(self, mime: str) -> bytes | None:
        session = self._live_session()
        if session is None:
            return None
        try:
            fd = await self._call_fd(session, "SelectionRead", "s", [mime])
        except ConfigError as exc:
            logger.warning("reading the GNOME clipboard (%s): %s", mime, exc)
            return None
        try:
            return await read_pipe(fd, self.max_bytes)
        except _OverCap as exc:
            logger.warning(
                "the GNOME clipboard's %s data (over %s bytes) is over the cap of %d bytes: "
                "dropped",
                mime,
                exc.args[0],
                self.max_bytes,
            )
        except OSError as exc:
            logger.warning("reading the GNOME clipboard (%s) failed: %s", mime, exc)
        return None

    def _transfer_requested(self, session: MutterSession, mime: str, serial: int) -> None:
        logger.debug("GNOME clipboard: SelectionTransfer(%s, %d)", mime, serial)
        client = self._client
        ctype = _READ_MIMES.get(mime) if mime != _LATIN1 else None
        if client is None or ctype is None or ctype not in client[0]:
            self._spawn(self._write_done(session, serial, False))
            return
        if self._transfers >= MAX_TRANSFERS:
            logger.warning("%d GNOME clipboard transfers running: one refused", self._transfers)
            self._spawn(self._write_done(session, serial, False))
            return
        self._spawn(self._transfer(session, serial, ctype, client[1]))

    async def _transfer(
        self, session: MutterSession, serial: int, ctype: ClipboardType, fetch: Fetch
    ) -> None:
        self._transfers += 1
        ok = False
        limit = self.timeout * TRANSFER_TIMEOUTS
        try:
            async with asyncio.timeout(limit):
                data = await fetch(ctype)
                if data is not None and len(data) > self.max_bytes:
                    logger.warning(
                        "the client's %s data of %d bytes is over the cap of %d bytes: dropped",
                        ctype.name,
                        len(data),
                        self.max_bytes,
                    )
                    data = None
                if data is not None:
                    fd = await self._call_fd(session, "SelectionWrite", "u", [serial])
                    await write_pipe(fd, data)
                    ok = True
        except TimeoutError:
            logger.warning(
                "a GNOME clipboard transfer (%s) did not end within %.1f s", ctype.name, limit
            )
        except ConfigError as exc:
            logger.warning("mutter refused a clipboard transfer: %s", exc)
        except OSError as exc:
            logger.warning("writing the clipboard to GNOME failed: %s", exc)
        finally:
            self._transfers -= 1
        await self._write_done(session, serial, ok)

    async def _write_done(self, session: MutterSession, serial: int, ok: bool) -> None:
        if session.closed:
            return
        with contextlib.suppress(ConfigError):
            await self._call(session, "SelectionWriteDone", "ub", [serial, ok])

    # ------------------------------------------------------------------ D-Bus

    def _live_session(self) -> MutterSession | None:
        session = self._session
        return None if session is None or session.closed else session

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.ensure_future(coro)
        except RuntimeError:  # no running loop (before attach): applied by _enable later
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(
        self,
        session: MutterSession,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
    ) -> Message:
        """One session method; ConfigError on an error reply, no reply or a timeout."""
        from dbus_fast import Message, MessageType

        message = Message(
            destination="org.gnome.Mutter.RemoteDesktop",
            path=session.session_path,
            interface=_SESSION_IFACE,
            member=member,
            signature=signature,
            body=body or [],
        )
        # A reply that comes after we stopped waiting (a timeout, a cancelled read) may
        # carry a pipe: the call runs on in a task of its own that closes such fds.
        call = asyncio.ensure_future(session.bus.call(message))
        try:
            reply = await asyncio.wait_for(asyncio.shield(call), self.timeout)
        except BaseException as exc:
            call.add_done_callback(_close_late_fds)
            if isinstance(exc, TimeoutError):
                raise ConfigError(f"{member}: no answer within {self.timeout:.1f} s") from exc
            if not isinstance(exc, Exception):
                raise  # cancelled
            raise ConfigError(f"{member}: {exc!r}") from exc
        if reply is None:
            raise ConfigError(f"{member}: no reply")
        if reply.message_type == MessageType.ERROR:
            for fd in reply.unix_fds:
                os.close(fd)
            detail = reply.body[0] if reply.body else ""
            raise ConfigError(f"{member} failed: {reply.error_name}: {detail}")
        return reply

    async def _call_fd(
        self, session: MutterSession, member: str, signature: str, body: list[Any]
    ) -> int:
        """A method answering one ``h``: the fd, ours to close (any others are closed)."""
        reply = await self._call(session, member, signature, body)
        fds = list(reply.unix_fds)
        index = reply.body[0] if reply.body else -1
        if not isinstance(index, int) or not 0 <= index < len(fds):
            for fd in fds:
                os.close(fd)
            raise ConfigError(f"{member}: no file descriptor in the reply (fd passing off?)")
        fd = fds.pop(index)
        for other in fds:
            os.close(other)
        return fd
