"""The microphone hub: every record channel, one sink, one decoder thread.

The sink says whether someone wants the microphone (:class:`~spiceserver.sinks.audio.RecordSink`
``want``); the hub gives it to the newest linked record channel (START to that client, STOP
to any other: one voice at a time, no mixing) and takes it back when the sink lets go.  The
loop hands each DATA packet, still bytes, to a queue bounded in bytes and packets
(:data:`MAX_PENDING_BYTES`, :data:`MAX_PENDING_PACKETS`; the oldest are dropped and counted);
the hub's thread decodes Opus with PyAV's libopus (48 kHz stereo, 10 ms packets:
spice-gtk:src/channel-record.c) and writes PCM to the sink.  A packet the decoder rejects
closes that client's record channel (one log line), on the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from typing import Any, Protocol

import numpy as np

from spiceserver.protocol.enums import AudioDataMode
from spiceserver.sinks.audio import RecordSink

__all__ = ["MAX_PENDING_BYTES", "MAX_PENDING_PACKETS", "MicrophoneHub", "MicrophoneListener"]

logger = logging.getLogger("spiceserver.audio")

#: Packets waiting for the hub's thread: at most one second of raw audio, or 100 packets.
MAX_PENDING_BYTES = 192_000
MAX_PENDING_PACKETS = 100


class MicrophoneListener(Protocol):
    """A record channel handler, as the hub sees it (on the loop)."""

    def set_recording(self, recording: bool) -> None: ...

    def decode_failed(self, reason: str) -> None: ...


class OpusDecoder:
    """PyAV's libopus, 48 kHz stereo, to interleaved S16 bytes."""

    def __init__(self) -> None:
        import av

        self._av = av
        codec: Any = av.CodecContext.create("libopus", "r")
        codec.sample_rate = 48000
        codec.layout = "stereo"
        self._codec = codec

    def decode(self, packet: bytes) -> bytes:
        out = []
        for frame in self._codec.decode(self._av.Packet(packet)):
            array = frame.to_ndarray()
            if frame.format.is_planar:  # (channels, n) → interleaved
                array = array.T
            if array.dtype != np.int16:  # float output: scale to S16
                array = np.clip(array * 32767.0, -32768, 32767).astype(np.int16)
            out.append(np.ascontiguousarray(array).tobytes())
        return b"".join(out)


def opus_decoder() -> OpusDecoder | None:
    """An Opus decoder, or None (one log line why) when PyAV or its libopus is missing."""
    try:
        return OpusDecoder()
    except ImportError:
        logger.warning("record: PyAV is not installed (the 'capture' extra): raw PCM only")
    except Exception as exc:
        logger.warning("record: no Opus decoder (%s): raw PCM only", exc)
    return None


#: Queue items: a packet (listener, mode, data), or None for "the stream stopped".
_Item = tuple[MicrophoneListener, AudioDataMode, bytes] | None


class MicrophoneHub:
    """Runs ``sink`` while the server runs; see the module docstring."""

    def __init__(self, sink: RecordSink, *, opus: bool = True) -> None:
        self.sink = sink
        self.opus_available = opus and opus_decoder() is not None
        self.listeners: list[MicrophoneListener] = []
        self.wanted = False
        self._pending: collections.deque[_Item] = collections.deque()
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Counters for tests and the metrics line.
        self.packets = 0
        self.bytes_in = 0
        self.dropped = 0
        self.frames_out = 0

    @property
    def active(self) -> MicrophoneListener | None:
        """The record channel that has the microphone (the newest)."""
        return self.listeners[-1] if self.listeners else None

    def start(self) -> None:
        """On the loop: the hub's thread, then the sink."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="spice-record", daemon=True)
        self._thread.start()
        self.sink.start(self._want)

    def close(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.sink.close()

    # ------------------------------------------------------------------ loop side

    def _want(self, wanted: bool) -> None:
        """The sink's callback, from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._set_wanted, wanted)

    def _set_wanted(self, wanted: bool) -> None:
        self.wanted = wanted
        self._update()

    def add_listener(self, listener: MicrophoneListener) -> None:
        previous = self.active
        self.listeners.append(listener)
        if previous is not None:
            previous.set_recording(False)
            self.stopped()
        self._update()

    def remove_listener(self, listener: MicrophoneListener) -> None:
        if listener not in self.listeners:
            return
        was_active = listener is self.active
        self.listeners.remove(listener)
        if was_active:
            self.stopped()
            self._update()

    def _update(self) -> None:
        active = self.active
        for listener in self.listeners:
            listener.set_recording(self.wanted and listener is active)

    def feed(self, listener: MicrophoneListener, mode: AudioDataMode, data: bytes) -> None:
        """One DATA packet from ``listener`` (dropped unless it has the microphone)."""
        if listener is not self.active or not self.wanted:
            self.dropped += 1
            return
        self.packets += 1
        self.bytes_in += len(data)
        self._put((listener, mode, data), len(data))

    def stopped(self) -> None:
        """The active stream ended (STOP, a new MODE, the client left): the decoder restarts."""
        self._put(None, 0)

    def _put(self, item: _Item, size: int) -> None:
        with self._lock:
            self._pending.append(item)
            self._pending_bytes += size
            while (
                self._pending_bytes > MAX_PENDING_BYTES or len(self._pending) > MAX_PENDING_PACKETS
            ):
                dropped = self._pending.popleft()
                if dropped is not None:
                    self._pending_bytes -= len(dropped[2])
                    self.dropped += 1
            self._wake.notify()

    # ------------------------------------------------------------------ hub thread

    def _run(self) -> None:
        decoder: OpusDecoder | None = None
        failed = False
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    break
                item = self._pending.popleft()
                if item is not None:
                    self._pending_bytes -= len(item[2])
            if item is None:
                decoder = None
                self._call(self.sink.pause)
                continue
            listener, mode, data = item
            if mode == AudioDataMode.OPUS:
                try:
                    if decoder is None:
                        decoder = OpusDecoder()
                    pcm = decoder.decode(data)
                except Exception as exc:
                    decoder = None
                    self._to_loop(listener.decode_failed, f"Opus packet rejected: {exc}")
                    continue
            else:
                pcm = data
            if pcm:
                self.frames_out += len(pcm) // 4
                failed = not self._call(self.sink.write, pcm, quiet=failed)

    def _call(self, method: Any, *args: Any, quiet: bool = False) -> bool:
        try:
            method(*args)
        except Exception:
            if not quiet:  # one line per failing spell, not one per packet
                logger.exception("record: the %s sink failed", self.sink.name)
            return False
        return True

    def _to_loop(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)
