"""The first frame: one image of the whole surface, in the codec the client asked for.

spicy-screenshot saves the first frame it is told about, so the whole surface must come as one
image (libspice-server's ``dcc_push_surface_image``); and a preference given the way
remote-viewer gives it (the session's ``preferred-compression`` property, which spice-gtk sends
just after DISPLAY_INIT) must already hold for that first image.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from spiceserver import NumpySource
from spiceserver.sources.image import load_image
from spiceserver.testing import RunningServer
from tests.conftest import CORPUS, data_file
from tests.interop.clients import GtkClient

pytestmark = pytest.mark.interop

PASSWORD = "first-frame"
MODES = ["off", "lz", "glz", "quic", "auto-glz", "auto-lz"]
#: SpiceImageCompression, as the session property takes it (spice-protocol spice/enums.h).
PREFERENCES = {"off": 1, "quic": 4, "lz": 6}
#: What the session metrics call what each preference must produce.
CODEC_OF = {"off": "raw", "quic": "quic", "lz": "lz"}


def read_ppm(path: Path) -> np.ndarray:
    """A binary PPM (P6, maxval 255) as (H, W, 3) R, G, B."""
    data = path.read_bytes()
    fields: list[bytes] = []
    offset = 0
    while len(fields) < 4:  # magic, width, height, maxval; '#' comments skipped
        while data[offset : offset + 1].isspace():
            offset += 1
        if data[offset : offset + 1] == b"#":
            offset = data.index(b"\n", offset) + 1
            continue
        end = offset
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[offset:end])
        offset = end
    assert fields[0] == b"P6" and fields[3] == b"255", fields
    width, height = int(fields[1]), int(fields[2])
    pixels = np.frombuffer(data, np.uint8, width * height * 3, offset + 1)
    return pixels.reshape(height, width, 3)


def served_image() -> np.ndarray:
    """A real desktop frame with a noisy band: flat UI, text and photo-like areas."""
    frame = load_image(data_file(CORPUS / "desktop_xapps_1280x800.png")).copy()
    rng = np.random.default_rng(5)
    frame[600:700, :, :3] = rng.integers(0, 256, (100, frame.shape[1], 3), dtype=np.uint8)
    return frame


@pytest.mark.parametrize("mode", MODES)
def test_spicy_screenshot_saves_the_whole_frame(mode: str, tmp_path: Path) -> None:
    frame = served_image()
    with RunningServer(NumpySource(frame=frame), password=PASSWORD, image_compression=mode) as st:
        out = tmp_path / "shot.ppm"
        result = subprocess.run(
            ["spicy-screenshot", "--uri", st.uri_with_password, "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    shot = read_ppm(out)
    assert shot.shape[:2] == frame.shape[:2]
    mismatched = np.any(shot != frame[..., 2::-1], axis=2)
    assert not mismatched.any(), (
        f"{int(mismatched.sum())} pixels differ, first rows "
        f"{sorted(set(np.nonzero(mismatched)[0].tolist()))[:5]}"
    )


@pytest.mark.parametrize("preference", sorted(PREFERENCES))
def test_the_preference_holds_from_the_first_frame(preference: str) -> None:
    frame = served_image()
    with RunningServer(NumpySource(frame=frame), password=PASSWORD) as st:  # auto-glz
        assert st.server is not None
        server = st.server
        for _ in range(5):  # the race was timing-dependent: several sessions
            args = ["--session-prop", f"preferred-compression={PREFERENCES[preference]}"]
            with GtkClient(st.uri, PASSWORD, extra_args=args) as client:
                client.wait_for_frame(frame, timeout=30)
                codecs = st.call(
                    lambda: [dict(s.metrics.bytes_by_codec) for s in server.sessions()]
                )
            assert codecs and all(set(c) == {CODEC_OF[preference]} for c in codecs), codecs
