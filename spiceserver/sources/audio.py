"""Audio sources: what the playback channel plays.

Every source produces 48 kHz stereo S16LE PCM (interleaved, the format the playback channel
serves: spice-common:common/snd_codec.h) and hands it, in blocks of any whole number of frames,
to the ``sink`` it was started with, from whichever thread it likes.  The server's audio hub
cuts it into 10 ms packets, stamps them, encodes and fans them out; a source never paces for the
clients and never blocks on them.  A pause in the stream (no PCM for a while, or digital
silence) is how a source says it is quiet: the hub sends STOP, and START when sound comes back.

- :class:`ToneSource`: a sine of known frequency, 10 ms blocks paced on the monotonic clock
  (tests, demos);
- :class:`ToneSwitch`: a tone switched on, retuned and off while it plays (a scenario's
  ``tone`` steps);
- :class:`ClickTrack`: near-silence with a short burst wherever :meth:`ClickTrack.click` is
  called (A/V sync: :class:`~spiceserver.sources.pattern.PatternClickSource`);
- :class:`NumpyAudioSource`: the embedder pushes ``int16`` frames;
- :class:`PulseAudioSource`: the desktop's sound server, the default sink's monitor through a
  ``parec`` subprocess (pulseaudio-utils; PipeWire's pipewire-pulse serves it too).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

__all__ = [
    "BLOCK_BYTES",
    "BLOCK_FRAMES",
    "FRAME_BYTES",
    "AudioSink",
    "AudioSource",
    "ClickTrack",
    "NumpyAudioSource",
    "PulseAudioSource",
    "ToneSource",
    "ToneSwitch",
    "sound_server_reachable",
]

logger = logging.getLogger("spiceserver.audio")

RATE = 48000
CHANNELS = 2
#: One stereo S16 frame.
FRAME_BYTES = 4
#: 10 ms: the packet the playback channel sends (480 frames, 1920 bytes raw).
BLOCK_FRAMES = 480
BLOCK_BYTES = BLOCK_FRAMES * FRAME_BYTES

#: Called by a source with PCM (any thread); never blocks.
AudioSink = Callable[[bytes], None]


class AudioSource:
    """Base of the audio sources: :meth:`start` once with a sink, :meth:`close` at the end."""

    name = "audio"

    def start(self, sink: AudioSink) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop producing (idempotent; may be called from the loop, returns promptly)."""


class ToneSource(AudioSource):
    """A sine of ``frequency`` Hz at ``amplitude`` (of full scale), on both channels, produced
    in 10 ms blocks paced on ``clock`` by a thread.  ``duration`` seconds of tone (None: for
    ever), then nothing: a gap the hub ends with STOP."""

    name = "tone"

    def __init__(
        self,
        frequency: float = 440.0,
        amplitude: float = 0.3,
        duration: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.frequency = frequency
        self.amplitude = amplitude
        self.duration = duration
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def block(self, index: int) -> bytes:
        """The ``index``-th 10 ms block (phase-continuous)."""
        t = (np.arange(BLOCK_FRAMES) + index * BLOCK_FRAMES) / RATE
        wave = np.sin(2 * math.pi * self.frequency * t) * (self.amplitude * 32767)
        pcm = np.repeat(wave.astype(np.int16), CHANNELS)
        return pcm.tobytes()

    def start(self, sink: AudioSink) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(sink,), name="spice-audio-tone", daemon=True
        )
        self._thread.start()

    def _run(self, sink: AudioSink) -> None:
        start = self.clock()
        blocks = None if self.duration is None else round(self.duration * 100)
        index = 0
        while not self._stop.is_set() and (blocks is None or index < blocks):
            due = start + index * 0.01
            wait = due - self.clock()
            if wait > 0 and self._stop.wait(wait):
                break
            if wait < -0.2:  # stalled (a suspended process): restart the pacing, no burst
                start, index = self.clock(), 0
            sink(self.block(index))
            index += 1

    def close(self) -> None:
        self._stop.set()


