"""The asyncio adapter: sockets, timers, threads.  Nothing here parses protocol bytes."""

from __future__ import annotations

from spiceserver.server.server import SpiceServer

__all__ = ["SpiceServer"]
