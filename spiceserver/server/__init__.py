"""The asyncio layer: listeners, transports, connections and channel handlers.

Nothing here parses protocol bytes (that is :mod:`spiceserver.protocol`'s); see
:mod:`spiceserver.server.registry` for the channels, :mod:`spiceserver.server.codecs` for the
image codecs and :mod:`spiceserver.server.transports` for what carries the bytes.
"""

from __future__ import annotations

from spiceserver.server.server import SessionInfo, SpiceServer

__all__ = ["SessionInfo", "SpiceServer"]
