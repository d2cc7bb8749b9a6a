"""spice-gtk against our server: pixel-exact frames, auth, input, cursor (real client)."""

from __future__ import annotations

import hashlib
import queue

import numpy as np
import pytest

from spiceserver import (
    ButtonEvent,
    CursorShape,
    InputEvent,
    KeyEvent,
    LockState,
    MouseButton,
    NumpySource,
    PatternSource,
    PointerPosition,
    Rect,
    WheelEvent,
)
from spiceserver.sources.base import default_cursor
from spiceserver.sources.image import load_image
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread

pytestmark = pytest.mark.interop

PASSWORD = "correct horse"


def random_frame(width: int, height: int, seed: int) -> np.ndarray:
    frame = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    frame[..., 3] = 0
    return frame


def test_pattern_frames_are_pixel_exact() -> None:
    source = PatternSource(1024, 768)
    with ServerThread(source, password=PASSWORD) as st, GtkClient(st.uri, PASSWORD) as client:
        for channel in ("main", "display", "inputs", "cursor"):
            client.wait_channel_open(channel)
        client.wait_for("mark", timeout=20)
        for _ in range(3):  # three arbitrary animation frames, frozen one at a time
            client.wait_for("invalidate", timeout=10)
            n = st.call(lambda: (source.pause(), source.frame_index)[1])
            client.wait_for_frame(source.render(n), timeout=20)
            st.call(source.resume)


def test_numpy_updates_resizes_and_corpus_frames(corpus: object) -> None:
    source = NumpySource(frame=random_frame(640, 480, 1))
    with ServerThread(source, password=PASSWORD) as st, GtkClient(st.uri, PASSWORD) as client:
        client.wait_for_frame(source.frame, timeout=20)
        patch = random_frame(101, 37, 2)
        st.call(lambda: source.update(patch, Rect(500, 400, 101, 37)))  # clipped at the edge
        expected = source.frame.copy()
        client.wait_for_frame(expected, timeout=20)
        for name in ("desktop_xapps_1280x800.png", "testpattern_bars_1024x768.png"):
            frame = load_image(corpus / name)  # type: ignore[operator]
            st.call(lambda frame=frame: source.update(frame))  # a new size: new surface
            client.wait_for_frame(frame, timeout=30)
        odd = random_frame(333, 197, 3)
        st.call(lambda: source.update(odd))
        client.wait_for_frame(odd, timeout=20)


def test_wrong_ticket_is_refused() -> None:
    with ServerThread(NumpySource(64, 64), password=PASSWORD) as st:
        with GtkClient(st.uri, "wrong", ready_timeout=0) as client:
            event = client.wait_for(
                "channel-event",
                lambda e: str(e.get("channel_event")).startswith("error"),
                timeout=20,
            )
            assert event["channel_event"] == "error-auth"
            assert client.wait_exit(timeout=20) == 2


def test_input_from_spice_gtk_reaches_the_callback() -> None:
    received: queue.Queue[InputEvent] = queue.Queue()
    source = NumpySource(frame=random_frame(320, 240, 4))
    with (
        ServerThread(source, password=PASSWORD, on_input=received.put) as st,
        GtkClient(st.uri, PASSWORD) as client,
    ):
        client.wait_channel_open("inputs")
        client.wait_for_frame(source.frame, timeout=20)
        client.key_press(0x1E)  # A
        client.key_release(0x1E)
        client.key_press(0x11D)  # right Ctrl: spice-gtk's 0x100 | code for E0 keys
        client.key_release(0x11D)
        client.position(123, 45)
        client.button_press(1, 0)
        client.button_release(1, 1)
        client.button_press(5, 0)  # wheel down
        client.button_release(5, 0)
        expected = [
            KeyEvent(0x1E, True), KeyEvent(0x1E, False),
            KeyEvent(0xE01D, True), KeyEvent(0xE01D, False),
            PointerPosition(123, 45, 0, 0),
            ButtonEvent(MouseButton.LEFT, True, 1), ButtonEvent(MouseButton.LEFT, False, 0),
            WheelEvent(1),
        ]  # fmt: skip
        got: list[InputEvent] = []
        while len(got) < len(expected):
            event = received.get(timeout=20)
            if not isinstance(event, LockState):  # spice-gtk sends its lock state on link
                got.append(event)
        assert got == expected


def test_cursor_shape_reaches_spice_gtk() -> None:
    arrow = default_cursor()
    bgra = np.frombuffer(arrow.pixels, np.uint8).reshape(-1, 4)
    rgba = bgra[:, [2, 1, 0, 3]].tobytes()
    with (
        ServerThread(NumpySource(64, 64), password=PASSWORD) as st,
        GtkClient(st.uri, PASSWORD) as client,
    ):
        event = client.wait_for("cursor-set", timeout=20)
        assert (event["width"], event["height"]) == (arrow.width, arrow.height)
        assert (event["hot_x"], event["hot_y"]) == (arrow.hot_x, arrow.hot_y)
        assert event["sha256"] == hashlib.sha256(rgba).hexdigest()


def test_cursor_move_hide_and_new_shape() -> None:
    source = NumpySource(64, 64)
    shape = CursorShape(unique=7, width=2, height=2, hot_x=1, hot_y=1, pixels=bytes(range(16)))
    with ServerThread(source, password=PASSWORD) as st, GtkClient(st.uri, PASSWORD) as client:
        client.wait_for("cursor-set", timeout=20)
        st.call(lambda: source.move_cursor(20, 30))
        event = client.wait_for("cursor-move", timeout=20)
        assert (event["x"], event["y"]) == (20, 30)
        st.call(lambda: source.set_cursor(None))
        client.wait_for("cursor-hide", timeout=20)
        st.call(lambda: source.set_cursor(shape))
        event = client.wait_for("cursor-set", timeout=20)
        assert (event["width"], event["height"], event["hot_x"]) == (2, 2, 1)


def test_repeated_cursor_shapes_come_from_the_client_cache() -> None:
    """Arrow → I-beam → arrow: the third SET is FROM_CACHE (header only) and spice-gtk shows
    the arrow again from its cache, pixel for pixel."""
    source = NumpySource(64, 64)
    arrow = default_cursor()
    beam = CursorShape(unique=9, width=3, height=4, hot_x=1, hot_y=2, pixels=bytes(range(48)))

    def digest(shape: CursorShape) -> str:
        bgra = np.frombuffer(shape.pixels, np.uint8).reshape(-1, 4)
        return hashlib.sha256(bgra[:, [2, 1, 0, 3]].tobytes()).hexdigest()

    with ServerThread(source, password=PASSWORD) as st, GtkClient(st.uri, PASSWORD) as client:
        assert client.wait_for("cursor-set", timeout=20)["sha256"] == digest(arrow)  # INIT
        for shape in (arrow, beam, arrow, beam):  # the 1st arrow SET caches it (INIT does not)
            st.call(lambda shape=shape: source.set_cursor(shape))
            event = client.wait_for("cursor-set", timeout=20)
            assert (event["sha256"], event["hot_x"]) == (digest(shape), shape.hot_x)
        handler = next(
            c.handler
            for c in st.server.context.connections  # type: ignore[union-attr]
            if c.request is not None and c.request.channel_name == "cursor"
        )
        assert handler.channel.stats.messages_sent >= 6
        assert not [
            e for e in client.events if e["event"] == "log" and "cache" in e.get("message", "")
        ]
