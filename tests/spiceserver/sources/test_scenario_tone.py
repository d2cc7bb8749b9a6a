"""Scenario ``tone`` steps: checked up front, and played through the server's real audio hub.

In memory: the SpiceServer takes the scenario's ToneSwitch as its sound; a hub listener collects
the 10 ms packets (events, no sleeps) and their spectrum says which tone played.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from spiceserver import ConfigError, ScenarioSource, SpiceServer
from spiceserver.server.audio import AudioPacket
from spiceserver.sources.audio import ToneSwitch
from tests.conftest import run

PASSWORD = "tone-pw"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"tone": "loud"}, r'steps\[0\] \(tone\): tone is a frequency in Hz or "off"'),
        ({"tone": 5}, r"tone \(Hz\) must be a number in 20\.\.20000, got 5"),
        ({"tone": 30000}, r"in 20\.\.20000, got 30000"),
        ({"tone": True}, r"tone \(Hz\) must be a number"),
        ({"tone": 440, "seconds": -1}, r"seconds must be a number in 0\.\.86400"),
        ({"tone": 440, "seconds": 0.001}, r"seconds must be at least 0\.01"),
        ({"tone": "off", "seconds": 1}, r'seconds only goes with a frequency, not "off"'),
        ({"tone": 440, "volume": 1}, r"unknown key 'volume' \(options: seconds\)"),
    ],
)
def test_bad_tone_steps_name_the_step(step: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ScenarioSource([step, {"wait": 1}])


def test_only_a_scenario_with_tones_has_sound() -> None:
    assert ScenarioSource([{"fill": "#ff0000"}]).audio_source() is None
    nested = ScenarioSource([{"repeat": 2, "steps": [{"tone": 440}, {"wait": 0.1}]}])
    assert isinstance(nested.audio_source(), ToneSwitch)
    # Sound takes no scenario time, and is not part of the offline states.
    assert nested.duration == pytest.approx(0.2)
    assert [state.time for state in nested.render_steps()] == [0.0, pytest.approx(0.2)]


def test_a_scenario_with_tones_conflicts_with_another_audio_mode() -> None:
    with pytest.raises(ConfigError, match=r"plays its own sound \(tone steps\): drop audio='tone'"):
        SpiceServer(ScenarioSource([{"tone": 440}]), password=PASSWORD, audio="tone")


class Collector:
    """A hub listener: the packets of each stream between STOPs (on the loop)."""

    wants_opus = False

    def __init__(self) -> None:
        self.streams: list[list[AudioPacket]] = [[]]
        self.changed = asyncio.Event()

    def on_audio(self, packet: AudioPacket) -> None:
        self.streams[-1].append(packet)
        self.changed.set()

    def on_audio_stop(self) -> None:
        self.streams.append([])
        self.changed.set()

    async def wait_stops(self, stops: int) -> None:
        while len(self.streams) <= stops:
            self.changed.clear()
            await self.changed.wait()


def peak_hz(packets: list[AudioPacket]) -> float:
    pcm = np.frombuffer(b"".join(p.raw for p in packets), dtype=np.int16)
    left = pcm.reshape(-1, 2)[:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left))))
    return float(np.fft.rfftfreq(len(left), 1 / 48000)[int(np.argmax(spectrum))])


def test_tone_steps_play_through_the_server_in_order() -> None:
    async def scenario() -> None:
        source = ScenarioSource(
            {
                "start": "immediately",
                "steps": [
                    {"tone": 440, "seconds": 0.3},
                    {"wait": 0.5},
                    {"tone": 1000},  # for ever, until the next tone step
                    {"wait": 0.3},
                    {"tone": "off"},
                ],
            }
        )
        server = SpiceServer(source, password=PASSWORD, warmup_encoders=False, port=0)
        hub = server._audio
        assert hub is not None and hub.source is source.audio_source()
        collector = Collector()
        hub.add_listener(collector)
        hub.start()
        await source.start()  # "immediately": the clock starts, and the first tone with it
        await collector.wait_stops(2)
        first, second = collector.streams[:2]
        # 0.3 s of 440 Hz: 30 packets; 0.3 s of 1000 Hz, give or take a packet of pacing.
        assert len(first) == 30
        assert 27 <= len(second) <= 33
        assert abs(peak_hz(first) - 440) <= 2
        assert abs(peak_hz(second) - 1000) <= 4
        # Stamped on the server's clock: the second tone starts ~0.5 s after the first.
        assert 0.45 <= second[0].time - first[0].time <= 0.6
        await source.finished.wait()
        await source.stop()
        await server.close()

    run(scenario(), timeout=20)
