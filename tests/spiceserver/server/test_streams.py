"""Video streams (issue 16 item 3): the stream messages, detection, the codec choice, and the
whole stack in memory (``tests.memory``) with an injected clock: a region updated like a
video becomes an MJPEG stream, its frames decode close to the source, and once it stops the
stream ends and the area is repainted pixel-exact; a client that cannot decode it gets images.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
import simplejpeg

from spiceserver import ImageCompression, NumpySource, SpiceServer
from spiceserver.config import parse_video_codecs
from spiceserver.errors import ConfigError
from spiceserver.protocol import messages as m
from spiceserver.protocol.display import DisplayChannel
from spiceserver.protocol.enums import (
    BaseClientMsg,
    DisplayCap,
    DisplayClientMsg,
    DisplayServerMsg,
    ImageType,
    VideoCodec,
)
from spiceserver.protocol.events import StreamReported
from spiceserver.server.channels.display.streams import (
    FRAME_RATES,
    MIN_AREA,
    QUALITIES,
    StreamDetector,
    VideoStream,
    choose_codec,
    initial_bit_rate,
)
from spiceserver.sources.base import Rect
from tests.conftest import run
from tests.fakeclient import frame
from tests.memory import PASSWORD, FakeClock, ready
from tests.spiceserver.server.test_jpeg import (
    TEXT_FRAMES,
    Display,
    gradient_noise,
    open_display,
    psnr,
)

# ---------------------------------------------------------------------- messages


def test_stream_messages_have_spice_proto_layouts() -> None:
    create = m.StreamCreate(0, 3, 1, VideoCodec.MJPEG, 7, 160, 96, 160, 96, (10, 20, 160, 96))
    body = create.pack()
    assert len(body) == 51  # spice.proto stream_create with clip NONE
    assert struct.unpack("<IIBBQIIII4iB", body) == (
        0,
        3,
        1,
        1,
        7,
        160,
        96,
        160,
        96,
        20,
        10,
        116,
        170,
        0,
    )
    clipped = m.StreamClip(3, ((10, 20, 5, 6),)).pack()
    assert clipped == struct.pack("<IBI4i", 3, 1, 1, 20, 10, 26, 15)
    assert m.StreamClip(3).pack() == struct.pack("<IB", 3, 0)
    assert m.StreamActivateReport(3, 9, 5, 1000).pack() == struct.pack("<4I", 3, 9, 5, 1000)
    assert m.StreamActivateReport.TYPE == 319 and m.StreamDataSized.TYPE == 316
    sized = m.StreamDataSized(3, 5, 16, 8, (0, 0, 16, 8), b"xy").pack()
    assert sized == struct.pack("<4I4iI", 3, 5, 16, 8, 0, 0, 8, 16, 2) + b"xy"


def test_codecs_follow_caps_and_the_clients_preference() -> None:
    channel = DisplayChannel(mini_header=True)
    channel.client_channel_caps = _caps(DisplayCap.CODEC_MJPEG, DisplayCap.CODEC_H264)
    assert channel.video_codecs() == (VideoCodec.MJPEG,)  # no MULTI_CODEC: MJPEG only
    channel.client_channel_caps = _caps(
        DisplayCap.MULTI_CODEC, DisplayCap.CODEC_MJPEG, DisplayCap.CODEC_H264, DisplayCap.CODEC_VP8
    )
    assert channel.video_codecs() == (VideoCodec.MJPEG, VideoCodec.VP8, VideoCodec.H264)
    channel._on_preferred_video_codecs(m.PreferredVideoCodecType(bytes([3, 9, 3, 1])), 0.0)
    assert channel.video_codecs() == (VideoCodec.H264, VideoCodec.MJPEG, VideoCodec.VP8)
    assert choose_codec(channel.video_codecs(), True, ("mjpeg", "h264"), set()) == VideoCodec.MJPEG
    assert choose_codec((VideoCodec.MJPEG,), False, ("mjpeg",), {VideoCodec.MJPEG}) is None
    assert choose_codec((VideoCodec.VP8,), False, ("mjpeg",), set()) is None


def _caps(*caps: int) -> tuple[int, ...]:
    word = 0
    for cap in caps:
        word |= 1 << cap
    return (word,)


def test_video_codecs_option_takes_a_list_or_qemus_syntax() -> None:
    assert parse_video_codecs("mjpeg,h264,vp8") == ("mjpeg", "h264", "vp8")
    assert parse_video_codecs("spice:mjpeg;gstreamer:h264") == ("mjpeg", "h264")
    with pytest.raises(ConfigError):
        parse_video_codecs("theora")
    with pytest.raises(ConfigError):
        SpiceServer(NumpySource(8, 8), password="pw", streaming_video="sometimes")


# ---------------------------------------------------------------------- detection


def test_a_rectangle_updated_like_a_video_becomes_a_candidate() -> None:
    detector = StreamDetector()
    video, small = Rect(10, 10, 160, 96), Rect(0, 0, 90, 90)
    assert small.area < MIN_AREA
    t = 100.0
    for _ in range(12):  # 0.37 s at 30 fps: not yet
        detector.damaged([video, small], t)
        t += 1 / 30
    assert detector.candidate(t) is None
    for _ in range(6):
        detector.damaged([video, small], t)
        t += 1 / 30
    assert detector.candidate(t) == video
    assert detector.candidate(t + 0.3) is None  # stopped: no longer playing
    slow = StreamDetector()
    for k in range(10):  # 5 fps for 1.8 s: a slideshow, not a video
        slow.damaged([video], 200.0 + k * 0.2)
    assert slow.candidate(201.8) is None


# ---------------------------------------------------------------------- rate control


def report(unique_id: int, frames: int, drops: int, delay: int = 100) -> StreamReported:
    return StreamReported(0, unique_id, frames, drops, delay)


def test_drops_step_quality_then_frame_rate_down_and_clean_reports_step_back_up() -> None:
    stream = VideoStream(0, Rect(0, 0, 320, 240), VideoCodec.MJPEG, 0.0, report_id=7)
    assert stream.quality == QUALITIES[0] and stream.rate_step == 0
    stream.report(report(6, 5, 5))  # another window's report: stale
    assert stream.quality == QUALITIES[0]
    stream.report(report(7, 5, 2))
    assert stream.quality == QUALITIES[1]
    stream.report(report(7, 5, 0, delay=-20))  # late frames count as trouble too
    assert stream.quality == QUALITIES[2]
    for _ in range(len(QUALITIES) - 2):  # to the lowest quality, then one frame-rate step
        stream.report(report(7, 5, 3))
    assert stream.quality == QUALITIES[-1] and stream.rate_step == 1
    assert stream.min_interval == 1 / FRAME_RATES[1]
    stream.last_frame, stream.pending = 10.0, True
    assert not stream.frame_due(10.03, 30) and stream.frame_due(10.05, 30)
    for _ in range(3):
        stream.report(report(7, 5, 0))
    assert stream.rate_step == 0  # the frame rate comes back first
    for _ in range(3):
        stream.report(report(7, 5, 0))
    assert stream.quality == QUALITIES[-2]
    h264 = VideoStream(1, Rect(0, 0, 320, 240), VideoCodec.H264, 0.0, report_id=1)
    h264.report(report(1, 5, 1))
    assert h264.quality_step == 0 and h264.rate_step == 1  # bit rate fixed: frames only


def test_initial_bit_rate_follows_area_and_link() -> None:
    assert initial_bit_rate(Rect(0, 0, 1920, 1080), None) == int(1920 * 1080 * 30 * 0.15)
    assert initial_bit_rate(Rect(0, 0, 1920, 1080), 2e6) == 1_600_000
    assert initial_bit_rate(Rect(0, 0, 96, 96), None) == 200_000


# ---------------------------------------------------------------------- the stack in memory

W, H = 320, 240
VIDEO = Rect(64, 48, 160, 112)


def video_frame(k: int) -> np.ndarray:
    """Frame ``k`` of a deterministic photographic clip: noisy gradient, panning."""
    base = gradient_noise(VIDEO.width + 64, VIDEO.height, seed=3)
    shift = (4 * k) % 64
    return base[:, shift : shift + VIDEO.width].copy()


class StreamDisplay(Display):
    """Display that also plays streams as spice-gtk does: each MJPEG frame painted at the
    stream's destination, within its clip (the last one stays when it is destroyed)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.streams: dict[int, tuple[int, int, int, int]] = {}
        self.created: list[int] = []
        self.destroyed: list[int] = []
        self.reports: list[tuple[int, int, int, int]] = []
        self.frames: list[np.ndarray] = []
        self.jpegs: list[bytes] = []  # the frames as sent
        self.mm_times: list[int] = []
        #: Each stream's clip (x, y, w, h rectangles; None: all of it), and every one sent.
        self.clips: dict[int, list[tuple[int, int, int, int]] | None] = {}
        self.clip_messages: list[list[tuple[int, int, int, int]] | None] = []

    def pump(self) -> None:
        pending = self.client.messages()
        self.client._pending = pending  # put back for Display.pump's images
        for type_, body in pending:
            if type_ == DisplayServerMsg.STREAM_CREATE:
                stream_id, _flags, codec = struct.unpack_from("<IBB", body, 4)
                assert codec == VideoCodec.MJPEG
                top, left, bottom, right = struct.unpack_from("<4i", body, 34)
                self.streams[stream_id] = (left, top, right - left, bottom - top)
                self.created.append(stream_id)
            elif type_ == DisplayServerMsg.STREAM_ACTIVATE_REPORT:
                self.reports.append(struct.unpack("<4I", body))
            elif type_ == DisplayServerMsg.STREAM_DATA:
                stream_id, mm_time, size = struct.unpack_from("<III", body)
                assert size == len(body) - 12
                x, y, w, h = self.streams[stream_id]
                pixels = simplejpeg.decode_jpeg(body[12:], colorspace="BGRX")
                assert pixels.shape[:2] == (h, w)
                for cx, cy, cw, ch in self.clips.get(stream_id) or [(x, y, w, h)]:
                    part = pixels[cy - y : cy - y + ch, cx - x : cx - x + cw, :3]
                    self.canvas.pixels[cy : cy + ch, cx : cx + cw, :3] = part
                self.frames.append(pixels)
                self.jpegs.append(body[12:])
                self.mm_times.append(mm_time)
            elif type_ == DisplayServerMsg.COPY_BITS:
                _surface, top, left, bottom, right, _clip, sx, sy = struct.unpack("<I4iBii", body)
                pixels = self.canvas.pixels
                moved = pixels[sy : sy + bottom - top, sx : sx + right - left].copy()
                pixels[top:bottom, left:right] = moved
            elif type_ == DisplayServerMsg.STREAM_CLIP:
                stream_id, kind = struct.unpack_from("<IB", body)
                clip = None
                if kind == 1:  # SPICE_CLIP_TYPE_RECTS
                    (count,) = struct.unpack_from("<I", body, 5)
                    boxes = struct.iter_unpack("<4i", body[9 : 9 + 16 * count])
                    clip = [(left, top, r - left, b - top) for top, left, b, r in boxes]
                self.clips[stream_id] = clip
                self.clip_messages.append(clip)
            elif type_ == DisplayServerMsg.STREAM_DESTROY:
                (stream_id,) = struct.unpack("<I", body)
                del self.streams[stream_id]
                self.destroyed.append(stream_id)
        super().pump()


