"""The microphone from a real spice-gtk: a 440 Hz tone fed as its RecordChannel's audio.

The harness (``--record-tone 440``) answers the server's START (``record-start``) by handing
spice-gtk a sine through ``RecordChannel.send_data``; spice-gtk cuts it into 10 ms packets,
encodes Opus when the server advertised RECORD_CAP_OPUS (spice-gtk:src/channel-record.c), and
sends MODE, START_MARK, DATA.  The server's NumpyRecordSink must then hold PCM peaking at
440 Hz: Opus, and raw (``audio_opus=False``: no CAP_OPUS advertised).  With ``--audio desktop``
(the private PulseAudio of tests/interop/pulse.py) the microphone plays into the null sink
``spice_mic``: ``parec`` from ``spice_mic.monitor`` must record 440 Hz.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from spiceserver import NumpySource
from spiceserver.sinks.audio import NumpyRecordSink
from tests.interop.clients import GtkClient
from tests.interop.pulse import SINK, pulse_server
from tests.interop.serverthread import ServerThread

pytestmark = pytest.mark.interop

__all__ = ["pulse_server"]  # the fixture, imported for this module

PASSWORD = "record pw"
SECOND = 48000 * 4  # bytes of 48 kHz stereo S16
HARNESS = ["--session-prop", "enable-audio=true", "--record-tone", "440"]


def peak_hz(pcm: np.ndarray) -> float:
    left = pcm.reshape(-1, 2)[:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left))))
    return float(np.fft.rfftfreq(len(left), 1 / 48000)[int(np.argmax(spectrum))])


def record_events(st: ServerThread) -> list[dict[str, object]]:
    return [e for e in st.events if str(e["event"]).startswith("record_")]


@pytest.mark.parametrize("opus", [True, False], ids=["opus", "raw"])
def test_spice_gtk_microphone_reaches_the_numpy_sink(opus: bool) -> None:
    sink = NumpyRecordSink(max_frames=48000 * 4)
    with (
        ServerThread(
            NumpySource(64, 48), password=PASSWORD, microphone=sink, audio_opus=opus
        ) as st,
        GtkClient(st.uri, PASSWORD, extra_args=HARNESS) as client,
    ):
        client.wait_channel_open("record")
        start = client.wait_for("record-start", timeout=10)
        assert (start["format"], start["channels"], start["rate"]) == (1, 2, 48000)
        # 1.2 s: the first 0.2 s skipped (Opus settling), one second measured.
        assert sink.wait(int(48000 * 1.2), timeout=20)
        pcm = sink.read()
        assert abs(peak_hz(pcm[9600 : 9600 + 48000]) - 440) <= 2
        events = record_events(st)
        modes = [e["mode"] for e in events if e["event"] == "record_mode"]
        assert modes == ["opus" if opus else "raw"]
        assert [e["event"] for e in events][:3] == [
            "record_start",
            "record_mode",
            "record_start_mark",
        ]


def test_spice_gtk_microphone_is_a_desktop_source(
    pulse_server: dict[str, str], tmp_path: Path
) -> None:
    with (
        ServerThread(
            NumpySource(64, 48), password=PASSWORD, audio="desktop", audio_source=f"{SINK}.monitor"
        ) as st,
        GtkClient(st.uri, PASSWORD, extra_args=HARNESS) as client,
    ):
        client.wait_channel_open("record")
        client.wait_for("record-start", timeout=10)
        recorder = subprocess.Popen(
            [
                "parec",
                "--device=spice_mic.monitor",
                "--format=s16le",
                "--rate=48000",
                "--channels=2",
                "--raw",
            ],
            stdout=subprocess.PIPE,
            env=pulse_server,
        )
        assert recorder.stdout is not None
        got = bytearray()
        done = threading.Event()

        def read() -> None:  # until 2 s of the monitor arrived
            while len(got) < 2 * SECOND:
                chunk = recorder.stdout.read1(65536)  # type: ignore[union-attr]
                if not chunk:
                    break
                got.extend(chunk)
            done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert done.wait(20), f"parec recorded only {len(got)} bytes"
        finally:
            recorder.kill()
            recorder.wait()
        pcm = np.frombuffer(bytes(got[: 2 * SECOND]), dtype=np.int16)
        # The second second: past the onset, the sink's latency and any leading silence.
        assert abs(peak_hz(pcm[SECOND // 2 :]) - 440) <= 2
        assert any(e["event"] == "record_mode" for e in record_events(st))
