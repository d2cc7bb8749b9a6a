"""Scenario steps ``photo`` and ``video`` (issue 16 item 4): deterministic synthetic pictures,
offline and live; a scenario video becomes a stream, in memory (``tests.memory``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from spiceserver import ConfigError, ScenarioSource
from spiceserver.server.codecs import classify
from spiceserver.sources._scenario_media import PAN, photo_pixels
from spiceserver.sources.base import Rect
from tests.conftest import run
from tests.memory import ready
from tests.spiceserver.server.test_jpeg import open_display
from tests.spiceserver.server.test_streams import STREAM_CAPS, StreamDisplay, stream_server

SIZE = [320, 240]


def test_a_photo_is_smooth_and_the_same_every_time() -> None:
    spec = {"size": SIZE, "steps": [{"photo": [10, 20, 200, 120], "seed": 5}]}
    a, b = ScenarioSource(spec).final_frame(), ScenarioSource(spec).final_frame()
    assert np.array_equal(a, b)
    photo = a[20:140, 10:210]
    assert np.array_equal(photo, photo_pixels(200, 120, 5))
    assert classify(photo).smooth  # the JPEG path's test
    assert not a[:20].any()  # the rest stays background
    other = ScenarioSource({"size": SIZE, "steps": [{"photo": [10, 20, 200, 120], "seed": 6}]})
    assert not np.array_equal(other.final_frame(), a)


def test_a_video_plays_its_frames_and_moves() -> None:
    source = ScenarioSource(
        {
            "size": SIZE,
            "background": [0, 0, 90],
            "steps": [
                {
                    "video": [0, 0, 96, 96],
                    "frames": 10,
                    "fps": 20,
                    "motion": [8, 4],
                    "trail": "#202020",
                },
                {"wait": 0.5},
            ],
        }
    )
    states = list(source.render_steps())
    assert [s.time for s in states][:3] == pytest.approx([0, 0.05, 0.1])
    assert source.duration == pytest.approx(10 / 20 + 0.5)
    texture = photo_pixels(96 + 64, 96, 1)
    for k in (0, 1, 9):
        frame = states[k].frame
        x, y = 8 * k, 4 * k
        shift = PAN * k
        assert np.array_equal(frame[y : y + 96, x : x + 96], texture[:, shift : shift + 96]), k
    last = states[-1].frame
    assert tuple(last[0, 0, :3]) == (0x20, 0x20, 0x20)  # what the video left behind
    assert tuple(last[-1, -1, :3]) == (90, 0, 0)  # background (B, G, R)


BAD: list[tuple[Any, str]] = [
    ([{"video": [300, 0, 96, 96]}], r"steps\[0\] \(video\): frame 0 at .* does not fit"),
    ([{"video": [0, 0, 96, 96], "frames": 40, "motion": [8, 0]}], r"frame 39 at"),
    ([{"video": [0, 0, 96]}], r"video is \[x, y, width, height\]"),
    ([{"video": [0, 0, 96, 96], "fps": 0}], r"fps must be above 0"),
    ([{"video": [0, 0, 96, 96], "motion": "left"}], r"motion is \[dx, dy\]"),
    ([{"video": [0, 0, 96, 96], "speed": 2}], r"unknown key 'speed'"),
    ([{"photo": [-1, 0, 10, 10]}], r"photo .* needs x, y >= 0"),
    ([{"photo": [0, 0, 400, 10]}], r"does not fit the 320x240 surface"),
]


@pytest.mark.parametrize(("steps", "message"), BAD)
def test_bad_media_steps_name_the_step(steps: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ScenarioSource({"size": SIZE, "steps": steps})


def test_a_scenario_video_streams_and_ends_exact_in_memory() -> None:
    video = Rect(64, 48, 160, 112)
    spec = {
        "size": SIZE,
        "background": [0, 90, 0],
        "steps": [
            {"video": [video.x, video.y, video.width, video.height], "frames": 75},
            {"wait": 30},
        ],
    }

    async def scenario() -> None:
        source = ScenarioSource(spec)
        server = await ready(stream_server(source, lossless_refresh=0.3))
        await source.start()  # the memory harness serves no socket: nothing starts it
        _main, plain = await open_display(server, STREAM_CAPS, *SIZE)
        display = StreamDisplay(plain.client, plain.canvas)
        canvas = display.canvas
        canvas.apply = lambda body: canvas.types.append(body[65])  # type: ignore[method-assign]
        await display.until(lambda: display.created and display.destroyed)  # played, ended
        (session,) = server.sessions()
        assert session.metrics.streams == 1 and session.metrics.stream_frames >= 10
        await server.close()
        await source.stop()

    run(scenario())
