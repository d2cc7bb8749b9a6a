"""Sound end to end through remote-viewer: it plays the server's 440 Hz tone into a sound card.

remote-viewer (virt-viewer 11, on an Xvfb display) plays sound with no .vv key: virt-viewer's
session calls ``spice_audio_get`` for every playback channel it is offered
(virt-viewer:src/virt-viewer-session-spice.c, channel-new).  spice-gtk plays through GStreamer
(appsrc ! audioconvert ! audioresample ! autoaudiosink, the Debian gstreamer1.0-plugins-base,
-good and -pulseaudio packages tests/run.sh installs; without them remote-viewer only logs
``GST_IS_APP_SRC`` criticals) and libpulse sends the stream to the sink ``PULSE_SINK`` names:
a second null sink ``client_sink`` of the fixture's PulseAudio
(SPICE-REFERENCE-2 §2.3), whose monitor ``parec`` records.  The recording must peak at
440 Hz ± 2 Hz once the tone plays.
"""

from __future__ import annotations

import os
import select
import subprocess
import time

import numpy as np
import pytest

from spiceserver import NumpySource
from tests.interop.clients import RemoteViewer, Xvfb
from tests.interop.pulse import pulse_server
from tests.interop.serverthread import ServerThread
from tests.interop.test_audio_gtk import SECOND, peak_hz

pytestmark = pytest.mark.interop

__all__ = ["pulse_server"]  # the fixture, imported for this module

PASSWORD = "rv audio"
CLIENT_SINK = "client_sink"


def record_until_tone(
    env: dict[str, str], device: str, seconds: float, timeout: float = 45.0
) -> bytes:
    """``parec`` of ``device`` until ``seconds`` of non-silent audio arrived (raw S16 stereo);
    the leading silence (before remote-viewer plays) is dropped."""
    command = [
        "parec",
        f"--device={device}",
        "--format=s16le",
        "--rate=48000",
        "--channels=2",
        "--raw",
        "--latency-msec=20",
    ]
    recorder = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    assert recorder.stdout is not None
    fd = recorder.stdout.fileno()
    pcm = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(pcm)} bytes of sound from {device} in {timeout}s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                raise RuntimeError(f"parec ended ({recorder.wait()})")
            if not pcm:  # skip the monitor's silence until the first sample of sound
                samples = np.frombuffer(data[: len(data) // 2 * 2], dtype=np.int16)
                nonzero = np.flatnonzero(np.abs(samples) > 100)
                if not len(nonzero):
                    continue
                data = data[nonzero[0] // 2 * 4 :]
            pcm += data
            if len(pcm) >= seconds * SECOND:
                return bytes(pcm)
    finally:
        recorder.kill()
        recorder.wait()


def test_remote_viewer_plays_the_tone(pulse_server: dict[str, str]) -> None:
    subprocess.run(
        ["pactl", "load-module", "module-null-sink", f"sink_name={CLIENT_SINK}"],
        env=pulse_server,
        check=True,
        capture_output=True,
        timeout=15,
    )
    with (
        ServerThread(NumpySource(64, 48), password=PASSWORD, audio="tone") as st,
        Xvfb(width=640, height=480) as display,
        RemoteViewer(
            display, "127.0.0.1", st.port, PASSWORD, env=pulse_server | {"PULSE_SINK": CLIENT_SINK}
        ) as viewer,
    ):
        try:
            pcm = record_until_tone(pulse_server, f"{CLIENT_SINK}.monitor", 1.5)
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(f"{exc}; remote-viewer said:\n{viewer.output()}") from exc
        # Past the onset (remote-viewer's stream ramps in), a second of the tone.
        peak = peak_hz(pcm[SECOND // 4 : SECOND // 4 + SECOND])
        assert abs(peak - 440) <= 2, f"remote-viewer played a peak at {peak:.1f} Hz"
