"""Video streams, continued (issue 16): a candidate's frames go as JPEG while it is detected,
the stream's rate follows the link, a window over the video clips the stream instead of
ending it, and the toolkit (record, fault, metrics) sees streams.  The whole stack in memory
(``tests.memory``) with an injected clock, as in test_streams.py.
"""

from __future__ import annotations

import numpy as np

from spiceserver import ImageCompression
from spiceserver.protocol.enums import DisplayCap, ImageType
from tests.conftest import run
from tests.spiceserver.server.test_streams import (
    StreamDisplay,
    _handler,
    idle,
    show,
    start,
)


def count_types(display: StreamDisplay) -> None:
    """Record image types without decoding (the reference QUIC decoder is slow)."""
    canvas = display.canvas
    canvas.apply = lambda body: canvas.types.append(body[65])  # type: ignore[method-assign]


# ---------------------------------------------------------------------- candidates


def test_a_candidates_frames_go_as_jpeg_on_a_fast_link_not_to_a_lossless_client() -> None:
    async def scenario(caps: list[int], options: dict[str, object]) -> list[int]:
        server, source, display, clock = await start(caps, **options)
        count_types(display)
        before = len(display.canvas.types)
        k = 0
        while not display.created and k < 30:
            await show(source, display, clock, k)
            k += 1
        await server.close()
        return display.canvas.types[before:]

    # JPEG "auto" on a link never measured slow: images lossless, but a candidate's frames
    # JPEG from its second update on (the stream that follows is lossy anyway).
    mjpeg = [DisplayCap.CODEC_MJPEG, DisplayCap.STREAM_REPORT]
    types = run(scenario(mjpeg, {"jpeg_wan_compression": "auto"}))
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
