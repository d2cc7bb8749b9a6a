"""A video playing on a real X desktop reaches spice-gtk as a video stream (issue 16).

Xvfb shows a flat background and ``ffplay`` playing a generated clip (tests/interop/
desktop_video.py: a moving gradient over a test card, 320×240, 25 fps) in a fixed rectangle.
spiceserver exports that desktop (the X11 source, ``--streaming-video filter``, the default
``--video-codecs h264,vp8,mjpeg``) to a real spice-gtk 0.42 client (Debian's, through GObject
introspection), twice:

* **with GStreamer's plugins** (gstreamer1.0-plugins-good/-bad, gstreamer1.0-libav, as
  tests/run.sh installs them): spice-gtk advertises H.264 (and VP8, VP9, H.265) and receives an
  H.264 stream;
* **without them**: the same client with GStreamer limited to its core elements and
  plugins-base (a plugin folder and registry of its own, :func:`gstreamer_base_env`), as on a
  machine without those packages: it advertises MJPEG only and receives an MJPEG stream.

Each time: the server runs one stream of that codec and nothing else; the client shows it
(display invalidations of the video's rectangle at a video's rate); frames it shows while the
clip plays and after the player is frozen (SIGSTOP: the last frame stays on the X screen) are
close to what X showed (PSNR ≥ 30 dB against one of the last distinct pictures grabbed from the
X server: a decoder may hold a frame or two back), and lossy; then, within a bounded wait, the
stream has ended and the client's whole screen equals the X screen (ImageMagick's grab) pixel
for pixel: the lossless repaint.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spiceserver.sources.base import Rect
from spiceserver.sources.desktop import DesktopSource
from tests.interop.clients import (
    GtkClient,
    Xvfb,
    _poll_until,
    have_tools,
    screenshot_array,
    x_env,
)
from tests.interop.desktop_video import (
    CLIP_FPS,
    AreaGrabber,
    Player,
    gstreamer_base_env,
    make_clip,
)
from tests.interop.serverthread import ServerThread
from tests.interop.test_streams_gtk import metrics, psnr

pytestmark = pytest.mark.interop

PASSWORD = "desktop-video"
WIDTH, HEIGHT = 640, 480
VIDEO_AT = (160, 120)
#: The clip is longer than the test plays it: no loop seam while frames are compared.
CLIP_SECONDS = 8.0


def best_lossy_psnr(client: GtkClient, grabber: AreaGrabber, rect: Rect) -> float:
    """The client's picture of ``rect`` against the last pictures X showed there: the best
    PSNR, exact copies left out (a lossless repaint is no stream frame)."""
    shown = client.dump_frame()[rect.y : rect.bottom, rect.x : rect.right]
    qualities = [psnr(shown, frame) for frame in grabber.fresh()]
    return float(max([0.0, *(q for q in qualities if q != float("inf"))]))


@contextlib.contextmanager
def desktop_with_video(tmp_path: Path) -> Iterator[tuple[str, Player, AreaGrabber]]:
    clip = make_clip(tmp_path / "clip.mkv", CLIP_SECONDS)
    with contextlib.ExitStack() as stack:
        display = stack.enter_context(Xvfb(WIDTH, HEIGHT))
        subprocess.run(
            ["xsetroot", "-solid", "#305070"], env=x_env(display), check=True, timeout=20
        )
        player = stack.enter_context(contextlib.closing(Player(display, clip, *VIDEO_AT)))
        grabber = stack.enter_context(contextlib.closing(AreaGrabber(display, player.rect)))
        grabber.wait_changes(3, timeout=20)  # ffplay's window is up and playing
        player.check()
        yield display, player, grabber


def shown_fps(client: GtkClient, rect: Rect, since: int, frames: int) -> float:
    """The rate of the client's invalidations of exactly ``rect`` (one per stream frame it
    shows) over the first ``frames`` after event ``since``, in the harness's own clock."""
    times: list[float] = []

    def frame(event: dict[str, Any]) -> bool:
        if (event["x"], event["y"], event["w"], event["h"]) == (
            rect.x,
            rect.y,
            rect.width,
            rect.height,
        ):
            times.append(event["t"])
        return len(times) >= frames

    client.wait_for("invalidate", frame, timeout=20, since=since, consume=False)
    return (frames - 1) / (times[-1] - times[0])


@pytest.mark.parametrize(("plugins", "codec"), [("gstreamer", "h264"), ("no-plugins", "mjpeg")])
def test_video_on_the_desktop_streams_then_settles_exact(
    tmp_path: Path, plugins: str, codec: str
) -> None:
    assert have_tools("ffmpeg", "ffplay", "Xvfb", "import", "dpkg"), "ffmpeg/Xvfb/ImageMagick"
    env = gstreamer_base_env(tmp_path) if plugins == "no-plugins" else None
    with (
        desktop_with_video(tmp_path) as (display, player, grabber),
        ServerThread(DesktopSource(display), password=PASSWORD, streaming_video="filter") as st,
        GtkClient(st.uri, PASSWORD, channels=["display"], env=env) as client,
    ):
        client.wait_channel_open("display", timeout=20)
        (link,) = [e for e in st.events if e.get("event") == "link" and e["channel"] == "display"]
        caps = set(link["channel_caps"])
        assert "codec_mjpeg" in caps, caps
        assert ("codec_h264" in caps) == (plugins == "gstreamer"), caps

        # The stream starts (about half a second of frames) and plays.
        started = _poll_until(lambda: metrics(st)[1] >= 5, timeout=20, interval=0.02)
        assert started, metrics(st)
        # It plays at a video's rate: the client's invalidations of the video's rectangle.
        fps = shown_fps(client, player.rect, client.event_index, frames=20)
        assert fps >= CLIP_FPS / 3, (fps, metrics(st))
        # Frames shown while it plays (one each few frames) are close to what X just showed.
        live = []
        for _ in range(3):
            live.append(best_lossy_psnr(client, grabber, player.rect))
            shown_fps(client, player.rect, client.event_index, frames=3)
        assert max(live) >= 30, live

        # Frozen: the last frame stays on the X screen, the client shows the stream's last
        # frame until the stream ends (a second later) and the area is repainted losslessly.
        player.pause()
        deadline = time.monotonic() + 0.6
        still = best_lossy_psnr(client, grabber, player.rect)
        while still < 30 and time.monotonic() < deadline:
            still = max(still, best_lossy_psnr(client, grabber, player.rect))
        assert still >= 30, (still, live)
        expected = screenshot_array(display)[..., ::-1]
        t_frozen = time.monotonic()
        client.wait_for_frame(expected, timeout=10)
        exact_after = time.monotonic() - t_frozen

        streams, frames, sizes = metrics(st)
        stream_codecs = {
            name for name, size in sizes.items() if name.startswith("stream-") and size
        }
        assert stream_codecs == {f"stream-{codec}"}, sizes
        assert streams == 1, (streams, sizes)
        summary = metrics_summary(st)
        assert summary["lossless_refreshes"] >= 1, summary
        print(
            f"{plugins}: {codec} stream, {frames} frames, client {fps:.1f} fps, PSNR live "
            f"{[round(q, 1) for q in live]}, frozen {still:.1f} dB, exact {exact_after:.2f} s "
            f"after the freeze; {summary['line']}"
        )


def metrics_summary(st: ServerThread) -> dict[str, Any]:
    server = st.server
    assert server is not None
    (session,) = server.sessions()
    return {
        "lossless_refreshes": session.metrics.lossless_refreshes,
        "line": session.metrics.summary(),
    }
