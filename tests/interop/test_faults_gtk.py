"""spice-gtk under each ``--fault``: what a real client does when the server misbehaves.

Each test asserts what spice-gtk 0.42 (Debian) was observed to do, then checks that the server
still serves a fresh client.  Every wait is bounded; a client that crashes is a finding, not a
hang (GtkClient notices the harness exit).

Findings (see README "Fault injection"):

* delay: frames stay pixel-exact, only late; nothing is logged.
* close-after: the channel emits CLOSED (a graceful close is not an error,
  ``spice-channel.c`` ``spice_channel_iterate()``/``spice_channel_delayed_unref()``).  A display
  or inputs channel goes alone and the session lives on; the harness ends the session when
  main closes, as virt-viewer does.
* unknown-message: logged as CRITICAL "failed to parse message: <channel> type 65535" and
  skipped (``spice_channel_recv_msg()``: the generated demarshaller returns NULL); the channel
  keeps working, and the message still counts towards the ACK window.
* corrupt-image: raw bitmaps show the damaged pixels; QUIC runs out of words
  (``quic.c`` ``more_io_words``) and the canvas aborts the process (SIGABRT,
  ``canvas_base.c`` ``canvas_get_image_internal: surface != NULL``); LZ fails an assertion in
  ``lz_decompress_tmpl.c`` which is a fatal g_error (SIGTRAP); GLZ references an image that is
  not in the window and the display channel waits for it forever, silently, while the rest
  of the client stays alive (``decode-glz.c`` ``glz_decoder_window_bits()``).
"""

from __future__ import annotations

import queue
import signal
import time
from typing import Any

import numpy as np
import pytest

from spiceserver import ImageCompression, InputEvent, KeyEvent, NumpySource
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread

pytestmark = pytest.mark.interop

PASSWORD = "fault lines"
WIDTH, HEIGHT = 320, 240


