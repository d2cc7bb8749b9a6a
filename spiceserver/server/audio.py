"""The audio hub: one source, one encoder thread, every playback channel of every session.

A source pushes PCM from any thread into a bounded queue (:data:`MAX_PENDING_BLOCKS` blocks:
a stalled hub drops the oldest, never grows); the hub's thread cuts it into 10 ms packets,
stamps each with the capture time (a steady 10 ms step, resynchronised when the source drifts
by more than :data:`RESYNC`), encodes Opus once for all Opus clients (PyAV's libopus, 10 ms
frames: spice-common:common/snd_codec.h) and hands the packet to the loop with one
``call_soon_threadsafe``.  Listeners (the playback handlers) hear :meth:`on_audio` per packet and
:meth:`on_audio_stop` when the stream pauses: after :data:`GAP` without PCM, or
:data:`SILENCE` of digital silence (STOP/START around silence, SPICE-REFERENCE-2 §2.2).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from spiceserver.sources.audio import BLOCK_BYTES, BLOCK_FRAMES, AudioSource

__all__ = ["AudioHub", "AudioListener", "AudioPacket", "OpusEncoder", "opus_encoder"]

logger = logging.getLogger("spiceserver.audio")

#: PCM blocks waiting for the hub's thread (100: one second of audio at most).
MAX_PENDING_BLOCKS = 100
#: No PCM for this long: the stream paused (STOP).
GAP = 0.06
#: All-zero PCM for this long: STOP too (a monitor of an idle sink delivers zeros).
SILENCE = 0.5
#: Capture stamps advance 10 ms per packet (never backwards); when they fall this far behind
#: the clock (the source paused or lags) they jump to it.
RESYNC = 0.05
#: A source that delivers faster than real time gets this far ahead, then its blocks drop.
MAX_AHEAD = 1.0
#: Opus bit rate (SPICE-REFERENCE-2 §2.2: ≈ 160 B per 10 ms packet at 96 kb/s).
OPUS_BIT_RATE = 96000


@dataclass(frozen=True, slots=True)
class AudioPacket:
    """10 ms of audio: ``time`` in clock seconds at capture, raw PCM, Opus (None: not made)."""

    time: float
    raw: bytes
    opus: bytes | None


class AudioListener(Protocol):
    #: Whether this listener wants Opus packets (read by the hub's thread).
    wants_opus: bool

    def on_audio(self, packet: AudioPacket) -> None: ...

    def on_audio_stop(self) -> None: ...


class OpusEncoder:
    """PyAV's libopus: 480-frame (10 ms) packets of 48 kHz stereo S16."""

    def __init__(self) -> None:
        import av

        self._av = av
        codec: Any = av.CodecContext.create("libopus", "w")
        codec.sample_rate = 48000
        codec.layout = "stereo"
        codec.format = "s16"
        codec.bit_rate = OPUS_BIT_RATE
        codec.options = {"frame_duration": "10", "application": "audio"}
        self._codec = codec
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes | None:
        frames = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
        frame = self._av.AudioFrame.from_ndarray(frames, format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = self._pts
        self._pts += BLOCK_FRAMES
        packets = self._codec.encode(frame)
        return bytes(packets[0]) if packets else None


def opus_encoder() -> OpusEncoder | None:
    """An Opus encoder, or None (one log line why) when PyAV or its libopus is missing."""
    try:
        return OpusEncoder()
    except ImportError:
        logger.warning("audio: PyAV is not installed (the 'capture' extra): raw PCM only")
    except Exception as exc:
        logger.warning("audio: no Opus encoder (%s): raw PCM only", exc)
    return None


class AudioHub:
    """Runs ``source`` while the server runs; see the module docstring."""

    def __init__(
        self,
        source: AudioSource,
        clock: Callable[[], float],
        *,
        opus: bool = True,
    ) -> None:
        self.source = source
        self.clock = clock
        self._encoder = opus_encoder() if opus else None
        self.listeners: set[AudioListener] = set()
        #: Whether any listener takes Opus (written on the loop, read by the hub's thread).
        self._want_opus = False
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Counters for tests and the metrics line.
        self.packets = 0
        self.dropped_blocks = 0
        self.stops = 0
        self.encode_seconds = 0.0

    @property
    def opus_available(self) -> bool:
        return self._encoder is not None

    def start(self) -> None:
        """On the loop: start the hub's thread, then the source."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="spice-audio", daemon=True)
        self._thread.start()
        self.source.start(self.push)

    def close(self) -> None:
        self.source.close()
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def add_listener(self, listener: AudioListener) -> None:
        self.listeners.add(listener)
        self._want_opus = any(each.wants_opus for each in self.listeners)

    def remove_listener(self, listener: AudioListener) -> None:
        self.listeners.discard(listener)
        self._want_opus = any(each.wants_opus for each in self.listeners)

    # ------------------------------------------------------------------ source side

    def push(self, pcm: bytes) -> None:
        """PCM from the source (any thread); the oldest is dropped past one second pending."""
        with self._lock:
            self._pending.append(pcm)
            self._pending_bytes += len(pcm)
            while self._pending_bytes > MAX_PENDING_BLOCKS * BLOCK_BYTES:
                self._pending_bytes -= len(self._pending.popleft())
                self.dropped_blocks += 1
            self._wake.notify()

    # ------------------------------------------------------------------ hub thread

    def _run(self) -> None:
        buffer = bytearray()
        streaming = False
        next_time = float("-inf")
        silent = 0
        zero = bytes(BLOCK_BYTES)
        while True:
            with self._lock:
                if not self._pending and not self._stopping:
                    self._wake.wait(GAP)
                if self._stopping:
                    break
                chunks = list(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
            now = self.clock()
            if not chunks:
                if streaming:  # a gap: the source went quiet
                    streaming = False
                    buffer.clear()
                    self._to_loop(None)
                continue
            for chunk in chunks:
                buffer += chunk
            while len(buffer) >= BLOCK_BYTES:
                block = bytes(buffer[:BLOCK_BYTES])
                del buffer[:BLOCK_BYTES]
                if block == zero:
                    silent += 1
                    if silent * 0.01 >= SILENCE:
                        if streaming:
                            streaming = False
                            self._to_loop(None)
                        continue
                else:
                    silent = 0
                if not streaming or now - next_time > RESYNC:
                    next_time = max(now, next_time)
                elif next_time - now > MAX_AHEAD:
                    self.dropped_blocks += 1
                    continue
                streaming = True
                self._to_loop(self._packet(next_time, block))
                next_time += 0.01

    def _packet(self, time: float, block: bytes) -> AudioPacket:
        opus = None
        if self._encoder is not None and self._want_opus:
            started = self.clock()
            opus = self._encoder.encode(block)
            self.encode_seconds += self.clock() - started
        return AudioPacket(time=time, raw=block, opus=opus)

    def _to_loop(self, packet: AudioPacket | None) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._deliver, packet)

    # ------------------------------------------------------------------ loop side

    def _deliver(self, packet: AudioPacket | None) -> None:
        if packet is None:
            self.stops += 1
        else:
            self.packets += 1
        for listener in list(self.listeners):
            try:
                if packet is None:
                    listener.on_audio_stop()
                else:
                    listener.on_audio(packet)
            except Exception:
                logger.exception("audio listener %r failed; removed", listener)
                self.remove_listener(listener)
