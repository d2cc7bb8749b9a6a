"""Monitor layouts the clients ask for (the agent's MONITORS_CONFIG), applied to the source.

Contract between the agent (which parses the request) and the source (which may follow it):
the main channel's agent calls :meth:`LayoutController.request` with the heads a client wants;
``ServerContext.end_session`` calls :meth:`LayoutController.session_ended`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spiceserver.session import Session
    from spiceserver.sources.base import FramebufferSource, Head

__all__ = ["LayoutController"]

logger = logging.getLogger("spiceserver.layout")


class LayoutController:
    """Applies the clients' monitor layouts to one source (placeholder: logs only)."""

    def __init__(self, source: FramebufferSource) -> None:
        self.source = source

    def request(self, session: Session, heads: tuple[Head, ...]) -> None:
        """``session``'s client asks for ``heads`` (its windows, in client order)."""
        logger.debug("session %#010x asks for layout %s", session.id, heads)

    def session_ended(self, session: Session) -> None:
        """``session`` is gone: if it was the last one that changed the layout, restore."""
