"""A first frame waits only for the codecs it may be sent with, and those load first.

With numba's cache warm, loading every kernel took ~0.65 s after start (numba 0.35, LZ 0.14,
GLZ 0.10, QUIC 0.06); an auto-glz client's 1080p first frame needs GLZ and QUIC, not LZ."""

from __future__ import annotations

import asyncio

from encoders import GlzDictionary
from spiceserver.protocol.enums import ImageCompression
from spiceserver.server.codecs import ImageEncoder, warm_order
from spiceserver.server.warmup import EncoderWarmup

SPICE_GTK_WINDOW = 3_145_728  # pixels (spice-gtk's GLZ window)


def test_a_mode_loads_its_first_candidate_then_its_photographic_codec() -> None:
    assert warm_order(ImageCompression.AUTO_GLZ) == ("glz", "quic", "lz")
    assert warm_order(ImageCompression.AUTO_LZ) == ("lz", "quic")
    assert warm_order(ImageCompression.QUIC) == ("quic", "lz")
    assert warm_order(ImageCompression.OFF) == ("raw",)


def test_a_first_frame_may_use_the_first_candidate_that_takes_it_and_the_photo_codec() -> None:
    encoder = ImageEncoder(ImageCompression.AUTO_GLZ, ready=set())  # nothing ready yet
    encoder.glz = GlzDictionary(SPICE_GTK_WINDOW)
    assert encoder.codecs_for(1920, 1080) == {"glz", "quic"}
    assert encoder.codecs_for(3840, 2160) == {"lz", "quic"}  # more than the window: LZ
    encoder.glz = None  # spice-html5: no GLZ at all
    assert encoder.codecs_for(1920, 1080) == {"lz", "quic"}
    assert ImageEncoder(ImageCompression.OFF).codecs_for(640, 480) == {"raw"}


def test_waiting_for_codecs_ends_when_they_are_ready_or_the_warm_up_is_over() -> None:
    async def scenario() -> None:
        ready: set[str] = {"raw", "jpeg"}
        warmup = EncoderWarmup(ready, warm_order(ImageCompression.AUTO_GLZ))
        waiting = asyncio.ensure_future(warmup.wait_for({"glz", "quic"}))
        for name in ("glz", "lz"):
            warmup._ready(name)
            await asyncio.sleep(0)
            assert not waiting.done(), name
        warmup._ready("quic")
        await asyncio.wait_for(waiting, 5)
        # A codec that never loads (it failed to compile) waits no longer than the warm-up.
        never = asyncio.ensure_future(warmup.wait_for({"missing"}))
        await asyncio.sleep(0)
        assert not never.done()
        warmup._finish(0.1)
        await asyncio.wait_for(never, 5)

    asyncio.run(scenario())
