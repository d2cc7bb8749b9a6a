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
