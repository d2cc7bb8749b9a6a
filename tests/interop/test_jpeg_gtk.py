"""JPEG images and their lossless refresh, decoded by spice-gtk (issue 16 item 2).

A photographic corpus frame goes out as JPEG (``--jpeg-wan-compression always``): spice-gtk
shows a close copy (PSNR >= 30 dB) first, and the exact pixels once the area has been still
for ``lossless_refresh`` seconds.  A client that asked for lossless images (spice-gtk's
``preferred-compression``) never gets JPEG.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from spiceserver import NumpySource
from spiceserver.sources.image import load_image
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread

pytestmark = pytest.mark.interop

PASSWORD = "jpeg"
PHOTO = "photo_dune_1920x1080.png"
TEXT = "terminal_manpage_1920x1080.png"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a[..., :3].astype(np.float64) - b[..., :3]) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def first_close_frame(client: GtkClient, expected: np.ndarray, timeout: float) -> np.ndarray:
    """The first frame spice-gtk shows that is close to ``expected`` (after each update)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.wait_for("mark", timeout=max(0.1, deadline - time.monotonic()))
        frame = client.dump_frame()
        if frame.shape == expected.shape and psnr(frame, expected) >= 25:
            return frame
    raise TimeoutError("no frame close to the source")


def codec_bytes(st: ServerThread) -> dict[str, int]:
    server = st.server
    assert server is not None
    totals: dict[str, int] = {}
    for session in server.sessions():
        for codec, size in session.metrics.bytes_by_codec.items():
            totals[codec] = totals.get(codec, 0) + size
    return totals


def test_photo_goes_jpeg_then_settles_exact(corpus: Path) -> None:
    photo = load_image(corpus / PHOTO)
    source = NumpySource(frame=photo)
    # A long still time, so the lossy frame is surely seen before its refresh.
    options = {"jpeg_wan_compression": "always", "lossless_refresh": 2.0}
    with (
        ServerThread(source, password=PASSWORD, **options) as st,
        GtkClient(st.uri, PASSWORD, channels=["display"]) as client,
    ):
        lossy = first_close_frame(client, photo, timeout=30)
        assert not np.array_equal(lossy[..., :3], photo[..., :3])
        quality = psnr(lossy, photo)
        assert quality >= 30, quality
        assert codec_bytes(st).get("jpeg", 0) > 0
        client.wait_for_frame(photo, timeout=30)  # the lossless refresh
        sizes = codec_bytes(st)
        server = st.server
        assert server is not None
        (session,) = server.sessions()
        assert session.metrics.lossless_refreshes >= 1
        # The whole photo went lossy once and came back lossless once (QUIC).
        assert sizes["jpeg"] < sizes["quic"] / 4, sizes


def test_text_stays_lossless_and_lossless_clients_get_no_jpeg(corpus: Path) -> None:
    text, photo = load_image(corpus / TEXT), load_image(corpus / PHOTO)
    source = NumpySource(frame=text)
    prefer_lz = ["--session-prop", "preferred-compression=6"]  # SPICE_IMAGE_COMPRESSION_LZ
    with ServerThread(source, password=PASSWORD, jpeg_wan_compression="always") as st:
        with GtkClient(st.uri, PASSWORD, channels=["display"]) as client:
            client.wait_for_frame(text, timeout=30)
            assert "jpeg" not in codec_bytes(st)
        with GtkClient(st.uri, PASSWORD, channels=["display"], extra_args=prefer_lz) as client:
            client.wait_for_frame(text, timeout=30)
            st.call(lambda: source.update(photo))
            client.wait_for_frame(photo, timeout=60)
            sizes = codec_bytes(st)
            assert "jpeg" not in sizes and sizes.get("lz", 0) > 0, sizes  # its preference held


def test_zlib_wrapped_glz_decodes_exactly(corpus: Path) -> None:
    source = NumpySource(frame=load_image(corpus / TEXT))
    with (
        ServerThread(source, password=PASSWORD, zlib_glz_wan_compression="always") as st,
        GtkClient(st.uri, PASSWORD, channels=["display"]) as client,
    ):
        client.wait_for_frame(source.frame, timeout=30)
        for name in ("desktop_xapps_1280x800.png", "web_pydoc_tutorial_1920x1080.png", TEXT):
            frame = load_image(corpus / name)
            st.call(lambda frame=frame: source.update(frame))
            client.wait_for_frame(frame, timeout=60)
        sizes = codec_bytes(st)
        assert sizes.get("zlib-glz", 0) > 0, sizes
