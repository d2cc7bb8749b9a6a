"""Sound to a real spice-gtk: its PlaybackChannel's ``playback-data`` PCM peaks at 440 Hz.

The harness writes every PCM chunk spice-gtk decoded to a file (``--playback-pcm``) before it
emits ``playback-data``; the test waits for enough bytes, then takes the spectrum.  Opus and
raw (the server's ``audio_opus=False``); the tone source; and the desktop path: ``paplay`` of a
440 Hz WAV into a private PulseAudio's null sink, captured by the server with ``parec``; and a
scenario's tone steps (440 Hz, STOP, 1000 Hz).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from spiceserver import NumpySource, ScenarioSource
from spiceserver.protocol.enums import ChannelType
from tests.interop.clients import GtkClient
from tests.interop.pulse import SINK, pulse_server, write_tone_wav
from tests.interop.serverthread import ServerThread

pytestmark = pytest.mark.interop

__all__ = ["pulse_server"]  # the fixture, imported for this module

PASSWORD = "audio pw"
SECOND = 48000 * 4  # bytes of 48 kHz stereo S16


def harness_args(pcm_file: Path) -> list[str]:
    # The harness turns audio off by default (no devices on a test box); the PlaybackChannel
    # signals need no audio backend.
    return ["--session-prop", "enable-audio=true", "--playback-pcm", str(pcm_file)]


def peak_hz(pcm: bytes) -> float:
    left = np.frombuffer(pcm[: len(pcm) // 4 * 4], dtype=np.int16).reshape(-1, 2)[:, 0]
    spectrum = np.abs(np.fft.rfft(left.astype(np.float64) * np.hanning(len(left))))
    return float(np.fft.rfftfreq(len(left), 1 / 48000)[int(np.argmax(spectrum))])


def receive_pcm(client: GtkClient, path: Path, seconds: float, timeout: float = 20) -> bytes:
    start = client.wait_for("playback-start", timeout=timeout)
    assert (start["format"], start["channels"], start["rate"]) == (1, 2, 48000)
    client.wait_for("playback-data", lambda e: e["total"] >= seconds * SECOND, timeout=timeout)
    return path.read_bytes()


@pytest.mark.parametrize("opus", [True, False], ids=["opus", "raw"])
def test_tone_reaches_spice_gtk(tmp_path: Path, opus: bool) -> None:
    pcm_file = tmp_path / "playback.pcm"
    with (
        ServerThread(NumpySource(64, 48), password=PASSWORD, audio="tone", audio_opus=opus) as st,
        GtkClient(st.uri, PASSWORD, extra_args=harness_args(pcm_file)) as client,
    ):
        client.wait_channel_open("playback")
        pcm = receive_pcm(client, pcm_file, 1.0)
        # A second of tone (after the first 100 ms, where Opus is still settling).
        assert abs(peak_hz(pcm[SECOND // 10 : SECOND // 10 + SECOND]) - 440) <= 2
        (connection,) = [
            c
            for c in st.server.context.connections  # type: ignore[union-attr]
            if c.request is not None and c.request.channel_type == ChannelType.PLAYBACK
        ]
        assert connection.handler.mode.name == ("OPUS" if opus else "RAW")


def test_desktop_sound_reaches_spice_gtk(pulse_server: dict[str, str], tmp_path: Path) -> None:
    wav = write_tone_wav(tmp_path / "tone440.wav", seconds=4.0)
    pcm_file = tmp_path / "playback.pcm"
    with (
        ServerThread(
            NumpySource(64, 48),
            password=PASSWORD,
            audio="desktop",
            audio_source=f"{SINK}.monitor",
        ) as st,
        GtkClient(st.uri, PASSWORD, extra_args=harness_args(pcm_file)) as client,
    ):
        client.wait_channel_open("playback")
        player = subprocess.Popen(["paplay", "-d", SINK, str(wav)], env=pulse_server)
        try:
            pcm = receive_pcm(client, pcm_file, 1.5)
        finally:
            player.kill()
            player.wait()
        # Skip the onset (silence → tone); a second of the tone must peak at 440 Hz.
        assert abs(peak_hz(pcm[SECOND // 4 : SECOND // 4 + SECOND]) - 440) <= 2


def test_scenario_tone_steps_reach_spice_gtk(tmp_path: Path) -> None:
    # Tone steps play through the scenario's ToneSwitch: 440 Hz, a pause (STOP), 1000 Hz.
    scenario = ScenarioSource(
        {
            "size": [64, 48],
            "steps": [
                {"fill": "#203040"},
                {"wait": 0.5},
                {"tone": 440, "seconds": 1.0},
                {"wait": 1.5},
                {"tone": 1000, "seconds": 1.0},
                {"wait": 1.5},
            ],
        }
    )
    pcm_file = tmp_path / "playback.pcm"
    with (
        ServerThread(scenario, password=PASSWORD) as st,
        GtkClient(st.uri, PASSWORD, extra_args=harness_args(pcm_file)) as client,
    ):
        client.wait_channel_open("playback")
        first = client.wait_for("playback-start", timeout=20)
        client.wait_for("playback-stop", lambda e: e["t"] > first["t"], timeout=20)
        client.wait_for("playback-start", lambda e: e["t"] > first["t"], timeout=20)
        client.wait_for("playback-data", lambda e: e["total"] >= 1.95 * SECOND, timeout=20)
        pcm = pcm_file.read_bytes()
    assert abs(peak_hz(pcm[SECOND // 10 : SECOND * 9 // 10]) - 440) <= 2
    assert abs(peak_hz(pcm[SECOND * 11 // 10 : SECOND * 19 // 10]) - 1000) <= 2
