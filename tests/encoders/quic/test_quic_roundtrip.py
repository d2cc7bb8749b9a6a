"""Encode -> reference decode == input, for RGB32 (X dropped) and RGBA (no golden vector)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from encoders.quic import quic_encode
from tests.encoders.quic.quic_images import images, make_image
from tests.reference.quic_decode import quic_decode


def _check(img: np.ndarray, alpha: bool) -> None:
    qtype, decoded = quic_decode(quic_encode(img, alpha=alpha))
    expected = img.copy()
    if not alpha:
        expected[..., 3] = 0
    assert qtype == (5 if alpha else 4)
    assert np.array_equal(decoded, expected)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=images(max_width=40, max_height=6))
def test_roundtrip_random(img: np.ndarray) -> None:
    _check(img, alpha=True)
    _check(img, alpha=False)


@pytest.mark.parametrize(
    ("kind", "height", "width"),
    [("flat_alpha", 24, 48), ("palette", 20, 64), ("smooth", 16, 40), ("palette", 2, 2100)],
)
@pytest.mark.parametrize("alpha", [True, False])
def test_roundtrip_structured(kind: str, height: int, width: int, alpha: bool) -> None:
    """Bigger frames: model adaptation, alpha-plane runs, segment boundaries (2100 wide)."""
    _check(make_image(kind, height, width, seed=height * width), alpha)


def test_rgba_differs_from_rgb_only_by_alpha_plane() -> None:
    """With alpha the RGB part is still coded: an opaque RGBA image decodes to the same colours."""
    img = make_image("smooth", 8, 12, seed=1)
    img[..., 3] = 255
    _, rgba = quic_decode(quic_encode(img, alpha=True))
    _, rgb = quic_decode(quic_encode(img))
    assert np.array_equal(rgba[..., :3], rgb[..., :3])
    assert (rgba[..., 3] == 255).all()
