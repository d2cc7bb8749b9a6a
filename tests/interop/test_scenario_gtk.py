"""spice-gtk plays a scenario: it ends pixel-exact on the scenario's last frame, at its last
size, with its cursor; a disconnect step closes the client (real client)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spiceserver import ScenarioSource
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread

pytestmark = pytest.mark.interop

PASSWORD = "scenario horse"


def write_images(folder: Path) -> bytes:
    """Two noise images of different sizes, a small patch, and a 16x16 cursor; returns the
    cursor's R,G,B,A bytes (what spice-gtk hands to its cursor-set signal)."""
    rng = np.random.default_rng(7)
    for name, (width, height) in {
        "a.png": (320, 240),
        "b.png": (200, 150),
        "patch.png": (37, 21),
    }.items():
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    cursor = np.zeros((16, 16, 4), np.uint8)
    cursor[6:9, :] = (200, 30, 60, 255)  # a red cross on a transparent square
    cursor[:, 6:9] = (200, 30, 60, 255)
    Image.fromarray(cursor, "RGBA").save(folder / "cross.png")
    return cursor.tobytes()


def test_scenario_ends_on_its_last_frame_and_cursor(tmp_path: Path) -> None:
    cursor_rgba = write_images(tmp_path)
    (tmp_path / "scenario.json").write_text(
        json.dumps(
            {
                "steps": [
                    {"show": "a.png"},
                    {"wait": 0.3},
                    {"fill": "#20c040", "rect": [10, 20, 100, 50]},
                    {"cursor": "cross.png", "hot": [7, 7]},
                    {"move": [100, 80]},
                    {"wait": 0.3},
                    {"show": "b.png"},
                    {"wait": 0.3},
                    {"resize": [400, 300], "fill": [16, 32, 64]},
                    {"pattern": 5, "frames": 6, "fps": 20},
                    {"fill": [255, 255, 0], "rect": [300, 10, 90, 40]},
                    {"show": "patch.png", "at": [350, 250]},
                ]
            }
        )
    )
    source = ScenarioSource.from_file(tmp_path / "scenario.json")
    expected = source.final_state()
    assert expected.size == (400, 300)
    with ServerThread(source, password=PASSWORD) as st, GtkClient(st.uri, PASSWORD) as client:
        client.wait_for_frame(expected.frame, timeout=30)
        assert st.call(lambda: source.state) == "done"
        created = [e for e in client.events if e["event"] == "primary-create"]
        assert (created[-1]["width"], created[-1]["height"]) == (400, 300)
        event = client.wait_for(
            "cursor-set",
            lambda e: e.get("sha256") == hashlib.sha256(cursor_rgba).hexdigest(),
            timeout=20,
            since=0,
        )
        assert (event["width"], event["height"], event["hot_x"], event["hot_y"]) == (16, 16, 7, 7)
        # The last frame is held: still exactly it after the scenario has ended.
        assert np.array_equal(client.dump_frame()[..., :3], expected.frame[..., :3])


def test_disconnect_step_closes_the_client() -> None:
    source = ScenarioSource(
        [{"fill": "#336699"}, {"wait": 0.5}, {"disconnect": True}, {"fill": "#996633"}]
    )
    first = next(source.render_steps()).frame
    with ServerThread(source, password=PASSWORD) as st, GtkClient(st.uri, PASSWORD) as client:
        client.wait_for_frame(first, timeout=30)
        event = client.wait_for("disconnected", timeout=20)
        assert event["main_error"] is None  # a clean close, not an I/O error
        assert client.wait_exit(timeout=20) == 3  # "the server disconnected"
        closed = {
            e["channel"]
            for e in client.events
            if e["event"] == "channel-event" and e["channel_event"] == "closed"
        }
        assert closed == {"main", "display", "inputs", "cursor"}
        assert st.call(lambda: (source.disconnects, source.state)) == (1, "done")
        assert not st.call(lambda: st.server.sessions() if st.server else [])