def stream_server(source: NumpySource, **options: object) -> SpiceServer:
    # JPEG "always": the video's images before its stream are JPEG, which this client
    # decodes fast (its QUIC decoder is pure Python: 0.5 s an image).
    options.setdefault("image_compression", ImageCompression.AUTO_LZ)
    options.setdefault("jpeg_wan_compression", "always")
    options.setdefault("streaming_video", "filter")
    return SpiceServer(source, password=PASSWORD, warmup_encoders=False, port=0, **options)  # type: ignore[arg-type]


STREAM_CAPS = [DisplayCap.CODEC_MJPEG, DisplayCap.STREAM_REPORT]


async def start(
    caps: list[int] = STREAM_CAPS, **options: object
) -> tuple[SpiceServer, NumpySource, StreamDisplay, FakeClock]:
    background = np.zeros((H, W, 4), np.uint8)
    background[..., 1] = 90  # flat green: LZ, lossless
    source = NumpySource(frame=background)
    server = await ready(stream_server(source, **options))
    clock = FakeClock.install(server)
    _main, plain = await open_display(server, caps, W, H)
    display = StreamDisplay(plain.client, plain.canvas)
    await display.until(lambda: display.canvas.marks)
    return server, source, display, clock


def idle(display: StreamDisplay) -> bool:
    """Nothing left for the server to send this client now (its update loop is waiting; a
    frame owed may wait for its slot when rate control caps the frame rate)."""
    handler = _handler(display)
    stream, now, fps = handler.stream, handler.context.clock(), handler.context.config.max_fps
    waiting = not handler.updating and not handler.dirty and not handler._wake.is_set()
    return waiting and (stream is None or not stream.frame_due(now, fps))


