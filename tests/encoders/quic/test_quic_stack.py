"""``quic_encode_stack``: bands coded one after another are the stream of the stacked image."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from encoders.quic import QuicError, quic_encode, quic_encode_stack
from tests.encoders.quic.quic_images import make_image


@pytest.mark.parametrize("kind", ["noise", "palette"])
@pytest.mark.parametrize(
    "cuts", [[], [1], [1, 2, 3], [7], [12], [5, 6, 11]], ids=lambda c: "-".join(map(str, c))
)
def test_stack_is_the_whole_image(kind: str, cuts: list[int]) -> None:
    img = make_image(kind, 13, 37, seed=len(cuts) + 3)
    img[..., 3] = 0
    edges = [0, *cuts, img.shape[0]]
    parts = [img[a:b].copy() for a, b in itertools.pairwise(edges)]
    assert quic_encode_stack(parts) == quic_encode(img)


def test_stack_of_views_of_a_larger_frame() -> None:
    frame = make_image("palette", 300, 200, seed=9)
    region = frame[10:290, 30:190]  # strided views, read in place
    parts = [region[:100], region[100:101], region[101:]]
    assert quic_encode_stack(parts) == quic_encode(np.ascontiguousarray(region))


def test_stack_rejects_bad_parts() -> None:
    with pytest.raises(QuicError):
        quic_encode_stack([])
    with pytest.raises(QuicError):
        quic_encode_stack([np.zeros((2, 4, 4), np.uint8), np.zeros((2, 5, 4), np.uint8)])
    with pytest.raises(QuicError):
        quic_encode_stack([np.zeros((2, 4, 4), np.uint16)])


def test_adjacent_bands_are_coded_as_one_image(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server's bands are views of one read of the area, each right after the other in
    # memory: one image call, the same stream.  Parts apart in memory go band by band.
    from encoders.quic import api

    img = make_image("palette", 40, 24, seed=4)
    img[..., 3] = 0
    adjacent = [img[:10], img[10:11], img[11:]]
    want = quic_encode(img)
    whole: list[tuple[int, ...]] = []

    def spy(pixels: np.ndarray, **kwargs: bool) -> bytes:
        whole.append(pixels.shape)
        return quic_encode(pixels, **kwargs)

    monkeypatch.setattr(api, "quic_encode", spy)
    assert quic_encode_stack(adjacent) == want
    assert whole == [img.shape]
    reordered = [img[11:], img[:11]]  # the second part lies before the first
    assert api._adjacent(reordered) is None
    assert quic_encode_stack(reordered) == quic_encode(np.concatenate(reordered))
    assert whole == [img.shape]  # band by band
    readonly = img.copy()
    readonly.flags.writeable = False
    assert api._adjacent([readonly[:5], readonly[5:]]) is None
