"""JPEG images (issue 16 item 2): the classifier, the policy, the lossy areas, the link
estimate, and the whole stack in memory (``tests.memory``) with an injected clock.

The in-memory client decodes every image it gets (JPEG with simplejpeg, QUIC and LZ with the
pure-Python reference decoders) onto its canvas, and answers PINGs as spice-gtk does.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from spiceserver import ImageCompression, NumpySource, SpiceServer
from spiceserver.bandwidth import NET_TEST_BYTES, LinkEstimate
from spiceserver.errors import ConfigError
from spiceserver.protocol.enums import (
    BaseClientMsg,
    BaseServerMsg,
    ChannelType,
    DisplayCap,
    DisplayServerMsg,
    ImageType,
)
from spiceserver.server.channels.display.lossy import (
    FIRST_PAINT_SECONDS,
    MIN_JPEG_QUALITY,
    JpegBudget,
    LossyAreas,
    subtract,
    wan_allowed,
)
from spiceserver.server.codecs import (
    MIN_VARYING,
    CodecSettings,
    ImageClass,
    ImageEncoder,
    _smooth,
    classify,
    encode_shared,
    shared_codec_key,
)
from spiceserver.sources.base import Rect
from spiceserver.sources.image import load_image
from tests.conftest import run
from tests.fakeclient import frame
from tests.memory import (
    PASSWORD,
    FakeClock,
    MemoryClient,
    init_session_id,
    linked,
    main_at,
    ready,
    turns,
)
from tests.reference.lz_decode import lz_decode
from tests.reference.quic_decode import quic_decode

PHOTO = "photo_dune_1920x1080.png"
TEXT_FRAMES = [
    "terminal_manpage_1920x1080.png",
    "web_pydoc_tutorial_1920x1080.png",
    "desktop_xapps_1280x800.png",
    "testpattern_bars_1024x768.png",
]
BAND = 256 * 1024  # the display's bands (MAX_BAND_PIXELS)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a[..., :3].astype(np.float64) - b[..., :3]) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def bands(pixels: np.ndarray) -> list[np.ndarray]:
    height, width = pixels.shape[:2]
    rows = max(1, BAND // width)
    return [pixels[y : y + rows] for y in range(0, height, rows)]


def gradient_noise(width: int, height: int, seed: int = 7) -> np.ndarray:
    """A smooth gradient with sensor-like noise: photographic, deterministic."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 4), np.uint8)
    for c, (fx, fy) in enumerate(((0.9, 0.2), (0.3, 0.8), (0.5, 0.5))):
        base = 40 + 170 * (fx * x / width + fy * y / height) / (fx + fy)
        out[..., c] = np.clip(base + rng.normal(0, 3, (height, width)), 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------------- classifier


def test_photo_bands_are_smooth_and_text_never_is(corpus: Path) -> None:
    photo = load_image(corpus / PHOTO)
    assert all(classify(band).smooth for band in bands(photo))
    assert classify(gradient_noise(320, 200)).smooth
    for name in TEXT_FRAMES:
        assert not any(classify(band).smooth for band in bands(load_image(corpus / name))), name


def test_text_drawn_on_a_photo_is_not_smooth(corpus: Path) -> None:
    photo = load_image(corpus / PHOTO)[600:856, 0:1024]
    assert classify(photo).smooth
    terminal = load_image(corpus / TEXT_FRAMES[0])[0:256, 0:1024, :3].max(axis=2)
    web = load_image(corpus / TEXT_FRAMES[1])[0:256, 0:1024, :3].min(axis=2)
    white = photo.copy()
    white[terminal > 128] = (255, 255, 255, 0)  # the terminal's light glyphs, solid
    light = (terminal / 255.0)[..., None]  # anti-aliased, white onto the photo
    blended = (photo[..., :3] * (1 - light) + 255 * light).astype(np.uint8)
    dark = (1 - web / 255.0)[..., None]  # the web page's dark text, anti-aliased
    darkened = (photo[..., :3] * (1 - dark)).astype(np.uint8)
    for pixels in (white[..., :3], blended, darkened):
        assert not classify(pixels).smooth


def test_the_patterns_gradient_band_is_smooth() -> None:
    # Its hue wraps round: hard edges, but isolated ones, not strokes.
    from spiceserver import PatternSource

    source = PatternSource(1024, 768)
    band = source._painters[0][1].band
    assert band is not None
    frame = source.render(5)
    assert classify(frame[band.y : band.bottom, band.x : band.right]).smooth


def _plain_classify(pixels: np.ndarray) -> ImageClass:
    """classify() as first written (numpy's 3-channel max and np.unique: 1-2 ms a band)."""
    height = pixels.shape[0]
    rows = pixels[np.linspace(0, height - 1, min(16, height)).astype(np.intp), :, :3]
    steps = np.abs(np.diff(rows.astype(np.int16), axis=1)).max(axis=2)
    flat = float(np.mean(steps == 0))
    small = float(np.mean((steps > 0) & (steps <= 24)))
    smooth = 1.0 - flat >= MIN_VARYING and _smooth(rows, steps)
    return ImageClass(gradual=flat < 0.35 and small > 0.45, smooth=smooth)


def test_classify_answers_as_the_plain_formula(corpus: Path) -> None:
    rng = np.random.default_rng(7)
    regions = [
        load_image(corpus / name)[y : y + 136, x : x + 900]
        for name in [PHOTO, *TEXT_FRAMES]
        for y in (0, 300, 600)
        for x in (0, 100)
    ]
    for _ in range(20):
        noise = rng.integers(0, 256, (rng.integers(8, 90), rng.integers(8, 300), 4), np.uint8)
        regions += [noise, np.cumsum(noise, axis=1, dtype=np.uint8)]
    answers = [classify(region) for region in regions]
    assert answers == [_plain_classify(region) for region in regions]
    assert any(a.smooth for a in answers) and any(a.gradual for a in answers)
    assert not all(a.smooth for a in answers)


def test_flat_and_tiny_areas_are_not_smooth() -> None:
    assert not classify(np.full((64, 64, 4), 80, np.uint8)).smooth
    assert not classify(gradient_noise(7, 7)).smooth


# ---------------------------------------------------------------------- codec and policy


def test_jpeg_codec_shares_by_quality_and_decodes_close(corpus: Path) -> None:
    pixels = load_image(corpus / PHOTO)[500:756, 0:512]
    assert shared_codec_key("jpeg") != shared_codec_key(
        "jpeg", ImageEncoder().settings.__class__(jpeg_quality=50)
    )
    image = encode_shared(pixels, "jpeg")
    assert image.type == ImageType.JPEG and (image.width, image.height) == (512, 256)
    header, stream = image.body
    (size,) = struct.unpack("<I", header)
    assert size == len(stream) and bytes(stream[:2]) == b"\xff\xd8"
    decoded = simplejpeg.decode_jpeg(bytes(stream), colorspace="BGRX")
    assert psnr(decoded, pixels) >= 30


def test_choice_goes_jpeg_only_in_auto_modes_when_allowed(corpus: Path) -> None:
    photo = load_image(corpus / PHOTO)[600:856, 0:1024]
    text = load_image(corpus / TEXT_FRAMES[0])[0:256, 0:1024]
    encoder = ImageEncoder(ImageCompression.AUTO_LZ)
    assert encoder.choose(photo) == "quic"  # lossy not allowed yet
    encoder.lossy = True
    assert encoder.choose(photo) == "jpeg"
    assert encoder.choose(photo, lossless=True) == "quic"  # a refresh
    assert encoder.choose(text) == "lz"
    for named in (ImageCompression.QUIC, ImageCompression.LZ, ImageCompression.OFF):
        assert encoder.prefer(named) and encoder.choose(photo) != "jpeg"


def test_policy_needs_a_jpeg_decoder_and_a_slow_link_on_auto() -> None:
    mjpeg = (1 << DisplayCap.CODEC_MJPEG,)
    slow, fast = LinkEstimate(), LinkEstimate()
    slow.net_test_started(2, 3)
    slow.pong(2, 0.010)
    slow.pong(3, 0.010 + NET_TEST_BYTES * 8 / 2e6)  # 2 Mbit/s
    assert slow.low_bandwidth() and not fast.low_bandwidth()
    assert wan_allowed("always", mjpeg, fast, available=True)
    assert wan_allowed("auto", mjpeg, slow, available=True)
    assert not wan_allowed("auto", mjpeg, fast, available=True)
    assert not wan_allowed("never", mjpeg, slow, available=True)
    assert not wan_allowed("always", (), slow, available=True)  # capsaicin: no caps
    assert not wan_allowed("always", mjpeg, slow, available=False)


def test_always_without_simplejpeg_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from spiceserver.extras import optional_module

    optional_module.cache_clear()  # imported already: forget it
    monkeypatch.setitem(__import__("sys").modules, "simplejpeg", None)  # import fails
    with pytest.raises(ConfigError, match="simplejpeg"):
        SpiceServer(NumpySource(8, 8), password="pw", jpeg_wan_compression="always")
    with pytest.raises(ConfigError, match="jpeg_wan_compression"):
        SpiceServer(NumpySource(8, 8), password="pw", jpeg_wan_compression="sometimes")


# ---------------------------------------------------------------------- link estimate


def test_net_test_and_ack_samples_estimate_the_link() -> None:
    link = LinkEstimate()
    link.net_test_started(2, 3)
    assert link.testing and link.bandwidth() is None
    done: list[bool] = []
    link.when_tested(lambda: done.append(True))
    assert not link.pong(2, 0.020)
    assert link.pong(3, 0.020 + NET_TEST_BYTES * 8 / 50e6)  # 50 Mbit/s
    assert done == [True] and link.round_trip == 0.020
    assert link.net_test_bps == pytest.approx(50e6) and not link.low_bandwidth()
    # ACKs while the sender is ahead: 4 Mbit/s delivered.
    queued = 10_000_000
    for i in range(6):
        link.acked(1, i * 100_000, queued, 1.0 + i * 0.2)
    assert link.ack_bps(2.0) == pytest.approx(4e6) and link.low_bandwidth()
    # Samples where the sender ran dry (idle link) do not count.
    idle = LinkEstimate()
    for i in range(6):
        idle.acked(1, i * 100_000, i * 100_000, 1.0 + i)
    assert idle.ack_bps() is None
    idle.writing_paused(1, True, 5.0)
    idle.writing_paused(1, False, 5.5)
    assert "paused=0.5s" in idle.summary()


def test_an_invalid_net_test_counts_as_fast() -> None:
    link = LinkEstimate()
    link.net_test_started(2, 3)
    link.pong(2, 0.050)
    assert link.pong(3, 0.040)
    assert link.net_test_bps is None and not link.low_bandwidth() and not link.testing


# ---------------------------------------------------------------------- lossy areas


def test_lossy_areas_fall_due_when_still_and_leave_when_sent_lossless() -> None:
    areas = LossyAreas(still=0.5)
    areas.sent(Rect(0, 0, 100, 100), True)  # in flight: not still yet
    assert areas.next_due() is None and areas.take_due(20.0) == []
    areas.delivered(10.0)  # the client has drawn it
    assert areas.next_due() == 10.5 and areas.take_due(10.3) == []
    areas.damaged([Rect(50, 50, 10, 10)], now=10.4)  # it changed: waits again
    assert areas.take_due(10.6) == []
    assert areas.take_due(10.95) == [Rect(0, 0, 100, 100)]
    assert areas.forced_lossless(Rect(0, 90, 100, 20))
    areas.sent(Rect(0, 0, 100, 60), False, now=11.0)  # half of it refreshed
    assert areas.rects() == [Rect(0, 60, 100, 40)]
    areas.update_done(11.0)  # the rest (not covered) waits again
    assert not areas.forced_lossless(Rect(0, 60, 100, 40)) and areas.next_due() == 11.5
    areas.sent(Rect(0, 0, 200, 200), False, now=11.1)
    assert not areas


def test_refreshes_are_taken_oldest_first_a_few_at_a_time() -> None:
    areas = LossyAreas(still=0.5)
    areas.sent(Rect(0, 100, 10, 10), True, now=2.0)
    areas.sent(Rect(0, 0, 10, 10), True, now=1.0)
    assert areas.take_due(5.0, limit=1) == [Rect(0, 0, 10, 10)]
    assert areas.take_due(5.0, limit=1) == [Rect(0, 100, 10, 10)]


def test_a_move_over_lossy_pixels_makes_its_whole_area_lossy() -> None:
    areas = LossyAreas(still=0.5)
    areas.moved(Rect(0, 0, 50, 50), now=1.0)  # nothing lossy there: nothing to do
    assert not areas
    areas.sent(Rect(0, 40, 100, 20), True, now=1.0)
    areas.moved(Rect(0, 0, 100, 100), now=2.0)  # a scroll reads the lossy strip
    assert areas.rects() == [Rect(0, 0, 100, 100)] and areas.next_due() == 2.5


def test_subtract_covers_the_rest_exactly() -> None:
    rect, cut = Rect(0, 0, 10, 10), Rect(3, 4, 4, 3)
    parts = subtract(rect, cut)
    assert sum(p.area for p in parts) == rect.area - cut.area
    assert subtract(rect, Rect(20, 20, 5, 5)) == [rect]


def test_jpeg_budget_lowers_quality_to_paint_within_the_link_budget(corpus: Path) -> None:
    photo = load_image(corpus / PHOTO)
    pixels = photo.shape[0] * photo.shape[1]
    budget = JpegBudget(85)
    assert budget.quality(pixels, None) == 85  # no estimate: the configured quality
    assert budget.quality(pixels, 100e6) == 85
    assert budget.quality(64 * 64, 2e6) == 85  # a small area fits at any rate
    for bps in (2e6, 5e6):
        quality = budget.quality(pixels, bps)
        assert MIN_JPEG_QUALITY <= quality < 85 or bps > 2e6
        size = len(encode_shared(photo, "jpeg", CodecSettings(jpeg_quality=quality)).body[1])
        # The prediction holds on the photo it was measured on (within 10 %).
        assert size * 8 / bps <= FIRST_PAINT_SECONDS * 1.1, (bps, quality, size)
    assert budget.quality(pixels, 100e3) == MIN_JPEG_QUALITY  # never lower
    assert JpegBudget(20).quality(pixels, 100e3) == 20  # nor above the user's ceiling


def test_jpeg_budget_learns_the_sessions_bytes_per_pixel() -> None:
    budget = JpegBudget(85)
    first = budget.quality(1920 * 1080, 2e6)
    for _ in range(4):  # a smooth gradient: far fewer bytes per pixel than a photo
        budget.observed(1920 * 1080, 40_000, first)
    assert budget.quality(1920 * 1080, 2e6) == 85
    budget.observed(10, 10_000, 85)  # a tiny area teaches nothing
    assert budget.quality(1920 * 1080, 2e6) == 85


# ---------------------------------------------------------------------- the stack in memory


class Canvas:
    """Applies DRAW_COPYs of raw, LZ, QUIC and JPEG images; notes each image's type."""

    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.zeros((height, width, 4), np.uint8)
        self.types: list[int] = []
        self.marks = 0

    def apply(self, body: bytes) -> None:
        top, left, bottom, right = struct.unpack_from("<4i", body, 4)
        _id, image_type, _flags, width, height = struct.unpack_from("<QBBII", body, 57)
        self.types.append(image_type)
        assert (right - left, bottom - top) == (width, height)
        if image_type == ImageType.BITMAP:
            data = np.frombuffer(body, np.uint8, width * height * 4, 93)
            pixels = data.reshape(height, width, 4)
        else:
            (size,) = struct.unpack_from("<I", body, 75)
            payload = body[79 : 79 + size]
            if image_type == ImageType.JPEG:
                pixels = simplejpeg.decode_jpeg(payload, colorspace="BGRX")
            elif image_type == ImageType.QUIC:
                pixels = quic_decode(payload)[1]
            else:
                assert image_type == ImageType.LZ_RGB, image_type
                pixels = lz_decode(payload).pixels
        self.pixels[top:bottom, left:right, :3] = pixels[..., :3]


class Display:
    """A display channel client in memory: answers PINGs, ACKs, draws."""

    def __init__(self, client: MemoryClient, canvas: Canvas) -> None:
        self.client, self.canvas = client, canvas
        self.received = 0
        self.pongs = 0

    def pump(self) -> None:
        for type_, body in self.client.messages():
            self.received += 1
            if self.received % 20 == 0:
                self.client.send(frame(BaseClientMsg.ACK))
            if type_ == BaseServerMsg.PING:
                self.client.send(frame(BaseClientMsg.PONG, body[:12]))
                self.pongs += 1
            elif type_ == DisplayServerMsg.DRAW_COPY:
                self.canvas.apply(body)
            elif type_ == DisplayServerMsg.MARK:
                self.canvas.marks += 1

    async def until(self, condition: object) -> None:
        def done() -> bool:
            self.pump()
            return bool(condition())  # type: ignore[operator]

        await turns(done, timeout=30)


async def open_display(
    server: SpiceServer, caps: list[int], width: int, height: int, link_bps: float | None = None
) -> tuple[MemoryClient, Display]:
    """``link_bps``: the session's link as if its net test had measured that."""
    main = await main_at(server)
    if link_bps is not None:
        (session,) = server.sessions()
        session.metrics.link.net_test_bps = link_bps
    sid = init_session_id(main)
    client = await linked(
        server, ChannelType.DISPLAY, PASSWORD, connection_id=sid, channel_caps=caps
    )
    client.send(frame(BaseClientMsg.ACK_SYNC, struct.pack("<I", 1)))
    client.send(frame(101, struct.pack("<BqBi", 1, 1 << 20, 0, 0)))  # DISPLAY_INIT, no GLZ
    return main, Display(client, Canvas(width, height))


def jpeg_server(source: NumpySource, **options: object) -> SpiceServer:
    options.setdefault("jpeg_wan_compression", "always")
    return SpiceServer(
        source,
        password=PASSWORD,
        warmup_encoders=False,
        port=0,
        image_compression=ImageCompression.AUTO_LZ,
        **options,  # type: ignore[arg-type]
    )


def test_photo_goes_jpeg_and_is_refreshed_losslessly_once_still(corpus: Path) -> None:
    photo = load_image(corpus / PHOTO)[600:696, 0:160].copy()

    async def scenario() -> None:
        source = NumpySource(frame=photo)
        server = await ready(jpeg_server(source, lossless_refresh=0.5))
        clock = FakeClock.install(server)
        _main, display = await open_display(server, [DisplayCap.CODEC_MJPEG], 160, 96)
        canvas = display.canvas
        # The start-up PING, then the one after the lossy update: its PONG starts the still
        # time (the client has drawn it).
        await display.until(lambda: canvas.marks and display.pongs == 2)
        assert canvas.types == [ImageType.JPEG]
        assert psnr(canvas.pixels, photo) >= 30
        assert not np.array_equal(canvas.pixels[..., :3], photo[..., :3])
        clock.advance(0.3)  # not still long enough: an update (a wake) refreshes nothing
        display.client.send(frame(BaseClientMsg.ACK_SYNC, struct.pack("<I", 1)))
        for _ in range(20):
            await turns(lambda: True)
        display.pump()
        assert canvas.types == [ImageType.JPEG]
        clock.advance(0.3)  # still for 0.6 s now
        display.client.send(frame(BaseClientMsg.ACK_SYNC, struct.pack("<I", 1)))
        await display.until(lambda: np.array_equal(canvas.pixels[..., :3], photo[..., :3]))
        assert canvas.types == [ImageType.JPEG, ImageType.QUIC]
        (session,) = server.sessions()
        assert session.metrics.lossless_refreshes == 1
        assert set(session.metrics.bytes_by_codec) == {"jpeg", "quic"}
        await server.close()

    run(scenario())


def test_a_slow_link_gets_its_photo_at_a_quality_it_can_carry_at_once(corpus: Path) -> None:
    photo = load_image(corpus / PHOTO)
    height, width = photo.shape[:2]
    full = len(encode_shared(photo, "jpeg").body[1])  # the first frame is one image

    async def scenario() -> None:
        server = await ready(jpeg_server(NumpySource(frame=photo), lossless_refresh=30))
        _main, display = await open_display(server, [DisplayCap.CODEC_MJPEG], width, height, 2e6)
        (session,) = server.sessions()
        await display.until(lambda: display.canvas.marks)
        assert display.canvas.types == [ImageType.JPEG]
        sent = session.metrics.bytes_by_codec["jpeg"]
        assert sent * 8 / 2e6 <= FIRST_PAINT_SECONDS * 1.2 < full * 8 / 2e6, (sent, full)
        assert psnr(display.canvas.pixels, photo) >= 32
        await server.close()

    run(scenario())


@pytest.mark.parametrize("case", ["text", "no-mjpeg-cap", "server-quic", "never"])
def test_lossy_never_reaches(case: str, corpus: Path) -> None:
    photo = load_image(corpus / PHOTO)[600:696, 0:160].copy()
    text = load_image(corpus / TEXT_FRAMES[0])[0:96, 0:160].copy()
    image = text if case == "text" else photo
    caps = [] if case == "no-mjpeg-cap" else [DisplayCap.CODEC_MJPEG]
    options: dict[str, object] = {}
    if case == "never":
        options["jpeg_wan_compression"] = "never"

    async def scenario() -> None:
        source = NumpySource(frame=image)
        server = jpeg_server(source, **options)
        if case == "server-quic":
            server = SpiceServer(
                source,
                password=PASSWORD,
                warmup_encoders=False,
                port=0,
                image_compression=ImageCompression.QUIC,
                jpeg_wan_compression="always",
            )
        await ready(server)
        _main, display = await open_display(server, caps, 160, 96)
        canvas = display.canvas
        await display.until(lambda: np.array_equal(canvas.pixels[..., :3], image[..., :3]))
        assert ImageType.JPEG not in canvas.types
        await server.close()

    run(scenario())


def test_zlib_glz_wraps_the_glz_stream_when_smaller(corpus: Path) -> None:
    import zlib

    from encoders import GlzDictionary

    text = load_image(corpus / TEXT_FRAMES[0])[0:256, 0:1024]
    plain = ImageEncoder(ImageCompression.GLZ, glz=GlzDictionary(1 << 20))
    wrapped = ImageEncoder(ImageCompression.GLZ, glz=GlzDictionary(1 << 20))
    wrapped.zlib_glz = True
    glz_image, codec = plain.encode(text)
    zlib_image, zcodec = wrapped.encode(text)
    assert (codec, zcodec) == ("glz", "zlib-glz") and zlib_image.type == ImageType.ZLIB_GLZ_RGB
    head, data = zlib_image.body
    glz_size, data_size = struct.unpack("<II", head)
    assert data_size == len(data) < glz_size
    assert zlib.decompress(data) == bytes(glz_image.body[1])  # the same GLZ image inside
    flat = np.zeros((20, 20, 4), np.uint8)  # a few bytes of GLZ: left alone
    assert wrapped.encode(flat)[1] == "glz"