def _handler(display: StreamDisplay) -> Any:
    connection = display.client.protocol.connection
    assert connection is not None
    return connection.handler


async def show(source: NumpySource, display: StreamDisplay, clock: FakeClock, k: int) -> None:
    r = VIDEO
    source.frame[r.y : r.bottom, r.x : r.right] = video_frame(k)
    source.damage([r])
    clock.advance(1 / 30)
    await display.until(lambda: idle(display))


async def until_streaming(source: NumpySource, display: StreamDisplay, clock: FakeClock) -> int:
    """Play the clip until its stream is created; returns the next frame's number."""
    k = 0
    while not display.created:
        await show(source, display, clock, k)
        k += 1
        assert k < 60
    return k


def test_a_video_region_streams_then_settles_pixel_exact() -> None:
    async def scenario() -> None:
        server, source, display, clock = await start()
        for k in range(30):  # one second of video at 30 fps
            await show(source, display, clock, k)
        assert display.created == [0]
        assert display.reports and display.reports[0][:1] == (0,)
        assert len(display.frames) >= 10
        last = source.frame[VIDEO.y : VIDEO.bottom, VIDEO.x : VIDEO.right]
        await display.until(lambda: len(display.frames) and idle(display))
        assert psnr(display.frames[-1], last) >= 30
        types_before = list(display.canvas.types)
        clock.advance(1.1)  # still: the stream ends, its area repainted losslessly
        _handler(display)._wake.set()
        expected = source.frame[..., :3]
        await display.until(lambda: np.array_equal(display.canvas.pixels[..., :3], expected))
        assert display.destroyed == [0]
        assert ImageType.JPEG not in display.canvas.types[len(types_before) :]
        (session,) = server.sessions()
        metrics = session.metrics
        assert metrics.streams == 1 and metrics.stream_frames == len(display.frames)
        assert metrics.bytes_by_codec["stream-mjpeg"] > 0
        assert "streams=1" in metrics.summary()
        await server.close()

    run(scenario())


