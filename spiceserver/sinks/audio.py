"""Record sinks: where the client's microphone goes (mirroring :mod:`spiceserver.sources.audio`).

A sink takes 48 kHz stereo S16LE PCM (interleaved: what the record channel asks for with
START, SPICE-REFERENCE-2 §2) already decoded, from the microphone hub's thread, never the event
loop.  It says when someone wants the microphone by calling the ``want`` callback it was
started with (any thread): the server then sends START to the client, and STOP when it is
called with False.

- :class:`NumpyRecordSink`: for embedders: a callback per packet, or a bounded buffer of
  ``int16`` frames of shape ``(n, 2)`` they :meth:`~NumpyRecordSink.read`;
- :class:`PulseAudioRecordSink`: the desktop's sound server: a null sink (``spice_mic`` by
  default, created with ``pactl load-module module-null-sink`` when missing) fed by a
  ``pacat --playback`` subprocess; its monitor, ``spice_mic.monitor``, is the microphone
  desktop programs record from.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import threading
from collections.abc import Callable

import numpy as np

__all__ = ["NumpyRecordSink", "PulseAudioRecordSink", "RecordSink", "WantMicrophone"]

logger = logging.getLogger("spiceserver.audio")

RATE = 48000
CHANNELS = 2
FRAME_BYTES = 4

#: Called by a sink (any thread) with True when someone wants the microphone, False when not.
WantMicrophone = Callable[[bool], None]


class RecordSink:
    """Base of the record sinks: :meth:`start` once, :meth:`write` PCM, :meth:`close`."""

    name = "record"

    def start(self, want: WantMicrophone) -> None:
        """On the loop, once.  The default wants the microphone for ever."""
        want(True)

    def write(self, pcm: bytes) -> None:
        """48 kHz stereo S16LE, whole frames (the hub's thread); must not block for long."""
        raise NotImplementedError

    def pause(self) -> None:
        """The client's stream stopped (STOP sent, or the client went away)."""

    def close(self) -> None:
        """The server stops (idempotent, returns promptly)."""


class NumpyRecordSink(RecordSink):
    """The microphone as numpy: ``callback(frames)`` per packet (``int16`` ``(n, 2)``, on the
    hub's thread), or without a callback a buffer of at most ``max_frames`` (default 2 s; the
    oldest are dropped) that :meth:`read` empties.  ``wanted``: whether the microphone is
    wanted from the start; :meth:`want` changes it (START / STOP to the client)."""

    name = "numpy"

    def __init__(
        self,
        callback: Callable[[np.ndarray], None] | None = None,
        *,
        max_frames: int = 2 * RATE,
        wanted: bool = True,
    ) -> None:
        if max_frames <= 0:
            raise ValueError("max_frames must be positive")
        self.callback = callback
        self.max_frames = max_frames
        self._wanted = wanted
        self._want: WantMicrophone | None = None
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._frames = 0
        self._changed = threading.Condition()
        #: Frames received in all, and dropped from the full buffer.
        self.received = 0
        self.dropped = 0
        self.pauses = 0

    def start(self, want: WantMicrophone) -> None:
        self._want = want
        want(self._wanted)

    def want(self, wanted: bool = True) -> None:
        """Ask for the microphone (True) or let it go (False); any thread."""
        self._wanted = wanted
        if self._want is not None:
            self._want(wanted)

    def write(self, pcm: bytes) -> None:
        frames = np.frombuffer(pcm, dtype=np.int16).reshape(-1, CHANNELS).copy()
        if self.callback is not None:
            self.callback(frames)
            with self._changed:
                self.received += len(frames)
                self._changed.notify_all()
            return
        with self._changed:
            self._chunks.append(frames)
            self._frames += len(frames)
            self.received += len(frames)
            while self._frames > self.max_frames:
                excess = self._frames - self.max_frames
                head = self._chunks[0]
                if len(head) <= excess:
                    self._chunks.popleft()
                    cut = len(head)
                else:
                    self._chunks[0] = head[excess:]
                    cut = excess
                self._frames -= cut
                self.dropped += cut
            self._changed.notify_all()

    def pause(self) -> None:
        with self._changed:
            self.pauses += 1
            self._changed.notify_all()

    @property
    def buffered(self) -> int:
        """Frames waiting for :meth:`read`."""
        return self._frames

    def read(self, max_frames: int | None = None) -> np.ndarray:
        """Up to ``max_frames`` (default: all) buffered frames, oldest first, as ``(n, 2)``."""
        with self._changed:
            out: list[np.ndarray] = []
            wanted = self._frames if max_frames is None else min(max_frames, self._frames)
            taken = 0
            while taken < wanted:
                head = self._chunks[0]
                need = wanted - taken
                if len(head) <= need:
                    out.append(self._chunks.popleft())
                    taken += len(head)
                else:
                    out.append(head[:need])
                    self._chunks[0] = head[need:]
                    taken += need
            self._frames -= taken
        return np.concatenate(out) if out else np.zeros((0, CHANNELS), np.int16)

    def wait(self, frames: int, timeout: float) -> bool:
        """Block until ``frames`` have been received in all (tests, scripts); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.received >= frames, timeout)


class PulseAudioRecordSink(RecordSink):
    """The client's microphone as a desktop recording device.

    A null sink named ``sink_name`` (created with ``pactl load-module module-null-sink`` if the
    server has none by that name, unloaded again at :meth:`close`) is fed by ``pacat
    --playback``; programs record from its monitor, ``<sink_name>.monitor``.  Why not
    module-pipe-source: its FIFO is opened by the sound server's own process (another user, or
    a sandbox, or PipeWire's emulation), whereas ``pacat`` speaks the native protocol the server
    already reaches for playback (``parec``), and a stalled sound server only fills a pipe we
    write without blocking (the rest is dropped and counted).
    """

    name = "desktop"

    def __init__(self, sink_name: str = "spice_mic") -> None:
        if not sink_name or not sink_name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"record sink name {sink_name!r}: letters, digits, - and _ only")
        self.sink_name = sink_name
        self._module: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        #: Bytes dropped because pacat did not keep up.
        self.dropped = 0

    @property
    def monitor(self) -> str:
        """The source desktop programs record the microphone from."""
        return f"{self.sink_name}.monitor"

    def start(self, want: WantMicrophone) -> None:
        self._ensure_sink()
        want(True)

    def _ensure_sink(self) -> None:
        listed = _pactl("list", "short", "sinks")
        if any(line.split("\t")[1:2] == [self.sink_name] for line in listed.splitlines()):
            logger.info("record: the microphone goes to the existing sink %s", self.sink_name)
            return
        self._module = _pactl(
            "load-module",
            "module-null-sink",
            f"sink_name={self.sink_name}",
            "sink_properties=device.description=SPICE-microphone",
        ).strip()
        logger.info(
            "record: created null sink %s (module %s): record from %s",
            self.sink_name,
            self._module,
            self.monitor,
        )

    def _pacat(self) -> subprocess.Popen[bytes]:
        process = self._process
        if process is not None and process.poll() is None:
            return process
        command = [
            "pacat",
            "--playback",
            f"--device={self.sink_name}",
            "--format=s16le",
            f"--rate={RATE}",
            f"--channels={CHANNELS}",
            "--raw",
            "--latency-msec=20",
            "--client-name=spiceserver",
            "--stream-name=SPICE microphone",
        ]
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise RuntimeError(f"cannot run pacat (pulseaudio-utils): {exc}") from exc
        assert process.stdin is not None
        os.set_blocking(process.stdin.fileno(), False)
        self._process = process
        logger.info(
            "record: pacat (pid %d) plays the microphone into %s", process.pid, self.sink_name
        )
        return process

    def write(self, pcm: bytes) -> None:
        if self._closed:
            return
        process = self._pacat()
        assert process.stdin is not None
        view = memoryview(pcm)
        try:
            while view:
                written = os.write(process.stdin.fileno(), view)
                view = view[written:]
        except BlockingIOError:
            self.dropped += len(view)
        except BrokenPipeError:
            assert process.stderr is not None
            error = process.stderr.read().decode(errors="replace").strip()
            logger.warning("record: pacat ended (%s): %s", process.wait(), error or "no message")
            self._process = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        process = self._process
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._module is not None:
            try:
                _pactl("unload-module", self._module)
            except RuntimeError as exc:
                logger.warning("record: %s", exc)


def _pactl(*args: str) -> str:
    try:
        done = subprocess.run(
            ["pactl", *args], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"pactl {args[0]}: {exc}") from exc
    if done.returncode != 0:
        raise RuntimeError(f"pactl {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout
