"""The clipboard between SPICE clients and the desktop: selections, data types, backends.

The built-in agent (``spiceserver.protocol.agent`` and the main channel) speaks VDAgent
clipboard messages with each client; a :class:`ClipboardBackend` is the desktop's side: the X
selections on an X desktop, or the embedding program's own clipboard.  The server joins them:
when a client grabs a selection the backend is told (and serves desktop programs by fetching
from that client); when the desktop's owner changes the backend tells the server, which
offers the new types to the clients.

Type and selection numbers are those of ``spice-protocol:spice/vd_agent.h``
(``VD_AGENT_CLIPBOARD_*`` and ``VD_AGENT_CLIPBOARD_SELECTION_*``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from enum import IntEnum
from typing import Protocol

from spiceserver.errors import ConfigError

__all__ = [
    "ClipboardBackend",
    "ClipboardListener",
    "ClipboardType",
    "Fetch",
    "MemoryClipboard",
    "Selection",
    "check_limits",
]


class Selection(IntEnum):
    """``VD_AGENT_CLIPBOARD_SELECTION_*``."""

    CLIPBOARD = 0
    PRIMARY = 1
    SECONDARY = 2


class ClipboardType(IntEnum):
    """``VD_AGENT_CLIPBOARD_*`` data types (FILE_LIST, 6, is webdav-only and not handled)."""

    UTF8_TEXT = 1
    PNG = 2
    BMP = 3
    TIFF = 4
    JPG = 5


#: Asks the selection's current owner for its data of one type; None when it has none, did not
#: answer in time, or its data is over the size cap.  A coroutine function run on the loop.
Fetch = Callable[[ClipboardType], Awaitable[bytes | None]]


class ClipboardListener(Protocol):
    """The server's side, as a backend sees it.  Call it on the event loop thread."""

    def desktop_grabbed(self, selection: Selection, types: tuple[ClipboardType, ...]) -> None:
        """A desktop program now owns ``selection`` and offers ``types``."""

    def desktop_released(self, selection: Selection) -> None:
        """Nobody on the desktop owns ``selection`` any more (or it was cleared)."""


class ClipboardBackend(Protocol):
    """The desktop's side of the clipboard (X selections, an embedder's clipboard)."""

    def attach(self, listener: ClipboardListener) -> None:
        """Called once on the event loop when the server starts; events go to ``listener``."""

    async def read(self, selection: Selection, type: ClipboardType) -> bytes | None:
        """The desktop owner's data of ``type`` (None: not offered, timed out, over the cap)."""

    def client_grabbed(
        self, selection: Selection, types: tuple[ClipboardType, ...], fetch: Fetch
    ) -> None:
        """A client now owns ``selection`` with ``types``; desktop programs asking for it are
        answered with ``await fetch(type)``.  Replaces any earlier grab (no release first)."""

    def client_released(self, selection: Selection) -> None:
        """The owning client released ``selection`` (or left): stop answering for it."""

    async def close(self) -> None:
        """The server is closing: give up owned selections, stop threads."""


def check_limits(max_bytes: int, timeout: float) -> None:
    """A desktop backend's size cap and timeout, or a ConfigError saying which is wrong."""
    if max_bytes <= 0:
        raise ConfigError(f"the clipboard size cap must be positive, got {max_bytes}")
    if timeout <= 0:
        raise ConfigError(f"the clipboard timeout must be positive, got {timeout}")


class MemoryClipboard:
    """A :class:`ClipboardBackend` in memory, for embedding programs, scenarios and tests.

    :meth:`offer` puts data on the "desktop" side (every client with the agent is offered it);
    what a client copies is fetched from that client on demand with :meth:`fetch`, and
    :meth:`wait_client` waits until a client owns a selection.  ``on_client_grab`` is called
    (on the loop) with the selection and types whenever a client grabs one.  All methods run
    on the event loop thread.
    """

    def __init__(
        self,
        on_client_grab: Callable[[Selection, tuple[ClipboardType, ...]], None] | None = None,
    ) -> None:
        self.on_client_grab = on_client_grab
        self._listener: ClipboardListener | None = None
        self._offered: dict[Selection, dict[ClipboardType, bytes]] = {}
        self._clients: dict[Selection, tuple[tuple[ClipboardType, ...], Fetch]] = {}
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ the embedder's side

    def offer(self, selection: Selection, data: Mapping[ClipboardType, bytes]) -> None:
        """The "desktop" now owns ``selection`` with ``data`` (by type); clients are offered
        its types."""
        selection = Selection(selection)
        self._offered[selection] = {ClipboardType(t): bytes(v) for t, v in data.items()}
        self._clients.pop(selection, None)
        if self._listener is not None:
            self._listener.desktop_grabbed(selection, tuple(self._offered[selection]))

    def clear(self, selection: Selection) -> None:
        """Nothing on the "desktop" side owns ``selection`` any more."""
        selection = Selection(selection)
        if self._offered.pop(selection, None) is not None and self._listener is not None:
            self._listener.desktop_released(selection)

    def client_types(self, selection: Selection) -> tuple[ClipboardType, ...] | None:
        """The types the client that owns ``selection`` offers (None: no client owns it)."""
        owner = self._clients.get(Selection(selection))
        return None if owner is None else owner[0]

    async def fetch(self, selection: Selection, type: ClipboardType) -> bytes | None:
        """The owning client's data of ``type`` (None: no client owns ``selection``, it has
        no such data, it did not answer in time or its data is over the size cap)."""
        owner = self._clients.get(Selection(selection))
        if owner is None or ClipboardType(type) not in owner[0]:
            return None
        return await owner[1](ClipboardType(type))

    async def wait_client(
        self, selection: Selection, timeout: float = 10.0
    ) -> tuple[ClipboardType, ...]:
        """Until a client owns ``selection``; its types (TimeoutError after ``timeout``)."""
        selection = Selection(selection)
        async with asyncio.timeout(timeout):
            while selection not in self._clients:
                await self._changed.wait()
        return self._clients[selection][0]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()  # waiters of the old one wake; new ones wait anew

    # ------------------------------------------------------------------ ClipboardBackend

    def attach(self, listener: ClipboardListener) -> None:
        self._listener = listener
        for selection, data in self._offered.items():
            listener.desktop_grabbed(selection, tuple(data))

    async def read(self, selection: Selection, type: ClipboardType) -> bytes | None:
        return self._offered.get(Selection(selection), {}).get(ClipboardType(type))

    def client_grabbed(
        self, selection: Selection, types: tuple[ClipboardType, ...], fetch: Fetch
    ) -> None:
        selection = Selection(selection)
        self._offered.pop(selection, None)
        self._clients[selection] = (types, fetch)
        if self.on_client_grab is not None:
            self.on_client_grab(selection, types)
        self._notify()

    def client_released(self, selection: Selection) -> None:
        self._clients.pop(Selection(selection), None)
        self._notify()

    async def close(self) -> None:
        self._clients.clear()
        self._listener = None
