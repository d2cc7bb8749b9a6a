"""ScenarioSource: parsing and its errors, the offline renderers, live timing, start rules,
restart, and the disconnect step over a real loopback server."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import spiceserver
from spiceserver import ConfigError, ImageCompression, PatternSource, ScenarioSource, SpiceServer
from spiceserver.protocol.display import DisplayChannel
from spiceserver.protocol.enums import ChannelType, LinkError
from spiceserver.protocol.messages import CursorShape
from spiceserver.sources import ScenarioState, _scenario_script, source_from_spec
from spiceserver.sources.base import Rect, default_cursor
from tests.conftest import ROOT, run
from tests.fakeclient import LoopbackClient

EXAMPLES = ROOT / "examples" / "scenarios"
PASSWORD = "scenario"


def bgrx(rgb: tuple[int, int, int], width: int, height: int) -> np.ndarray:
    frame = np.zeros((height, width, 4), np.uint8)
    frame[..., :3] = rgb[::-1]
    return frame


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """a.png 80x60 red, b.png 30x50 blue, noise.png 40x20, cur.png 8x6 RGBA, in tmp_path."""
    Image.fromarray(np.full((60, 80, 3), (255, 0, 0), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((50, 30, 3), (0, 0, 255), np.uint8)).save(tmp_path / "b.png")
    noise = np.random.default_rng(1).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    cursor = np.zeros((6, 8, 4), np.uint8)
    cursor[..., 0] = 10  # R
    cursor[..., 1] = 20  # G
    cursor[..., 2] = 30  # B
    cursor[..., 3] = np.arange(8, dtype=np.uint8) * 30  # alpha ramp
    Image.fromarray(cursor, "RGBA").save(tmp_path / "cur.png")
    return tmp_path


class Recorder:
    """A source listener; ``display=True`` poses as a client's display channel."""

    def __init__(self, source: ScenarioSource, display: bool = False) -> None:
        self.source = source
        self.events: list[tuple[float, str, Any]] = []
        if display:
            self.channel = DisplayChannel(mini_header=True)

    def _log(self, kind: str, value: Any) -> None:
        self.events.append((asyncio.get_running_loop().time(), kind, value))

    def on_damage(self, rects: list[Rect]) -> None:
        self._log("damage", self.source.frame.copy())

    def on_resize(self, width: int, height: int) -> None:
        self._log("resize", self.source.frame.copy())

    def on_cursor(self, shape: CursorShape | None) -> None:
        self._log("cursor", shape)

    def on_cursor_move(self, x: int, y: int) -> None:
        self._log("move", (x, y))


# ---------------------------------------------------------------------- parsing


def test_the_readme_example_from_a_file(images: Path) -> None:
    path = images / "scenario.json"
    path.write_text(json.dumps({"steps": [{"show": "a.png"}, {"wait": 0.5}, {"show": "b.png"}]}))
    source = source_from_spec(f"scenario:{path}")
    assert isinstance(source, ScenarioSource)
    assert source.size == (80, 60)  # the steps before the first wait are on screen at once
    assert np.array_equal(source.frame, bgrx((255, 0, 0), 80, 60))
    assert (source.state, source.start_rule, source.duration) == ("waiting", "client", 0.5)
    states = list(source.render_steps())
    assert [(s.time, s.size) for s in states] == [(0.0, (80, 60)), (0.5, (30, 50))]
    assert np.array_equal(states[1].frame, bgrx((0, 0, 255), 30, 50))
    assert np.array_equal(source.final_frame(), states[1].frame)


