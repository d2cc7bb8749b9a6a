"""Capture mode: one pcap per channel and a video of the served display, per session.

Enabled by ``ServerConfig.capture_dir`` (``spiceserver serve --capture DIR``).  Layout::

    DIR/session-<id as 8 hex digits>/
        main.pcap  display.pcap  inputs.pcap  cursor.pcap   # display-1.pcap for channel id 1
        display.mp4                                         # needs PyAV (the capture extra)

The pcaps hold the SPICE bytes exactly as sent and received, wrapped in fake Ethernet/IPv4/TCP
headers whose server port is always 5900: open them with ``tshark -d tcp.port==5900,spice`` or
Wireshark's *Decode As*.  A channel that reconnects gets ``display.2.pcap``, …; a surface that
changes size starts ``display.2.mp4``, ….

This package belongs to the I/O layer: it writes files and starts threads, and the sans-I/O
core never imports it.
"""

from spiceserver.capture.session import (
    CaptureManager,
    ConnectionCapture,
    SessionCapture,
    VideoStats,
)
from spiceserver.capture.video import video_unavailable_reason

__all__ = [
    "CaptureManager",
    "ConnectionCapture",
    "SessionCapture",
    "VideoStats",
    "video_unavailable_reason",
]
