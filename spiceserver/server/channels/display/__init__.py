"""The display channel's server side: update scheduling and band encoding."""

from spiceserver.server.channels.display.update_loop import DisplayHandler

__all__ = ["DisplayHandler"]
