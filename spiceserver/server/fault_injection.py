"""Applying the configured faults (:mod:`spiceserver.faults`) to connections and images.

:class:`FaultInjector` exists only when faults are configured, and each hook is one ``is None``
test when they are not:

* a connection that links asks :meth:`FaultInjector.connection` for a :class:`ConnectionFaults`
  (None when no fault applies to that channel), which then takes the place of the connection's
  own flush (delay, close-after);
* the display channel passes each encoded image through an :class:`ImageCorrupter`, and each
  video stream frame through a :class:`FrameFault` (drop-frames, delay-frames).

The unknown message goes out through the channel protocol's own ``send_raw``, so its framing,
serial and ACK-window accounting are those of any other message (spice-gtk counts it towards
its ACKs before parsing: ``spice-gtk:src/spice-channel.c`` ``spice_channel_recv_msg()``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from spiceserver.faults import (
    DISPLAY_KINDS,
    UNKNOWN_MESSAGE_BODY,
    UNKNOWN_MESSAGE_TYPE,
    Fault,
    parse_faults,
)
from spiceserver.protocol.channel import ChannelProtocol
from spiceserver.protocol.display import EncodedImage
from spiceserver.server.codecs import intact_prefix

__all__ = [
    "CORRUPT_STRIDE",
    "ConnectionFaults",
    "FaultInjector",
    "FaultTarget",
    "FrameFault",
    "ImageCorrupter",
    "corrupt_image",
]

logger = logging.getLogger("spiceserver.faults")

Chunk = bytes | memoryview

#: Every CORRUPT_STRIDE-th byte of the coded data is inverted, from its first byte on: dense
#: enough that no codec can decode the image as it was, sparse enough to leave some structure.
CORRUPT_STRIDE = 16


class FaultTarget(Protocol):
    """What the faults need of a connection."""

    @property
    def name(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def writing_paused(self) -> bool: ...
    def write_chunks(self, chunks: list[Chunk]) -> None: ...
    def buffered(self) -> int: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def flush(self) -> None: ...
    def close(self, reason: str = ...) -> None: ...
    def abort(self, reason: str = ...) -> None: ...


class FaultInjector:
    """The server's faults; hands each connection and display channel its share."""

    def __init__(self, faults: Iterable[Fault | str]) -> None:
        self.faults = parse_faults(faults)

    def log_active(self) -> None:
        """One WARNING per active fault: the server misbehaves on purpose from here on."""
        for fault in self.faults:
            logger.warning("FAULT INJECTION active: %s", fault.describe())

    def connection(
        self,
        connection: FaultTarget,
        channel: ChannelProtocol,
        channel_name: str,
        *,
        write_buffer_high: int,
        max_write_buffer: int,
    ) -> ConnectionFaults | None:
        """The faults of a connection that just linked (None when none applies)."""
        mine = {
            f.kind: f
            for f in self.faults
            if f.kind not in DISPLAY_KINDS and f.applies_to(channel_name)
        }
        if not mine:
            return None
        return ConnectionFaults(
            connection, channel, mine, high=write_buffer_high, maximum=max_write_buffer
        )

    def image_corrupter(self, name: str) -> ImageCorrupter | None:
        """For a display channel: the image transformer, or None without corrupt-image."""
        for fault in self.faults:
            if fault.kind == "corrupt-image":
                return ImageCorrupter(fault.every, name)
        return None

    def frame_fault(self, name: str) -> FrameFault | None:
        """For a display channel: what happens to its stream frames, or None."""
        kinds = {fault.kind: fault for fault in self.faults}
        drop, delay = kinds.get("drop-frames"), kinds.get("delay-frames")
        if drop is None and delay is None:
            return None
        return FrameFault(
            drop.every if drop is not None else 0, delay.seconds if delay is not None else 0.0, name
        )