class ToneSwitch(AudioSource):
    """A tone that :meth:`set` switches on (a frequency, for ``seconds`` or for ever), retunes
    or switches off (None), from any thread.  Each tone is a :class:`ToneSource` of its own
    (paced from the moment it is set); PCM of a tone that was replaced is dropped, so two never
    overlap.  While off it produces nothing: the hub's STOP."""

    name = "tone-switch"

    def __init__(self, amplitude: float = 0.3) -> None:
        self.amplitude = amplitude
        self._lock = threading.Lock()
        self._sink: AudioSink | None = None
        self._tone: ToneSource | None = None
        #: The last :meth:`set` before :meth:`start` (played when the sink arrives).
        self._wanted: tuple[float | None, float | None] = (None, None)

    @property
    def frequency(self) -> float | None:
        """The tone playing or due (None: off)."""
        with self._lock:
            tone = self._tone
            return self._wanted[0] if tone is None else tone.frequency

    def start(self, sink: AudioSink) -> None:
        with self._lock:
            self._sink = sink
        self.set(*self._wanted)

    def set(self, frequency: float | None, seconds: float | None = None) -> None:
        """Play ``frequency`` Hz (for ``seconds``; None: until the next set), or stop (None)."""
        with self._lock:
            old, self._tone = self._tone, None
            self._wanted = (frequency, seconds)
            sink = self._sink
            if frequency is not None and sink is not None:
                tone = ToneSource(frequency, self.amplitude, seconds)
                self._tone = tone
                tone.start(lambda pcm: self._forward(tone, sink, pcm))
        if old is not None:
            old.close()

    def _forward(self, tone: ToneSource, sink: AudioSink, pcm: bytes) -> None:
        with self._lock:  # the sink never blocks (AudioSink): fine under the lock
            if self._tone is tone:
                sink(pcm)

    def close(self) -> None:
        with self._lock:
            old, self._tone, self._sink = self._tone, None, None
        if old is not None:
            old.close()