def test_a_client_that_cannot_decode_the_stream_gets_images() -> None:
    async def scenario() -> None:
        server, source, display, clock = await start()
        k = await until_streaming(source, display, clock)
        (stream_id, unique_id, _window, _timeout) = display.reports[-1]
        report = struct.pack("<6IiI", stream_id, unique_id, 0, 0, 0, 0xFFFF_FFFF, 0, 0xFFFF_FFFF)
        display.client.send(frame(DisplayClientMsg.STREAM_REPORT, report))
        await display.until(lambda: display.destroyed == [stream_id])
        draws = len(display.canvas.types)
        for j in range(k, k + 30):  # the video plays on: images, no new stream
            await show(source, display, clock, j)
        assert display.created == [stream_id]
        assert len(display.canvas.types) > draws
        clock.advance(1.0)
        _handler(display)._wake.set()
        expected = source.frame[..., :3]
        await display.until(lambda: np.array_equal(display.canvas.pixels[..., :3], expected))
        await server.close()

    run(scenario())


@pytest.mark.parametrize("case", ["off", "no-mjpeg-cap", "server-quic", "jpeg-never", "text"])
def test_no_stream(case: str, corpus: object) -> None:
    from pathlib import Path

    from spiceserver.sources.image import load_image

    caps = [DisplayCap.STREAM_REPORT] if case == "no-mjpeg-cap" else STREAM_CAPS
    options: dict[str, object] = {
        "off": {"streaming_video": "off"},
        "server-quic": {"image_compression": ImageCompression.QUIC},
        "jpeg-never": {"jpeg_wan_compression": "never"},
    }.get(case, {})
    text = load_image(Path(str(corpus)) / TEXT_FRAMES[0])

    async def scenario() -> None:
        server, source, display, clock = await start(caps, **options)
        canvas = display.canvas
        canvas.apply = lambda body: canvas.types.append(body[65])  # type: ignore[method-assign]
        r = VIDEO
        for k in range(20):  # 0.67 s at 30 fps: would stream
            if case == "text":  # a terminal scrolling: updated like a video, but text
                rows = text[k * 8 : k * 8 + r.height, : r.width]
                source.frame[r.y : r.bottom, r.x : r.right] = rows
                source.damage([r])
                clock.advance(1 / 30)
                await display.until(lambda: idle(display))
            else:
                await show(source, display, clock, k)
        assert display.created == []
        if case != "off":  # off: JPEG images, as always; the others: lossless only
            assert ImageType.JPEG not in display.canvas.types
        await server.close()

    run(scenario())


def test_a_backlogged_client_gets_the_newest_frame_not_a_queue() -> None:
    async def scenario() -> None:
        server, source, display, clock = await start()
        k = await until_streaming(source, display, clock)
        ack = frame(BaseClientMsg.ACK)
        send, held = display.client.send, []

        def hold_acks(data: bytes) -> None:  # the client stops acknowledging
            if data == ack:
                held.append(data)
            else:
                send(data)

        display.client.send = hold_acks  # type: ignore[method-assign]
        sent_before = len(display.frames)
        handler = _handler(display)
        for j in range(k, k + 60):
            r = VIDEO
            source.frame[r.y : r.bottom, r.x : r.right] = video_frame(j)
            source.damage([r])
            clock.advance(1 / 30)
            await display.until(lambda: not handler.updating)
        # The ACK window (2 x 20 messages) stopped the stream: no queue of 60 frames.
        assert len(display.frames) - sent_before <= 41
        display.client.send = send  # type: ignore[method-assign]
        for data in held:
            send(data)
        newest = video_frame(k + 59)
        await display.until(lambda: idle(display) and len(display.frames) > sent_before)
        await display.until(lambda: psnr(display.frames[-1], newest) >= 30)
        assert display.destroyed == []  # still the same stream
        await server.close()

    run(scenario())
