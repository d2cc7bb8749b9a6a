"""Frames of a PipeWire video node through GStreamer: ``pipewiresrc ! videoconvert ! appsink``.

PyGObject (``gi.repository.Gst``) is imported only here and only when a GNOME source starts.
The pipeline is pulled from one thread of its own; nothing here touches the event loop.

* **Latest wins.**  The appsink keeps one sample and drops older ones (``max-buffers=1
  drop=true``), so a reader that falls behind skips frames instead of queueing them.
* **SHM.**  Without a GPU mutter offers only memfd buffers ("Disabling DMA buffer screen
  sharing"); videoconvert passes B,G,R,x through untouched and converts anything else.
* **Empty buffers.**  mutter sends buffers without pixels (a size of 0) when only the cursor
  or nothing changed: they are skipped.
* **Size.**  Each sample's caps carry its size, so a monitor mode change arrives as a frame of
  another shape; the consumer decides what that means.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from spiceserver.errors import ConfigError

__all__ = ["PipeWireFrames", "import_gst"]

logger = logging.getLogger("spiceserver.gnome")

#: The pipeline after the source element; the caps make every frame B,G,R,x (SPICE 32_xRGB's
#: byte order).
_TAIL = (
    "videoconvert ! video/x-raw,format=BGRx ! "
    "appsink name=sink max-buffers=1 drop=true sync=false emit-signals=false"
)


def import_gst() -> Any:
    """``gi.repository.Gst``, initialised, with ``pipewiresrc`` present; else a ConfigError
    naming the package to install."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError) as exc:
        raise ConfigError(
            f"the GNOME source needs PyGObject with GStreamer's introspection data ({exc}): "
            "pip install 'spiceserver[gnome]' (Debian: gir1.2-gstreamer-1.0; building PyGObject "
            "needs libgirepository1.0-dev libcairo2-dev pkg-config python3-dev)"
        ) from exc
    if not Gst.is_initialized():
        Gst.init(None)
    if Gst.ElementFactory.find("pipewiresrc") is None:
        raise ConfigError(
            "GStreamer has no pipewiresrc element: install PipeWire's GStreamer plugin "
            "(Debian: gstreamer1.0-pipewire)"
        )
    for element in ("videoconvert", "appsink"):
        if Gst.ElementFactory.find(element) is None:
            raise ConfigError(
                f"GStreamer has no {element} element: install gstreamer1.0-plugins-base"
            )
    return Gst


class PipeWireFrames:
    """Pulls B,G,R,x frames of PipeWire node ``node_id`` (blocking calls: use a thread).

    Args:
        node_id: The node mutter announced (``PipeWireStreamAdded``).
        remote: A PipeWire socket path to connect to instead of the default one
            (``$PIPEWIRE_REMOTE``, else ``pipewire-0`` in ``$XDG_RUNTIME_DIR``).
    """

    def __init__(self, node_id: int, *, remote: str | None = None) -> None:
        self.Gst = import_gst()
        self.node_id = node_id
        self._fd = -1
        source = f"pipewiresrc path={int(node_id)} client-name=spiceserver"
        if remote is not None:
            self._fd = _connect_unix(remote)
            # pipewiresrc connects with a duplicate (gstpipewirecore.c: F_DUPFD_CLOEXEC), so
            # this one stays ours to close.
            source += f" fd={self._fd}"
        self.pipeline: Any = None
        try:
            self.pipeline = self.Gst.parse_launch(f"{source} ! {_TAIL}")
        except Exception:
            self.close()
            raise
        self.sink = self.pipeline.get_by_name("sink")
        self.bus = self.pipeline.get_bus()
        #: Samples received (with pixels) and skipped (empty), for benchmarks.
        self.frames = 0
        self.empty = 0

    def start(self) -> None:
        Gst = self.Gst
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            error = self.error() or "no detail"
            self.close()
            raise ConfigError(f"cannot start PipeWire capture of node {self.node_id}: {error}")

    def error(self) -> str | None:
        """The first error (or end of stream) the pipeline posted, as text; None if none."""
        Gst = self.Gst
        message = self.bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)
        if message is None:
            return None
        if message.type == Gst.MessageType.EOS:
            return "the PipeWire stream ended"
        err, debug = message.parse_error()
        return f"{err.message} ({debug})" if debug else str(err.message)

    def pull(self, timeout: float) -> np.ndarray | None:
        """The newest frame as a fresh ``(H, W, 4)`` array, or None if none came in
        ``timeout`` seconds (or only empty buffers did)."""
        sample = self.sink.emit("try-pull-sample", int(timeout * 1e9))
        if sample is None:
            return None
        buffer = sample.get_buffer()
        caps = sample.get_caps().get_structure(0)
        width, height = caps.get_value("width"), caps.get_value("height")
        size = buffer.get_size()
        if size == 0 or not width or not height:
            self.empty += 1
            return None
        stride = size // height
        if stride < width * 4:
            logger.debug("short PipeWire buffer: %d bytes for %dx%d", size, width, height)
            self.empty += 1
            return None
        ok, info = buffer.map(self.Gst.MapFlags.READ)
        if not ok:
            return None
        try:
            rows = np.frombuffer(info.data, dtype=np.uint8, count=stride * height)
            frame = rows.reshape(height, stride)[:, : width * 4].reshape(height, width, 4).copy()
        finally:
            buffer.unmap(info)
        self.frames += 1
        return frame

    def close(self) -> None:
        """Stop the pipeline (disconnects from PipeWire).  Idempotent."""
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            pipeline.set_state(self.Gst.State.NULL)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1


def _connect_unix(path: str) -> int:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot connect to PipeWire at {path!r}: {exc}") from exc
    return sock.detach()