def test_paths_are_relative_to_the_file_or_base_dir(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = images / "sub"
    sub.mkdir()
    (sub / "s.json").write_text('[{"show": "../b.png"}]')  # a bare list of steps is fine
    monkeypatch.chdir(sub)
    assert ScenarioSource.from_file(sub / "s.json").size == (30, 50)
    assert ScenarioSource([{"show": "b.png"}], base_dir=images).size == (30, 50)
    assert ScenarioSource([{"show": "../a.png"}]).size == (80, 60)  # default: the cwd


def test_examples_compile() -> None:
    two = ScenarioSource.from_file(EXAMPLES / "two_images.json")
    assert (two.size, two.final_state().size, two.duration) == ((320, 240), (200, 150), 0.5)
    tour = ScenarioSource.from_file(EXAMPLES / "tour.json")
    end = tour.final_state()
    assert (tour.start_rule, end.size, end.cursor, end.cursor_position) == (
        "immediately",
        (200, 150),
        None,
        (160, 120),
    )
    assert tour.duration == pytest.approx(1 + 1 + 2 + 3 * 0.9 + 1)


def test_exported() -> None:
    assert spiceserver.ScenarioSource is ScenarioSource
    assert "ScenarioSource" in spiceserver.__all__


def test_every_step_kind(images: Path) -> None:
    source = ScenarioSource(
        {
            "size": [200, 100],
            "background": "#010203",
            "steps": [
                {"fill": [9, 8, 7], "rect": [10, 10, 20, 5], "comment": "a small patch"},
                {"show": "noise.png", "at": [150, 70]},
                {"cursor": "cur.png", "hot": [7, 5]},
                {"move": [199, 99]},
            ],
        },
        base_dir=images,
    )
    expected = bgrx((1, 2, 3), 200, 100)
    expected[10:15, 10:30, :3] = (7, 8, 9)
    noise = np.asarray(Image.open(images / "noise.png").convert("RGB"))
    expected[70:90, 150:190, :3] = noise[..., ::-1]
    end = source.final_state()
    assert np.array_equal(end.frame, expected) and np.array_equal(source.frame, expected)
    assert end.cursor_position == (199, 99) and source.cursor_position == (199, 99)
    shape = end.cursor
    assert shape is not None and shape is source.cursor
    assert (shape.width, shape.height, shape.hot_x, shape.hot_y) == (8, 6, 7, 5)
    pixels = np.frombuffer(shape.pixels, np.uint8).reshape(6, 8, 4)
    assert pixels[0, 3].tolist() == [30, 20, 10, 90]  # B, G, R, straight alpha
    assert shape.unique != default_cursor().unique


def test_resize_hide_and_default_cursor(images: Path) -> None:
    source = ScenarioSource(
        [
            {"cursor": "hide"},
            {"wait": 0.1},
            {"resize": [64, 32], "fill": "#ff8000"},
            {"cursor": "default"},
            {"wait": 0.1},
            {"resize": [16, 8]},
        ],
        base_dir=images,
    )
    states = list(source.render_steps())
    assert [(s.size, s.cursor) for s in states[:2]] == [
        ((1024, 768), None),
        ((64, 32), default_cursor()),
    ]
    assert np.array_equal(states[1].frame, bgrx((255, 128, 0), 64, 32))
    assert np.array_equal(states[2].frame, np.zeros((8, 16, 4), np.uint8))


BAD: list[tuple[Any, str]] = [
    ({"steps": []}, r"steps: the scenario has no steps"),
    ({"step": []}, r"top level: unknown key 'step'"),
    ("nope", r"nope: No such file"),
    ([{"wait": -1}], r"steps\[0\] \(wait\): wait \(seconds\) must be a number"),
    ([{"wait": True}], r"steps\[0\] \(wait\)"),
    ([{"show": "missing.png"}], r"steps\[0\] \(show\): cannot load 'missing.png'"),
    ([{"fill": "red"}], r"steps\[0\] \(fill\): bad colour 'red'"),
    ([{"fill": [256, 0, 0]}], r"bad colour"),
    ([{"fill": "#000000", "rect": [0, 0, 0, 5]}], r"positive size"),
    (
        [
            {"wait": 1},
            {"repeat": 2, "steps": [{"wait": 1}, {"fill": "#00ff00", "rect": [0, 0, 5000, 10]}]},
        ],
        r"steps\[1\]\.steps\[1\] \(fill\): rect \[0, 0, 5000, 10\] does not fit the 1024x768",
    ),
    (
        [{"resize": [100, 100]}, {"pattern": 0}],
        r"steps\[1\] \(pattern\): the pattern needs at least 200x200 pixels; the surface is "
        r"100x100 here",
    ),
    # The second pass of a repeat meets the size its first pass left.
    (
        [{"repeat": 2, "steps": [{"pattern": 1}, {"resize": [100, 100]}]}],
        r"steps\[0\]\.steps\[0\] \(pattern\).*100x100",
    ),
    ([{"wait": 1, "show": "a.png"}], r"exactly one of .*found 'wait', 'show'"),
    ([{"bogus": 1}], r"got only 'bogus'"),
    ([{"show": "a.png", "att": [1, 2]}], r"steps\[0\] \(show\): unknown key 'att'"),
    ([{"show": "a.png", "at": [1000, 0]}], r"the 80x60 image at \[1000, 0\] does not fit"),
    ([{"resize": [10000, 10]}], r"resize is 10000x10; a surface is 1..8192 pixels a side"),
    ([{"resize": [8192, 8192]}], r"16777216 pixels"),
    ([{"cursor": "cur.png", "hot": [8, 0]}], r"hot spot \[8, 0\] is outside the 8x6 cursor"),
    ([{"cursor": "default", "hot": [0, 0]}], r"hot only goes with a cursor image"),
    ([{"cursor": "a.png"}, {"move": [1024, 0]}], r"steps\[1\] \(move\): \(1024, 0\) is outside"),
    ([{"pattern": 0, "fps": 10}], r"fps needs frames"),
    ([{"pattern": 0, "frames": 2, "fps": 0}], r"fps must be above 0"),
    ([{"repeat": 0, "steps": [{"wait": 1}]}], r"repeat \(a count\) must be an integer in 1"),
    ([{"repeat": 2, "steps": []}], r"nothing to repeat"),
    ([{"repeat": 2}], r"repeat needs \"steps\""),
    (
        [{"repeat": 1000, "steps": [{"repeat": 1000, "steps": [{"wait": 1}, {"wait": 1}]}]}],
        r"2000000 steps would run",
    ),
    ({"steps": [{"wait": 1}], "start": "later"}, r"start: expected one of 'client'"),
    (
        {"steps": [{"wait": 0.01}], "start": "immediately", "after": "restart"},
        r"must last at least 0.1s",
    ),
    ([{"end": 1}], r"write \{\"end\": true\}"),
    ([{"disconnect": "yes"}], r"write \{\"disconnect\": true\}"),
    ([7], r"steps\[0\]: a step is an object"),
]


@pytest.mark.parametrize(("spec", "message"), BAD)
def test_bad_scenarios_name_the_step(
    images: Path, spec: Any, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(images)
    with pytest.raises(ConfigError, match=message):
        ScenarioSource(spec, base_dir=images)


def test_bad_files(images: Path) -> None:
    (images / "broken.json").write_text('{"steps": [')
    with pytest.raises(ConfigError, match=r"broken.json: invalid JSON at line 1 column 12"):
        source_from_spec(f"scenario:{images / 'broken.json'}")
    (images / "cursor.json").write_text('[{"cursor": "a.npy"}]')
    np.save(images / "a.npy", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"cannot load cursor 'a.npy'.*B,G,R,A"):
        ScenarioSource.from_file(images / "cursor.json")
    with pytest.raises(ValueError, match="scenario:FILE"):
        source_from_spec("scenario:")


def test_too_many_image_pixels_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scenario_script, "MAX_PRELOAD_PIXELS", 4 * 100 * 100)  # not 256 MiB
    for i in range(5):
        np.save(tmp_path / f"{i}.npy", np.zeros((100, 100, 4), np.uint8))
    ScenarioSource([{"show": f"{i}.npy"} for i in (0, 1, 2, 3, 0)], base_dir=tmp_path)  # shared
    with pytest.raises(ConfigError, match=r"steps\[4\] \(show\): .*more than 40000 pixels"):
        ScenarioSource([{"show": f"{i}.npy"} for i in range(5)], base_dir=tmp_path)


# ---------------------------------------------------------------------- offline rendering


def test_pattern_steps_match_pattern_source() -> None:
    source = ScenarioSource(
        [
            {"resize": [320, 240]},
            {"pattern": 7},
            {"wait": 0.25},
            {"pattern": 3, "frames": 4, "fps": 10},
            {"wait": 1},
        ]
    )
    reference = PatternSource(320, 240, fps=0)
    states = list(source.render_steps())
    # Frame k of the animation shows at 0.25 + k/10; the last is held 1/10 s, then the wait.
    assert [s.time for s in states] == pytest.approx([0, 0.25, 0.35, 0.45, 0.55, 1.65])
    for state, n in zip(states, [7, 3, 4, 5, 6, 6], strict=True):
        assert np.array_equal(state.frame, reference.render(n)), n
    assert source.duration == pytest.approx(1.65)


def test_repeat_and_end(images: Path) -> None:
    source = ScenarioSource(
        [
            {
                "repeat": 3,
                "steps": [
                    {"fill": "#ff0000"},
                    {"wait": 0.5},
                    {"repeat": 2, "steps": [{"fill": "#00ff00"}, {"wait": 0.25}]},
                ],
            },
            {"fill": "#0000ff"},
            {"wait": 1},
            {
                "repeat": 5,
                "steps": [{"fill": "#ffffff"}, {"wait": 1}, {"end": True}, {"fill": "#000000"}],
            },
            {"fill": "#123456"},
        ],
        base_dir=images,
    )
    states = list(source.render_steps())
    colours = [tuple(int(v) for v in s.frame[0, 0, 2::-1]) for s in states]
    red, green = (255, 0, 0), (0, 255, 0)
    # A state per instant something is drawn (the second green too); the last one is the end.
    assert colours == [red, green, green] * 3 + [(0, 0, 255), (255, 255, 255), (255, 255, 255)]
    assert [s.time for s in states] == pytest.approx(
        [0, 0.5, 0.75, 1, 1.5, 1.75, 2, 2.5, 2.75, 3, 4, 5]
    )
    assert source.duration == pytest.approx(5)


def test_offline_rendering_is_deterministic() -> None:
    def render() -> list[ScenarioState]:
        return list(ScenarioSource.from_file(EXAMPLES / "tour.json").render_steps())

    first, second = render(), render()
    assert len(first) == len(second) > 10
    for a, b in zip(first, second, strict=True):
        assert (a.time, a.size, a.cursor, a.cursor_position) == (
            b.time,
            b.size,
            b.cursor,
            b.cursor_position,
        )
        assert np.array_equal(a.frame, b.frame)


# ---------------------------------------------------------------------- live


def test_live_run_follows_the_clock_and_ends_on_the_offline_frame(images: Path) -> None:
    source = ScenarioSource(
        [
            {"show": "a.png"},
            {"wait": 0.15},
            {"show": "b.png"},
            {"cursor": "cur.png"},
            {"move": [3, 4]},
            {"wait": 0.15},
            {"resize": [300, 200], "fill": [1, 2, 3]},
            {"pattern": 0, "frames": 3, "fps": 50},
            {"show": "noise.png", "at": [5, 5]},
        ],
        base_dir=images,
    )
    recorder = Recorder(source)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        await source.start()
        source.add_listener(recorder)
        assert source.state == "waiting" and not recorder.events  # a plain listener: no start
        started = loop.time()
        source.begin()
        await asyncio.wait_for(source.finished.wait(), 5)
        resizes = [(t - started, f.shape[:2]) for t, kind, f in recorder.events if kind == "resize"]
        assert [shape for _, shape in resizes] == [(50, 30), (200, 300)]
        assert 0.15 - 0.01 <= resizes[0][0] < 2
        assert 0.30 - 0.01 <= resizes[1][0] < 3
        assert [v for _, kind, v in recorder.events if kind == "move"] == [(3, 4)]
        await source.stop()

    run(scenario(), timeout=20)
    end = source.final_state()
    assert source.state == "done" and source.runs == 1
    assert np.array_equal(source.frame, end.frame)
    assert (source.cursor, source.cursor_position) == (end.cursor, end.cursor_position)


def test_client_start_rule_and_restart(images: Path) -> None:
    source = ScenarioSource(
        {
            "after": "restart",
            "steps": [
                {"show": "a.png"},
                {"wait": 0.05},
                {"show": "b.png"},
                {"move": [1, 2]},
            ],
        },
        base_dir=images,
    )

    async def scenario() -> None:
        await source.start()
        assert source.state == "waiting"
        display = Recorder(source, display=True)
        source.add_listener(display)  # a client's display channel links: the clock starts
        assert source.state == "running"
        await asyncio.wait_for(source.finished.wait(), 5)
        # Rewound for the next client: back on a.png, waiting.
        assert (source.state, source.runs, source.size) == ("waiting", 1, (80, 60))
        source.add_listener(Recorder(source))  # a cursor channel alone does not start it
        assert source.state == "waiting"
        source.add_listener(Recorder(source, display=True))
        assert source.state == "running"
        await asyncio.wait_for(source.finished.wait(), 5)
        assert source.runs == 2
        await source.stop()

    run(scenario(), timeout=20)


def test_immediately_and_looping() -> None:
    source = ScenarioSource(
        {
            "start": "immediately",
            "after": "restart",
            "steps": [{"fill": "#ff0000"}, {"wait": 0.1}, {"fill": "#00ff00"}],
        }
    )

    async def scenario() -> None:
        await source.start()
        assert source.state == "running"
        for _ in range(2):  # a waiter is woken even though the next run clears the event
            await asyncio.wait_for(source.finished.wait(), 5)
        assert source.runs >= 2
        await source.stop()

    run(scenario(), timeout=20)


def test_late_cursor_listener_gets_the_position(images: Path) -> None:
    source = ScenarioSource([{"move": [5, 6]}], base_dir=images)
    recorder = Recorder(source)

    async def scenario() -> None:
        source.add_listener(recorder)

    run(scenario(), timeout=5)
    assert [(kind, value) for _, kind, value in recorder.events] == [("move", (5, 6))]


def test_disconnect_without_a_server_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    source = ScenarioSource({"start": "immediately", "steps": [{"disconnect": True}]})

    async def scenario() -> None:
        await source.start()
        await asyncio.wait_for(source.finished.wait(), 5)

    with caplog.at_level(logging.WARNING, "spiceserver.scenario"):
        run(scenario(), timeout=10)
    assert source.disconnects == 1
    assert "no server is listening" in caplog.text


def test_disconnect_step_ends_the_sessions_over_loopback(event_loop_name: str) -> None:
    """Starts when the display channel links (not the main channel), then drops the client."""
    source = ScenarioSource(
        [{"fill": "#336699"}, {"wait": 0.1}, {"disconnect": True}, {"fill": "#996633"}]
    )

    async def scenario() -> None:
        async with SpiceServer(
            source,
            password=PASSWORD,
            port=0,
            warmup_encoders=False,
            image_compression=ImageCompression.OFF,
        ) as server:
            main = await LoopbackClient.open(server.port)
            assert await main.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
            session_id = struct.unpack_from("<I", await main.receive(103))[0]  # MAIN INIT
            assert source.state == "waiting"
            display = await LoopbackClient.open(server.port)
            assert (
                await display.link(ChannelType.DISPLAY, PASSWORD, connection_id=session_id)
                == LinkError.OK
            )
            await display.receive(3)  # SET_ACK: the display handler has started
            assert source.state == "running"
            await asyncio.wait_for(source.finished.wait(), 5)
            assert await main.closed_by_server(timeout=5)
            assert await display.closed_by_server(timeout=5)
            assert not server.sessions()
            await main.close()
            await display.close()

    run(scenario(), timeout=30, loop=event_loop_name)
    assert source.disconnects == 1
    assert np.array_equal(source.frame, source.final_frame())
    assert source.frame[0, 0, :3].tolist() == [0x33, 0x66, 0x99]
