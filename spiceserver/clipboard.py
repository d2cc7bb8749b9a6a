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

from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Protocol

__all__ = [
    "ClipboardBackend",
    "ClipboardListener",
    "ClipboardType",
    "Fetch",
    "Selection",
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
