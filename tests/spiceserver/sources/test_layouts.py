"""Synthetic sources and monitor layouts: pattern heads, ``pattern:`` specs, NumpySource's
layout callback."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from spiceserver.sources import NumpySource, PatternSource, parse_heads, source_from_spec
from spiceserver.sources.base import Head, Rect
from tests.conftest import run


class Recorder:
    """A source listener that notes resizes and heads."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_damage(self, rects: list[Rect]) -> None:
        self.events.append(("damage", len(rects)))

    def on_resize(self, width: int, height: int) -> None:
        self.events.append(("resize", (width, height)))

    def on_heads(self, heads: tuple[Head, ...]) -> None:
        self.events.append(("heads", heads))

    def on_cursor(self, shape: object) -> None: ...

    def on_cursor_move(self, x: int, y: int) -> None: ...


def test_each_head_shows_a_pattern_of_its_own_size() -> None:
    heads = (Head(0, 0, 640, 480), Head(640, 0, 400, 300))
    source = PatternSource(heads=heads, fps=0)
    assert source.size == (1040, 480) and source.heads() == heads
    frame = source.render(5)
    assert np.array_equal(frame[:480, :640], PatternSource(640, 480, fps=0).render(5))
    assert np.array_equal(frame[:300, 640:], PatternSource(400, 300, fps=0).render(5))
    assert not frame[300:, 640:].any()  # outside every head: black
    for _ in range(3):  # advancing in place gives the frame render() gives
        rects = source.advance()
    assert np.array_equal(source.frame, source.render(3))
    assert any(r.x >= 640 for r in rects)  # the second head's damage is reported too


def test_the_pattern_follows_any_layout_and_restores_its_own() -> None:
    async def scenario() -> None:
        source = PatternSource(640, 480, fps=0)
        recorder = Recorder()
        source.add_listener(recorder)
        tiny = (Head(10, 10, 50, 30), Head(60, 10, 300, 9))  # smaller than any part of it
        assert await source.apply_layout(tiny)
        assert source.size == (350, 30)
        assert source.heads() == (Head(0, 0, 50, 30), Head(50, 0, 300, 9))
        assert np.array_equal(source.frame, source.render(0))
        source.advance()
        assert recorder.events[:2] == [("resize", (350, 30)), ("heads", source.heads())]
        await source.restore_layout()
        assert source.size == (640, 480) and source.heads() == (Head(0, 0, 640, 480),)
        assert not await source.apply_layout(())

    run(scenario())


def test_pattern_specs_declare_heads() -> None:
    assert parse_heads("640x480,800x600") == (Head(0, 0, 640, 480), Head(640, 0, 800, 600))
    assert parse_heads("640x480+0+0,640x480+0+480") == (
        Head(0, 0, 640, 480),
        Head(0, 480, 640, 480),
    )
    assert parse_heads("640x480,wide") is None
    source = source_from_spec("pattern:640x480,400x300")
    assert isinstance(source, PatternSource) and source.size == (1040, 480)
    assert len(source.heads()) == 2
    assert source_from_spec("pattern:1280x800").heads() == (Head(0, 0, 1280, 800),)
    with pytest.raises(ValueError, match="WxH"):
        source_from_spec("pattern:two")
    with pytest.raises(ValueError, match="200x200"):
        source_from_spec("pattern:640x480,100x100")


def test_numpy_source_asks_the_program_and_declares_heads() -> None:
    async def scenario() -> None:
        asked: list[tuple[Head, ...]] = []

        async def accept(heads: tuple[Head, ...]) -> bool:
            asked.append(heads)
            await asyncio.sleep(0)
            return True

        heads = (Head(0, 0, 320, 200), Head(320, 0, 320, 200))
        source = NumpySource(640, 200, heads=heads, on_layout_request=accept)
        assert source.heads() == heads
        wanted = (Head(0, 0, 800, 600),)
        assert await source.apply_layout(wanted)
        assert asked == [wanted] and source.size == (800, 600) and source.heads() == wanted
        await source.restore_layout()  # asks for the original layout
        assert asked[-1] == heads and source.size == (640, 200) and source.heads() == heads

        drawn = np.full((100, 100, 4), 7, dtype=np.uint8)

        def draw_it(layout: tuple[Head, ...]) -> bool:
            source.set_layout(layout, drawn)  # the program draws the new frame itself
            return True

        source.on_layout_request = draw_it
        assert await source.apply_layout((Head(0, 0, 100, 100),))
        assert source.frame is drawn

        assert not await NumpySource(64, 48).apply_layout(wanted)  # no callback: declined
        declining = NumpySource(64, 48, on_layout_request=lambda layout: False)
        assert not await declining.apply_layout(wanted) and declining.size == (64, 48)
        with pytest.raises(ValueError, match="does not fit"):
            NumpySource(64, 48, heads=(Head(0, 0, 65, 48),))

    run(scenario())


def test_a_scenario_declares_heads_for_its_start_size() -> None:
    from spiceserver.errors import ConfigError
    from spiceserver.sources import ScenarioSource

    steps = [{"fill": [10, 20, 30]}, {"wait": 0.01}, {"resize": [300, 200]}]
    heads = [[0, 0, 320, 240], [320, 0, 320, 240]]
    source = ScenarioSource({"size": [640, 240], "heads": heads, "steps": steps})
    assert source.heads() == (Head(0, 0, 320, 240), Head(320, 0, 320, 240))
    source.replace_frame(np.zeros((200, 300, 4), np.uint8))  # what the resize step does
    assert source.heads() == (Head(0, 0, 300, 200),)
    with pytest.raises(ConfigError, match="does not fit"):
        ScenarioSource({"size": [640, 240], "heads": [[0, 0, 641, 240]], "steps": steps})
    with pytest.raises(ConfigError, match=r"heads\[0\]"):
        ScenarioSource({"size": [640, 240], "heads": [[0, 0, 0, 240]], "steps": steps})