class ClickTrack(AudioSource):
    """Continuous 10 ms blocks, paced on ``clock`` like :class:`ToneSource`, that are silent
    but for one LSB per block (digital silence would make the hub STOP between clicks, and
    clients restart their stream), with a click — ``click_seconds`` of a ``frequency`` Hz
    sine burst — starting where :meth:`click` put it.

    A block is pushed at its due time *d* and holds the audio of [*d* − 10 ms, *d*): a click
    at clock time *t* lands in the first block due after *t*, at *t*'s offset in it (so it is
    on the wire at most 10 ms after *t*, and its sample position says *t*)."""

    name = "clicks"

    def __init__(
        self,
        frequency: float = 2000.0,
        click_seconds: float = 0.005,
        amplitude: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        t = np.arange(round(click_seconds * RATE)) / RATE
        self._burst = (np.sin(2 * math.pi * frequency * t) * (amplitude * 32767)).astype(np.int16)
        self._lock = threading.Lock()
        self._clicks: deque[float] = deque(maxlen=100)
        self._stop = threading.Event()
        #: (label, clock time) of the last clicks, newest last (for benchmarks).
        self.log: deque[tuple[int, float]] = deque(maxlen=10_000)
        #: Clock time the first block is due (the stream's first sample is 10 ms earlier);
        #: pacing restarts after a stall set it anew.  None before the first block.  A sink
        #: that notes the clock itself when the first block arrives is late by however
        #: long its thread took to wake.
        self.first_due: float | None = None

    def click(self, label: int = 0, at: float | None = None) -> None:
        """A click at clock time ``at`` (default now); any thread.  ``label`` (a frame
        number, say) goes into :attr:`log` with the time."""
        when = self.clock() if at is None else at
        with self._lock:
            self._clicks.append(when)
            self.log.append((label, when))

    def start(self, sink: AudioSink) -> None:
        threading.Thread(
            target=self._run, args=(sink,), name="spice-audio-clicks", daemon=True
        ).start()

    def _run(self, sink: AudioSink) -> None:
        start = self.first_due = self.clock() + 0.01
        index = 0
        carry = np.zeros(0, np.int16)  # the part of a burst that spills into the next block
        while not self._stop.is_set():
            due = start + index * 0.01
            wait = due - self.clock()
            if wait > 0 and self._stop.wait(wait):
                break
            if wait < -0.2:  # stalled: restart the pacing, no burst of blocks
                start, index = self.clock(), 0
                due = self.first_due = start
            mono = np.zeros(BLOCK_FRAMES + len(self._burst), np.int16)
            mono[: len(carry)] = carry
            with self._lock:
                while self._clicks and self._clicks[0] < due:
                    at = self._clicks.popleft()
                    offset = min(max(0, round((at - (due - 0.01)) * RATE)), BLOCK_FRAMES - 1)
                    mono[offset : offset + len(self._burst)] = self._burst
            carry = mono[BLOCK_FRAMES:].copy()
            block = mono[:BLOCK_FRAMES]
            if not block.any():
                block[0] = 1  # not digital silence: the stream goes on between clicks
            sink(np.repeat(block, CHANNELS).tobytes())
            index += 1

    def close(self) -> None:
        self._stop.set()


class NumpyAudioSource(AudioSource):
    """The embedder pushes PCM: :meth:`push` ``int16`` frames of shape ``(n, 2)`` (or a flat
    interleaved array) at the pace it plays them; stop pushing for silence."""

    name = "numpy"

    def __init__(self) -> None:
        self._sink: AudioSink | None = None

    def start(self, sink: AudioSink) -> None:
        self._sink = sink

    def push(self, frames: np.ndarray) -> None:
        """Any thread.  Dropped when the server is not running."""
        array = np.asarray(frames)
        if array.dtype != np.int16:
            raise TypeError(f"audio frames must be int16, got {array.dtype}")
        if array.ndim == 2 and array.shape[1] != CHANNELS:
            raise ValueError(f"audio frames must be stereo, shape (n, 2); got {array.shape}")
        sink = self._sink
        if sink is not None:
            sink(np.ascontiguousarray(array).tobytes())

    def close(self) -> None:
        self._sink = None


def sound_server_reachable(timeout: float = 3.0) -> bool:
    """Whether ``pactl info`` reaches a PulseAudio (or pipewire-pulse) server."""
    if shutil.which("pactl") is None or shutil.which("parec") is None:
        return False
    try:
        result = subprocess.run(
            ["pactl", "info"], capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


class PulseAudioSource(AudioSource):
    """The desktop's sound: ``parec`` records ``device`` (default: the default sink's monitor,
    ``@DEFAULT_MONITOR@``) as raw 48 kHz stereo S16LE; a thread reads its pipe.

    ``parec`` rather than libpulse through ctypes (pasimple): no Python dependency, a crash of
    the sound stack cannot take the server down, and it costs ~0.3 % of a core at 10 ms
    fragments (README "Sound").  A null sink's monitor delivers nothing while the sink is
    suspended: that gap is the hub's STOP."""

    name = "desktop"

    def __init__(self, device: str | None = None) -> None:
        self.device = device or "@DEFAULT_MONITOR@"
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, sink: AudioSink) -> None:
        command = [
            "parec",
            f"--device={self.device}",
            "--format=s16le",
            f"--rate={RATE}",
            f"--channels={CHANNELS}",
            "--raw",
            "--latency-msec=10",
            "--client-name=spiceserver",
            "--stream-name=SPICE playback",
        ]
        try:
            self._process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            raise RuntimeError(f"cannot run parec: {exc}") from exc
        logger.info("audio: capturing %s with parec (pid %d)", self.device, self._process.pid)
        self._thread = threading.Thread(
            target=self._run, args=(sink,), name="spice-audio-parec", daemon=True
        )
        self._thread.start()

    def _run(self, sink: AudioSink) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        fd = process.stdout.fileno()
        while True:
            try:
                data = os.read(fd, BLOCK_BYTES * 4)
            except OSError:
                break
            if not data:
                break
            sink(data)
        if not self._closed:
            assert process.stderr is not None
            error = process.stderr.read().decode(errors="replace").strip()
            logger.warning("audio: parec ended (%s): %s", process.wait(), error or "no message")

    def close(self) -> None:
        self._closed = True
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
