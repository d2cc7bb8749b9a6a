"""Video streams, continued (issue 16): a candidate's frames go as JPEG while it is detected,
the stream's rate follows the link, a window over the video clips the stream instead of
ending it, and the toolkit (record, fault, metrics) sees streams.  The whole stack in memory
(``tests.memory``) with an injected clock, as in test_streams.py.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from spiceserver import ImageCompression
from spiceserver.errors import ConfigError
from spiceserver.faults import Fault
from spiceserver.protocol.enums import DisplayCap, DisplayClientMsg, ImageType, VideoCodec
from spiceserver.protocol.main import mm_time
from spiceserver.record import MemoryRecorder
from spiceserver.server.channels.display import update_loop
from spiceserver.server.channels.display.lossy import subtract
from spiceserver.server.channels.display.streams import BITS_PER_PIXEL, QUALITIES, VideoStream
from spiceserver.sources.base import Rect
from tests.conftest import run
from tests.fakeclient import frame
from tests.spiceserver.server.test_jpeg import psnr
from tests.spiceserver.server.test_streams import (
    VIDEO,
    StreamDisplay,
    _handler,
    idle,
    show,
    start,
    until_streaming,
    video_frame,
)


def count_types(display: StreamDisplay) -> None:
    """Record image types without decoding (the reference QUIC decoder is slow)."""
    canvas = display.canvas
    canvas.apply = lambda body: canvas.types.append(body[65])  # type: ignore[method-assign]


# ---------------------------------------------------------------------- candidates


@pytest.fixture
def no_net_test_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """JPEG "auto": the first frame waits for the net test, which this harness's main channel
    never answers; a link never measured counts as fast, as these tests want."""
    monkeypatch.setattr(update_loop, "NET_TEST_TIMEOUT", 0.0)


@pytest.mark.usefixtures("no_net_test_wait")
def test_a_candidates_frames_go_as_jpeg_on_a_fast_link_not_to_a_lossless_client() -> None:
    async def scenario(caps: list[int], options: dict[str, object], most: int = 8) -> list[int]:
        server, source, display, clock = await start(caps, **options)
        count_types(display)
        before = len(display.canvas.types)
        k = 0
        while not display.created and k < most:
            await show(source, display, clock, k)
            k += 1
        await server.close()
        return display.canvas.types[before:]

    # JPEG "auto" on a link never measured slow: images lossless, but a candidate's frames
    # JPEG from its second update on (the stream that follows is lossy anyway).
    mjpeg = [DisplayCap.CODEC_MJPEG, DisplayCap.STREAM_REPORT]
    types = run(scenario(mjpeg, {"jpeg_wan_compression": "auto"}, most=30))
    assert types[0] == ImageType.QUIC and len(types) >= 10
    assert set(types[1:]) == {ImageType.JPEG}, types
    # No JPEG to a client that cannot decode it or asked for a lossless codec.
    for caps, options in (
        ([DisplayCap.STREAM_REPORT], {"jpeg_wan_compression": "auto"}),
        (mjpeg, {"jpeg_wan_compression": "auto", "image_compression": ImageCompression.QUIC}),
        (mjpeg, {"jpeg_wan_compression": "never"}),
    ):
        types = run(scenario(caps, options))
        assert ImageType.JPEG not in types, (caps, options)


@pytest.mark.usefixtures("no_net_test_wait")
def test_a_candidate_that_stops_before_streaming_settles_pixel_exact() -> None:
    async def scenario() -> None:
        server, source, display, clock = await start(jpeg_wan_compression="auto")
        for k in range(4):  # a short burst: a candidate, never a stream
            await show(source, display, clock, k)
        assert display.created == []
        assert ImageType.JPEG in display.canvas.types
        clock.advance(0.6)  # still: the lossless refresh
        _handler(display)._wake.set()
        expected = source.frame[..., :3]
        await display.until(
            lambda: idle(display) and np.array_equal(display.canvas.pixels[..., :3], expected)
        )
        assert display.canvas.types[-1] != ImageType.JPEG
        await server.close()

    run(scenario())


# ---------------------------------------------------------------------- rate from the link


def test_mjpeg_follows_the_link_frame_rate_first_then_quality_and_back() -> None:
    stream = VideoStream(0, Rect(0, 0, 320, 240), VideoCodec.MJPEG, 0.0)
    assert stream.follow_link(None, 0.0) is None and not stream.throttled
    t = 10.0
    for _ in range(3):
        stream.sent(20_000, t)  # 160 kbit a frame
        t += 1 / 30
    stream.follow_link(2e6, t)  # 1.6 Mbit/s for the stream: 10 fps
    assert stream.link_fps == pytest.approx(10.0) and stream.throttled
    assert stream.min_interval == pytest.approx(0.1) and stream.quality == QUALITIES[0]
    stream.last_frame, stream.pending = t, True
    assert not stream.frame_due(t + 0.05, 30) and stream.frame_due(t + 0.1, 30)
    stream.follow_link(1e6, t)  # 5 fps at this quality: step quality down
    assert stream.quality == QUALITIES[1]
    stream.follow_link(1e6, t + 0.1)  # no second step before frames at it were measured
    assert stream.quality == QUALITIES[1]
    for _ in range(8):
        stream.sent(5_000, t)  # 40 kbit: 20 fps fit
        t += 0.1
    stream.follow_link(1e6, t)
    assert stream.quality == QUALITIES[1] and stream.link_fps is not None
    assert 10 < stream.link_fps < 20  # the running mean of sizes moves towards 40 kbit
    stream.follow_link(100e6, t + 1)  # a fast link again: quality back, no cap
    assert stream.quality == QUALITIES[0] and not stream.throttled


def test_an_inter_frame_encoder_is_rebuilt_at_the_links_share_not_too_often() -> None:
    rect = Rect(0, 0, 640, 480)
    stream = VideoStream(0, rect, VideoCodec.H264, 0.0, bit_rate=1_382_400, bit_rate_at=0.0)
    assert stream.follow_link(100e6, 0.5) is None  # its natural rate: nothing to change
    assert stream.follow_link(1e6, 1.0) is None  # too soon after the last change
    assert stream.follow_link(1e6, 2.5) == 800_000
    assert stream.rebuild_bit_rate == 800_000  # until the next frame takes it
    assert stream.follow_link(0.9e6, 5.0) is None  # within the slack
    assert stream.follow_link(0.1e6, 3.0) is None  # held
    assert stream.follow_link(0.1e6, 4.6) == 200_000  # never below MIN_BIT_RATE
    assert stream.follow_link(50e6, 9.0) == int(rect.area * 30 * BITS_PER_PIXEL)


def test_a_slow_link_mid_stream_drops_frames_and_quality_and_keeps_the_newest() -> None:
    async def scenario() -> None:
        server, source, display, clock = await start()
        k = await until_streaming(source, display, clock)
        for _ in range(10):  # a fast link: every frame
            await show(source, display, clock, k)
            k += 1
        (session,) = server.sessions()
        sizes = [len(f) for f in display.jpegs[-5:]]
        # The link slows to what carries 5 of these frames a second (the stream gets 80 %).
        link_bps = 5 * 8 * float(np.mean(sizes)) / 0.8
        session.metrics.link.net_test_bps = link_bps
        sent_before, bytes_before = len(display.frames), sum(map(len, display.jpegs))
        for _ in range(60):  # 2 s of video
            await show(source, display, clock, k)
            k += 1
        frames = len(display.frames) - sent_before
        sent = sum(map(len, display.jpegs)) - bytes_before
        assert 6 <= frames <= 20, frames  # 60 updates, ~5-10 frames a second as it adapts
        assert sent * 8 / 2.0 <= 1.2 * link_bps, (sent, link_bps)
        stream = _handler(display).stream
        assert stream is not None and stream.quality < QUALITIES[0]
        assert display.destroyed == []
        newest = video_frame(k - 1)
        clock.advance(0.3)  # the next frame slot: the newest pixels, not a queue
        _handler(display)._wake.set()
        await display.until(lambda: idle(display))
        assert psnr(display.frames[-1], newest) >= 28
        await server.close()

    run(scenario())


def test_a_rebuilt_h264_encoder_starts_with_a_keyframe() -> None:
    from spiceserver.server.channels.display.stream_control import encode_frame
    from spiceserver.server.channels.display.video import make_encoder

    rect = Rect(0, 0, VIDEO.width, VIDEO.height)
    encoder = make_encoder(VideoCodec.H264, rect.width, rect.height, 1_000_000)
    stream = VideoStream(0, rect, VideoCodec.H264, 0.0, encoder=encoder, bit_rate=1_000_000)
    first = [encode_frame(stream, video_frame(k), None) for k in range(3)]
    assert stream.encoder is encoder and all(first)
    rebuilt = encode_frame(stream, video_frame(3), 300_000)
    assert stream.encoder is not encoder
    assert rebuilt.startswith(b"\0\0\0\1") and b"\0\0\0\1\x67" in rebuilt  # SPS: a keyframe


# ---------------------------------------------------------------------- clips

WINDOW = Rect(VIDEO.right - 60, VIDEO.y + 30, 100, 50)  # over the video's right edge


def test_a_window_over_the_video_clips_the_stream_and_stays_exact() -> None:
    async def scenario() -> None:
        server, source, display, clock = await start()
        k = await until_streaming(source, display, clock)
        background = source.frame.copy()
        window = np.zeros((WINDOW.height, WINDOW.width, 4), np.uint8)
        window[..., 0], window[::4, :, 2] = 200, 255  # a flat window with lines: lossless
        window[:, :, 1] = (np.arange(WINDOW.height) * 5)[:, None]  # each row its own
        source.frame[WINDOW.y : WINDOW.bottom, WINDOW.x : WINDOW.right] = window
        source.damage([WINDOW])
        frames = len(display.frames)
        visible = subtract(VIDEO, WINDOW)
        for _ in range(15):  # the video plays on under the window, as X reports it
            pixels = video_frame(k)
            for part in visible:
                rows = slice(part.y - VIDEO.y, part.bottom - VIDEO.y)
                cols = slice(part.x - VIDEO.x, part.right - VIDEO.x)
                source.frame[part.y : part.bottom, part.x : part.right] = pixels[rows, cols]
            source.damage(visible)
            clock.advance(1 / 30)
            await display.until(lambda: idle(display))
            k += 1
        assert display.destroyed == [] and len(display.frames) >= frames + 10
        boxes = sorted((r.x, r.y, r.width, r.height) for r in visible)
        assert display.clip_messages and sorted(display.clip_messages[-1] or []) == boxes
        shown = display.canvas.pixels[WINDOW.y : WINDOW.bottom, WINDOW.x : WINDOW.right, :3]
        assert np.array_equal(shown, window[..., :3])  # lossless, never painted over
        # The window's content scrolls (a terminal): a move within what covers the stream.
        window = np.roll(window, -4, axis=0)
        window[-4:] = (0, 0, 90, 0)
        source.frame[WINDOW.y : WINDOW.bottom, WINDOW.x : WINDOW.right] = window
        strip = Rect(WINDOW.x, WINDOW.bottom - 4, WINDOW.width, 4)
        source.scroll(WINDOW, -4, [strip])
        clock.advance(1 / 30)
        await display.until(lambda: idle(display))
        shown = display.canvas.pixels[WINDOW.y : WINDOW.bottom, WINDOW.x : WINDOW.right, :3]
        assert np.array_equal(shown, window[..., :3]) and display.destroyed == []
        assert _handler(display).session.metrics.copy_bits == 1
        # The window closes: the desktop and the whole video frame are drawn again.
        source.frame[WINDOW.y : WINDOW.bottom, WINDOW.x : WINDOW.right] = background[
            WINDOW.y : WINDOW.bottom, WINDOW.x : WINDOW.right
        ]
        source.damage([WINDOW])
        await show(source, display, clock, k)  # and the video frame
        assert display.clip_messages[-1] is None and display.destroyed == []
        (session,) = server.sessions()
        assert session.metrics.stream_clips == 2
        clock.advance(1.1)  # still: the stream ends, all of it repainted losslessly
        _handler(display)._wake.set()
        expected = source.frame[..., :3]
        await display.until(lambda: np.array_equal(display.canvas.pixels[..., :3], expected))
        await server.close()

    run(scenario())


def test_a_stream_mostly_covered_ends() -> None:
    stream = VideoStream(0, VIDEO, VideoCodec.MJPEG, 0.0)
    stream.cover(Rect(0, 0, 10, 10))  # elsewhere
    assert stream.clip() is None and not stream.clip_owed()
    stream.cover(WINDOW)
    assert stream.clip_owed() and not stream.clip_owed() and not stream.clipped_away()
    stream.cover(Rect(VIDEO.x - 5, VIDEO.y - 5, VIDEO.width * 3 // 4, VIDEO.height + 10))
    assert stream.clipped_away()
    assert stream.uncover(VIDEO) and stream.clip() is None and not stream.clipped_away()


# ---------------------------------------------------------------------- toolkit


def test_the_record_logs_streams_and_their_reports_and_metrics_count_them() -> None:
    async def scenario() -> None:
        recorder = MemoryRecorder()
        server, source, display, clock = await start(recorders=[recorder])
        await until_streaming(source, display, clock)
        stream_id, unique_id, _window, _timeout = display.reports[-1]
        body = struct.pack("<6IiI", stream_id, unique_id, 1000, 1160, 5, 1, 95, 0xFFFF_FFFF)
        display.client.send(frame(DisplayClientMsg.STREAM_REPORT, body))
        await recorder.wait_for(lambda e: e["event"] == "stream_report", timeout=10)
        source.frame[WINDOW.y : WINDOW.bottom, WINDOW.x : WINDOW.right] = 255
        source.damage([WINDOW])
        await display.until(lambda: idle(display) and display.clip_messages)
        clock.advance(1.1)
        _handler(display)._wake.set()
        await recorder.wait_for(lambda e: e["event"] == "stream_destroy", timeout=10)
        events = [e for e in recorder.events if e["event"].startswith("stream_")]
        create, report, clip, destroy = events[0], events[1], events[2], events[-1]
        assert create["event"] == "stream_create" and create["codec"] == "mjpeg"
        assert create["rect"] == [VIDEO.x, VIDEO.y, VIDEO.width, VIDEO.height]
        assert create["channel"] == "display" and create["stream"] == stream_id
        assert report == {
            **{key: report[key] for key in ("t", "session", "channel", "channel_id")},
            "event": "stream_report",
            "stream": stream_id,
            "unique_id": unique_id,
            "start_frame_mm_time": 1000,
            "end_frame_mm_time": 1160,
            "num_frames": 5,
            "num_drops": 1,
            "last_frame_delay": 95,
            "audio_delay": None,
            "cannot_decode": False,
        }
        assert clip["event"] == "stream_clip" and clip["visible"]
        assert destroy["reason"] == "still" and destroy["frames"] == len(display.frames)
        (session,) = server.sessions()
        line = session.metrics.summary()
        assert "stream_clips=1" in line and "stream-mjpeg=" in line and "stream_kbps=" in line
        await server.close()

    run(scenario())


def test_fault_specs_for_stream_frames() -> None:
    assert Fault.parse("drop-frames") == Fault("drop-frames", "display", every=2)
    assert Fault.parse("drop-frames:5") == Fault("drop-frames", "display", every=5)
    assert Fault.parse("delay-frames:-0.5") == Fault("delay-frames", "display", seconds=-0.5)
    for spec in ("drop-frames:3", "delay-frames:0.25", "delay-frames:-1"):
        fault = Fault.parse(spec)
        assert Fault.parse(str(fault)) == fault and fault.describe().startswith(str(fault))
    for bad in ("delay-frames", "delay-frames:0", "delay-frames:1e9", "drop-frames:0"):
        with pytest.raises(ConfigError):
            Fault.parse(bad)
    with pytest.raises(ConfigError):
        Fault("drop-frames", "inputs")


def test_dropped_and_delayed_frames_still_end_pixel_exact() -> None:
    async def scenario() -> None:
        server, source, display, clock = await start(faults=["drop-frames:3", "delay-frames:2"])
        k = await until_streaming(source, display, clock)
        start_mm = mm_time(clock.now)
        for j in range(k, k + 30):
            await show(source, display, clock, j)
        handler = _handler(display)
        fault = handler.frame_fault
        assert fault is not None and fault.dropped >= 9
        assert len(display.frames) == fault.frames - fault.dropped
        assert all(stamp - start_mm >= 2000 for stamp in display.mm_times)  # 2 s later
        clock.advance(1.1)  # still: the stream ends, its area repainted losslessly
        handler._wake.set()
        expected = source.frame[..., :3]
        await display.until(lambda: np.array_equal(display.canvas.pixels[..., :3], expected))
        await server.close()

    run(scenario())
