"""One clipboard for the whole server: the desktop backend and every client with the agent.

Each selection has one owner at a time: the desktop (the backend reported a grab) or one
client (its agent grabbed).  A client's grab goes to the backend with a fetch that asks that
client (CLIPBOARD_REQUEST, its CLIPBOARD within a timeout and the size cap); the desktop's
grab is offered to every client with the agent; a client's request is answered with
``await backend.read(...)`` on the loop, never blocking it.  A newer grab, from anywhere,
replaces the owner; clients that were told the server owns a selection are told it no longer
does when a client takes it (they would otherwise paste stale data).

Every size over ``clipboard_max_bytes`` is refused both ways, with a rate-limited log line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from spiceserver.clipboard import ClipboardBackend, ClipboardType, Selection
from spiceserver.logs import skip

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["ClipboardHub", "ClipboardPeer"]

logger = logging.getLogger("spiceserver.clipboard")

_OVER = "%s: %s clipboard data of %d bytes refused: over clipboard_max_bytes (%d)"
_FAILED = "clipboard backend %s failed"


class ClipboardPeer(Protocol):
    """A client's side, as the hub sees it (``spiceserver.server.agent.SessionAgent``)."""

    name: str

    def offer(self, selection: Selection, types: tuple[ClipboardType, ...]) -> None: ...
    def withdraw(self, selection: Selection) -> None: ...
    async def fetch(self, selection: Selection, type: ClipboardType) -> bytes | None: ...
    def record(self, event: dict[str, Any]) -> None: ...


def known_types(types: Iterable[int]) -> tuple[ClipboardType, ...]:
    """The types we can name (FILE_LIST and unknown numbers left out), in order."""
    members = set(ClipboardType)
    return tuple(ClipboardType(t) for t in types if t in members)


class ClipboardHub:
    """The server's :class:`~spiceserver.clipboard.ClipboardListener`."""

    def __init__(self, backend: ClipboardBackend, *, max_bytes: int) -> None:
        self.backend = backend
        self.max_bytes = max_bytes
        self.peers: set[ClipboardPeer] = set()
        #: Selection → the owning peer, or None for the desktop.
        self._owner: dict[Selection, ClipboardPeer | None] = {}
        self._desktop_types: dict[Selection, tuple[ClipboardType, ...]] = {}
        self._attached = False

    def start(self) -> None:
        if not self._attached:
            self._attached = True
            self.backend.attach(self)

    async def close(self) -> None:
        try:
            await self.backend.close()
        except Exception:
            logger.exception(_FAILED, "close")

    # ------------------------------------------------------------------ the desktop

    def desktop_grabbed(self, selection: Selection, types: tuple[ClipboardType, ...]) -> None:
        selection = Selection(selection)
        self._owner[selection] = None
        self._desktop_types[selection] = tuple(types)
        for peer in list(self.peers):
            peer.offer(selection, tuple(types))

    def desktop_released(self, selection: Selection) -> None:
        selection = Selection(selection)
        if selection in self._owner and self._owner[selection] is None:
            del self._owner[selection]
            self._desktop_types.pop(selection, None)
            for peer in list(self.peers):
                peer.withdraw(selection)

    # ------------------------------------------------------------------ the clients

    def joined(self, peer: ClipboardPeer) -> None:
        """A client's agent is ready for clipboard messages: offer what the desktop owns."""
        self.peers.add(peer)
        for selection, types in self._desktop_types.items():
            if self._owner.get(selection, peer) is None:
                peer.offer(selection, types)

    def left(self, peer: ClipboardPeer) -> None:
        self.peers.discard(peer)
        for selection, owner in list(self._owner.items()):
            if owner is peer:
                self.client_released(peer, selection)

    def client_grabbed(
        self, peer: ClipboardPeer, selection: Selection, types: Iterable[int]
    ) -> None:
        selection = Selection(selection)
        offered = known_types(types)
        self._owner[selection] = peer
        self._desktop_types.pop(selection, None)
        for other in list(self.peers):
            if other is not peer:
                other.withdraw(selection)

        async def fetch(type: ClipboardType) -> bytes | None:
            if self._owner.get(selection) is not peer:
                return None  # it lost the selection since
            data = await peer.fetch(selection, type)
            return self._capped(data, peer.name, "the client's")

        try:
            self.backend.client_grabbed(selection, offered, fetch)
        except Exception:
            logger.exception(_FAILED, "client_grabbed")

    def client_released(self, peer: ClipboardPeer, selection: Selection) -> None:
        selection = Selection(selection)
        if self._owner.get(selection) is not peer:
            return
        del self._owner[selection]
        try:
            self.backend.client_released(selection)
        except Exception:
            logger.exception(_FAILED, "client_released")

    async def read(
        self, peer: ClipboardPeer, selection: Selection, type: ClipboardType
    ) -> bytes | None:
        """The data a client asked for: the desktop's (None if it owns nothing, or the
        asker owns the selection itself)."""
        if selection not in self._owner or self._owner[selection] is peer:
            return None
        try:
            data = await self.backend.read(selection, type)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(_FAILED, "read")
            return None
        return self._capped(data, peer.name, "the desktop's")

    def _capped(self, data: bytes | None, name: str, whose: str) -> bytes | None:
        if data is not None and len(data) > self.max_bytes:
            if not skip(logger, logging.WARNING, _OVER):
                logger.warning(_OVER, name, whose, len(data), self.max_bytes)
            return None
        return data