def make_frame(seed: int) -> np.ndarray:
    """Half flat grey (runs for LZ/GLZ), half noise (QUIC's kind of image); X = 0."""
    frame = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)
    frame[:, : WIDTH // 2] = 120
    frame[..., 3] = 0
    return frame


def server(source: NumpySource, *faults: str, **options: Any) -> ServerThread:
    return ServerThread(source, password=PASSWORD, faults=list(faults), **options)


def logs(client: GtkClient, level: str | None = None) -> list[str]:
    return [
        e["message"]
        for e in client.events
        if e["event"] == "log" and (level is None or e["level"] == level)
    ]


def channel_events(client: GtkClient, channel: str) -> list[str]:
    return [
        e["channel_event"]
        for e in client.events
        if e["event"] == "channel-event" and e["channel"] == channel
    ]


def wait_key(received: queue.Queue[InputEvent], timeout: float = 20.0) -> KeyEvent:
    deadline = time.monotonic() + timeout
    while True:
        event = received.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(event, KeyEvent):
            return event


def serves_a_fresh_client(st: ServerThread, source: NumpySource) -> None:
    """After the faulty session the server still serves: a new spice-gtk gets exact pixels."""
    with GtkClient(st.uri, PASSWORD) as client:
        client.wait_for_frame(source.frame, timeout=30)


def test_delayed_frames_stay_exact() -> None:
    delay = 0.4
    received: queue.Queue[InputEvent] = queue.Queue()
    source = NumpySource(frame=make_frame(1))
    with server(source, f"delay:*:{delay}", on_input=received.put) as st:
        with GtkClient(st.uri, PASSWORD) as client:
            client.wait_for_frame(source.frame, timeout=30)
            update = make_frame(2)
            started = time.monotonic()
            st.call(lambda: source.update(update))
            client.wait_for_frame(update, timeout=30)
            assert time.monotonic() - started >= delay
            client.key_press(0x1E)  # client → server is not delayed; the channel still works
            assert wait_key(received) == KeyEvent(0x1E, True)
            assert logs(client) == []  # a slow server is nothing to complain about
            assert client.returncode is None
        serves_a_fresh_client(st, source)


def test_display_closed_after_n_messages_leaves_the_session_alive() -> None:
    received: queue.Queue[InputEvent] = queue.Queue()
    source = NumpySource(frame=make_frame(3))
    # spice-gtk advertises MONITORS_CONFIG: SET_ACK, the start-up PING, SURFACE_CREATE,
    # MONITORS_CONFIG, DRAW_COPY, MARK, then the next update's DRAW_COPY is the 7th and last.
    with server(source, "close-after:display:7", on_input=received.put) as st:
        with GtkClient(st.uri, PASSWORD) as client:
            client.wait_for_frame(source.frame, timeout=30)
            update = make_frame(4)
            st.call(lambda: source.update(update))
            client.wait_for(
                "channel-event",
                lambda e: e["channel"] == "display" and e["channel_event"] != "opened",
                timeout=20,
            )
            assert channel_events(client, "display") == ["opened", "closed"]  # no error event
            client.wait_for_frame(update, timeout=10)  # the 6th message was drawn; surface kept
            assert channel_events(client, "main") == ["opened"]
            client.key_press(0x1E)
            assert wait_key(received) == KeyEvent(0x1E, True)
            assert client.returncode is None and logs(client) == []
        serves_a_fresh_client(st, source)


def test_main_closed_mid_session_ends_the_session() -> None:
    source = NumpySource(frame=make_frame(5))
    # Main sends INIT, NAME, UUID, MULTI_MEDIA_TIME, PING, the net test's two PINGs, the first
    # unknown message, then CHANNELS_LIST (9); the second unknown message, 12 s later, is the
    # 10th: main closes then, with the display up (12 s: room for a loaded CI machine to show
    # the first frame).  The agent off: its messages (caps, tokens) would change the count.
    with server(source, "close-after:main:10", "unknown-message:main:2:12", agent=False) as st:
        with GtkClient(st.uri, PASSWORD) as client:
            client.wait_for_frame(source.frame, timeout=11)
            assert client.wait_exit(timeout=30) == 3  # the harness: "server disconnected"
            assert channel_events(client, "main") == ["opened", "closed"]
            disconnected = client.wait_for("disconnected", timeout=1, since=0)
            assert disconnected["main_error"] is None  # a clean close, not an I/O error
            # Both unknown messages arrived (the 2nd is the 10th message), both were skipped.
            assert logs(client, "critical") == ["failed to parse message: main-1:0 type 65535"] * 2
        serves_a_fresh_client(st, source)  # (its main will close too, 12 s in)


def test_unknown_message_is_logged_and_skipped() -> None:
    received: queue.Queue[InputEvent] = queue.Queue()
    source = NumpySource(frame=make_frame(6))
    with server(source, "unknown-message:*:2:0.2", on_input=received.put) as st:
        with GtkClient(st.uri, PASSWORD) as client:
            client.wait_for_frame(source.frame, timeout=30)
            expected = sorted(
                f"failed to parse message: {name}-{kind}:0 type 65535"
                for name, kind in (("main", 1), ("display", 2), ("inputs", 3), ("cursor", 4))
                for _ in range(2)
            )
            deadline = time.monotonic() + 20
            while len(logs(client, "critical")) < len(expected) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sorted(logs(client, "critical")) == expected
            update = make_frame(7)
            st.call(lambda: source.update(update))
            client.wait_for_frame(update, timeout=30)
            client.key_press(0x1E)
            assert wait_key(received) == KeyEvent(0x1E, True)
            assert client.returncode is None
            assert all(
                e == ["opened"]
                for e in (
                    channel_events(client, c) for c in ("main", "display", "inputs", "cursor")
                )
            )
        serves_a_fresh_client(st, source)


def corrupted_bitmap(frame: np.ndarray) -> np.ndarray:
    """What corrupt_image does to a raw 32BIT bitmap: every 16th pixel byte inverted."""
    damaged = frame.copy()
    damaged.reshape(-1)[::16] ^= 0xFF
    return damaged


@pytest.mark.parametrize(
    "mode",
    [ImageCompression.OFF, ImageCompression.QUIC, ImageCompression.LZ, ImageCompression.GLZ],
    ids=lambda m: m.name.lower(),
)
def test_corrupt_image(mode: ImageCompression) -> None:
    """The first image is clean (EVERY_N = 2), the next update's image is corrupt."""
    received: queue.Queue[InputEvent] = queue.Queue()
    source = NumpySource(frame=make_frame(8))
    with server(source, "corrupt-image:2", image_compression=mode, on_input=received.put) as st:
        with GtkClient(st.uri, PASSWORD) as client:
            client.wait_for_frame(source.frame, timeout=30)
            client.wait_for("mark", timeout=10)  # the first frame is complete
            since = client.event_index
            update = make_frame(9)
            st.call(lambda: source.update(update))
            if mode is ImageCompression.OFF:
                # No decoder: the damage is drawn as it came, and nothing notices.
                client.wait_for_frame(corrupted_bitmap(update), timeout=30)
                assert client.returncode is None and logs(client) == []
            elif mode is ImageCompression.QUIC:
                assert client.wait_exit(timeout=20) == -signal.SIGABRT
                assert logs(client, "warning") == ["more_io_words: no more words\n"]
                (critical,) = logs(client, "critical")
                assert "canvas_get_image_internal: condition `surface != NULL' failed" in critical
            elif mode is ImageCompression.LZ:
                assert client.wait_exit(timeout=20) == -signal.SIGTRAP  # g_error: G_BREAKPOINT
                (error,) = logs(client, "error")
                assert "lz_decompress_tmpl.c" in error and "assertion" in error
            else:
                # GLZ: the display channel waits for an image that never comes.  Nothing is
                # logged, the process lives and answers, inputs still work.
                with pytest.raises(TimeoutError):
                    client.wait_for(("invalidate", "mark"), timeout=3, since=since)
                client.ping()
                client.key_press(0x1E)
                assert wait_key(received) == KeyEvent(0x1E, True)
                assert client.returncode is None and logs(client) == []
                assert channel_events(client, "display") == ["opened"]
        serves_a_fresh_client(st, source)