class ConnectionFaults:
    """Delay, close-after and unknown-message on one connection.

    :meth:`flush` stands between the channel protocol's output and the transport.  Delay keeps
    order (one FIFO, one due time per flush, all due times increasing) and memory bounded: held
    bytes count like unsent transport bytes, so above ``write_buffer_high`` the connection
    reports itself paused and the display and cursor stop producing (latest-wins: damage merges
    meanwhile), and above ``max_write_buffer`` it is dropped, as an unread one is.  A delay also
    slows the ACK window: the client ACKs only what it has received, so at most 2 × window
    messages leave per delay period and updates merge instead of queueing.
    """

    def __init__(
        self,
        connection: FaultTarget,
        channel: ChannelProtocol,
        faults: dict[str, Fault],
        *,
        high: int,
        maximum: int,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._loop = asyncio.get_running_loop()
        self._high = high
        self._max = maximum
        delay = faults.get("delay")
        self._delay = delay.seconds if delay is not None else 0.0
        close = faults.get("close-after")
        self._close_after = close.messages if close is not None else 0
        self._remaining = self._close_after or None
        self._closing = False
        # Delay line: (due, chunks, bytes, close after writing them).
        self._held: collections.deque[tuple[float, list[Chunk], int, bool]] = collections.deque()
        self._held_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._delay_logged = False
        unknown = faults.get("unknown-message")
        self._unknown_left = unknown.count if unknown is not None else 0
        self._unknown_interval = unknown.interval if unknown is not None else 0.0
        if unknown is not None:
            # call_soon: after the handler's start and the first flush, so the channel's own
            # opening messages (INIT, SET_ACK) go first.
            self._loop.call_soon(self._send_unknown)

    @property
    def held_bytes(self) -> int:
        """Bytes waiting in the delay line."""
        return self._held_bytes

    def flush(self, now: float) -> None:
        """Take the place of writing what the channel queued to the transport."""
        if self._closing:
            self._channel.data_to_send(now)  # close-after fired: nothing more is sent
            return
        last = False
        if self._remaining is not None:
            chunks, taken = self._channel.take_messages(self._remaining, now)
            self._remaining -= taken
            if self._remaining == 0:
                self._closing = last = True
        else:
            chunks = self._channel.data_to_send(now)
        if not chunks:
            return
        if self._delay:
            self._hold(chunks, last)
            return
        self._connection.write_chunks(chunks)
        if last:
            self._close()

    # ------------------------------------------------------------------ delay

    def _hold(self, chunks: list[Chunk], last: bool) -> None:
        if not self._delay_logged:
            self._delay_logged = True
            logger.info(
                "%s: fault delay: holding every message %gs", self._connection.name, self._delay
            )
        size = sum(len(c) for c in chunks)
        due = self._loop.time() + self._delay
        self._held.append((due, chunks, size, last))
        self._held_bytes += size
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._release)
        backlog = self._held_bytes + self._connection.buffered()
        if backlog > self._max:
            logger.warning(
                "%s: closing: %d bytes held or unsent under fault delay",
                self._connection.name,
                backlog,
            )
            self._connection.abort("fault delay: max_write_buffer exceeded")
            return
        if self._held_bytes > self._high and not self._connection.writing_paused:
            self._paused = True
            self._connection.pause_writing()

    def _release(self) -> None:
        self._timer = None
        if self._connection.closed:
            self._held.clear()
            self._held_bytes = 0
            return
        now = self._loop.time()
        while self._held and self._held[0][0] <= now:
            _due, chunks, size, last = self._held.popleft()
            self._held_bytes -= size
            logger.debug("%s: fault delay: writing %d bytes", self._connection.name, size)
            self._connection.write_chunks(chunks)
            if last:
                self._close()
                return
        if self._held:
            self._timer = self._loop.call_at(self._held[0][0], self._release)
        if (
            self._paused
            and self._held_bytes <= self._high // 2
            and self._connection.buffered() <= self._high
        ):
            # Otherwise the transport is itself above its high-water mark and resumes us.
            self._paused = False
            self._connection.resume_writing()

    # ------------------------------------------------------------------ close-after

    def _close(self) -> None:
        logger.info(
            "%s: fault close-after: closing after %d messages",
            self._connection.name,
            self._close_after,
        )
        self._connection.close(f"fault close-after:{self._close_after}")

    # ------------------------------------------------------------------ unknown-message

    def _send_unknown(self) -> None:
        if self._connection.closed or self._closing or self._unknown_left <= 0:
            return
        self._unknown_left -= 1
        self._channel.send_raw(UNKNOWN_MESSAGE_TYPE, (UNKNOWN_MESSAGE_BODY,))
        logger.info(
            "%s: fault unknown-message: sent type %#06x (%d bytes)",
            self._connection.name,
            UNKNOWN_MESSAGE_TYPE,
            len(UNKNOWN_MESSAGE_BODY),
        )
        self._connection.flush()
        if self._unknown_left:
            self._loop.call_later(self._unknown_interval, self._send_unknown)


class ImageCorrupter:
    """Corrupts every ``every``-th image of one display channel (see :func:`corrupt_image`)."""

    def __init__(self, every: int, name: str) -> None:
        self.every = every
        self.name = name
        self.images = 0
        self.corrupted = 0

    def __call__(self, image: EncodedImage) -> EncodedImage:
        self.images += 1
        if self.images % self.every:
            return image
        damaged = corrupt_image(image)
        if damaged is image:
            return image
        self.corrupted += 1
        logger.info(
            "%s: fault corrupt-image: image %d (%s %dx%d, %d bytes) sent corrupt",
            self.name,
            self.images,
            image.type.name,
            image.width,
            image.height,
            image.size,
        )
        return damaged


def corrupt_image(image: EncodedImage) -> EncodedImage:
    """A copy of ``image`` whose coded data is damaged and whose lengths are unchanged.

    The first bytes of the body that its codec declares intact (length fields, codec header:
    :func:`spiceserver.server.codecs.intact_prefix`) stay as they are; after them every
    :data:`CORRUPT_STRIDE`-th byte is inverted.  The image is never modified in place (encoded
    images may be shared between sessions).  An image type no codec declares, or with no coded
    byte, comes back unchanged.
    """
    keep = intact_prefix(image.type)
    data = bytearray(b"".join(image.body))
    if keep is None or len(data) <= keep:
        return image
    view = np.frombuffer(data, np.uint8)  # writable: it shares the bytearray
    view[keep::CORRUPT_STRIDE] ^= 0xFF
    return dataclasses.replace(image, body=(memoryview(data),))


class FrameFault:
    """drop-frames and delay-frames on one display channel's video streams: every
    ``every``-th frame left out (0: none), every frame stamped ``shift`` seconds later."""

    def __init__(self, every: int, shift: float, name: str) -> None:
        self.every = every
        self.shift = shift
        self.name = name
        self.frames = 0
        self.dropped = 0

    def drop(self) -> bool:
        """Whether to leave out the frame about to be sent."""
        self.frames += 1
        if not self.every or self.frames % self.every:
            return False
        self.dropped += 1
        logger.debug("%s: fault drop-frames: frame %d left out", self.name, self.frames)
        return True
