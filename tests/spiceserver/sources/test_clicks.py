"""The click track and the pattern that clicks: where a click lands, and who clicks when."""

from __future__ import annotations

import threading

import numpy as np

from spiceserver import SpiceServer
from spiceserver.sources.audio import BLOCK_BYTES, ClickTrack
from spiceserver.sources.pattern import PatternClickSource


def onsets(pcm: bytes, threshold: int = 1000) -> list[int]:
    """Frame numbers where a burst starts (above threshold after 10 ms below it)."""
    left = np.abs(np.frombuffer(pcm, dtype=np.int16).reshape(-1, 2)[:, 0].astype(np.int32))
    loud = np.flatnonzero(left > threshold)
    return [int(i) for k, i in enumerate(loud) if k == 0 or i - loud[k - 1] > 480]


def test_clicks_land_at_their_clock_time_in_a_stream_that_never_goes_silent() -> None:
    track = ClickTrack()
    blocks: list[bytes] = []
    enough = threading.Event()
    first_block = threading.Event()

    def sink(pcm: bytes) -> None:
        first_block.set()
        blocks.append(pcm)
        if len(blocks) >= 40:
            enough.set()

    track.start(sink)
    try:
        assert first_block.wait(5)
        # When block 0 was due, not when this thread heard of it: on a busy machine the
        # sink's wake-up came 2.6 ms late once, and the clicks, placed by the clock, then
        # looked 126 samples late.
        assert track.first_due is not None
        base = track.first_due
        track.click(1, at=base + 0.0537)
        track.click(2, at=base + 0.1537)
        assert enough.wait(5)
    finally:
        track.close()
    assert all(len(b) == BLOCK_BYTES and any(b) for b in blocks)  # never digital silence
    found = onsets(b"".join(blocks[:40]))
    assert len(found) == 2
    assert abs(found[1] - found[0] - 4800) <= 2  # 100 ms apart, to the sample
    # The first block (pushed at ``base``) holds [base - 10 ms, base): click 1 is 63.7 ms in.
    assert abs(found[0] - round(0.0637 * 48000)) <= 48 * 2
    assert [label for label, _ in track.log] == [1, 2]


def test_the_pattern_clicks_every_nth_frame_and_is_the_servers_sound() -> None:
    source = PatternClickSource(320, 240, fps=0, every=5)
    for _ in range(12):
        source.advance()
    assert [frame for frame, _ in source.clicks.log] == [5, 10]
    server = SpiceServer(source, password="x", warmup_encoders=False, port=0)
    assert server._audio is not None and server._audio.source is source.clicks
