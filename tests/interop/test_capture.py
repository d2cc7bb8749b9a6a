"""Capture mode against real tools: spice-gtk makes the traffic, tshark and ffprobe read the files.

What the issue is judged on: Wireshark's SPICE dissector decodes every pcap of a session with
no malformed frame (and, with checksum validation switched on, no bad checksum) and shows the
session's messages, DRAW_COPY among them; ffprobe reads display.mp4 at the surface's size with
one frame per screen update (updates merged because the encoder was behind are counted apart).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spiceserver import PatternSource
from spiceserver.capture import VideoStats, video_unavailable_reason
from tests.interop.clients import GtkClient, have_tools
from tests.interop.serverthread import ServerThread

pytestmark = pytest.mark.interop

PASSWORD = "capture-pw"
SIZE = (640, 480)
#: tshark lines that count as problems (as tests.interop.clients.tshark_dissect), plus the
#: checksum verdicts once validation is on.
PROBLEMS = ("[Malformed Packet", "Expert Info (Error", "[Dissector bug", "Status: Bad]")
NO_VIDEO = video_unavailable_reason()


@dataclass
class Capture:
    directory: Path
    frames: int  # screen updates the session sent (its metrics)
    videos: list[VideoStats]


def run_session(root: Path, size: tuple[int, int], updates: int) -> Capture:
    """One spice-gtk session against a capturing server; returns when every file is closed."""
    source = PatternSource(*size)
    with ServerThread(source, password=PASSWORD, capture_dir=str(root)) as st:
        with GtkClient(st.uri, PASSWORD) as client:
            client.wait_channel_open("inputs")
            client.wait_for("mark", timeout=20)
            assert st.server is not None
            sessions = st.call(lambda: list(st.server.sessions()))  # type: ignore[union-attr]
            deadline = time.monotonic() + 30
            while sessions[0].metrics.frames < updates:  # the pattern animates at 30 fps
                assert time.monotonic() < deadline, "the session sent too few updates"
                client.wait_for("invalidate", timeout=10)
            client.key_press_and_release(0x1E)
            client.position(10, 10)
            client.ping()
        # Closing the server ends the session and waits (bounded) for the video to be written.
    assert st.server is not None and st.server.context.captures is not None
    (session,) = sessions
    (directory,) = root.iterdir()
    return Capture(directory, session.metrics.frames, list(st.server.context.captures.videos))


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    root = Path(tempfile.mkdtemp(prefix="spiceserver-capture-"))
    try:
        yield run_session(root, SIZE, updates=15)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def dissect(pcap: Path) -> tuple[str, int]:
    """Verbose tshark text with port 5900 as SPICE and IPv4/TCP checksum validation on."""
    res = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-d",
            "tcp.port==5900,spice",
            "-V",
            "-o",
            "tcp.desegment_tcp_streams:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    text = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
    return text, sum(1 for line in text.splitlines() if any(p in line for p in PROBLEMS))


def ffprobe(path: Path) -> dict[str, Any]:
    res = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,pix_fmt,nb_read_frames",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    (stream,) = json.loads(res.stdout)["streams"]
    return dict(stream)


@pytest.mark.skipif(not have_tools("tshark"), reason="tshark missing")
def test_tshark_decodes_every_channel_pcap(capture: Capture) -> None:
    pcaps = sorted(p.name for p in capture.directory.glob("*.pcap"))
    assert pcaps == ["cursor.pcap", "display.pcap", "inputs.pcap", "main.pcap"]
    expected = {
        "main.pcap": [
            "Server INIT (103)",
            "Client ATTACH_CHANNELS (104)",
            "Server CHANNELS_LIST (104)",
            "Client PONG (3)",
        ],
        "display.pcap": [
            "Server SURFACE_CREATE (314)",
            "Server DRAW_COPY (304)",
            "Server MARK (102)",
            "Client INIT (101)",
        ],
        "inputs.pcap": ["Server INIT (101)", "Client MOUSE_POSITION (112)"],
        "cursor.pcap": ["Server INIT (101)"],
    }
    for name, messages in expected.items():
        text, problems = dissect(capture.directory / name)
        assert problems == 0, f"{name}:\n" + text[-5000:]
        assert "Checksum Status: Good" in text, name
        assert "Previous segment not captured" not in text, name
        assert "Link result: OK" in text or "spice.ticket_server" in text or "Link" in text
        for message in messages:
            assert message in text, f"{name}: no {message}"
    display, _ = dissect(capture.directory / "display.pcap")
    assert display.count("Server DRAW_COPY (304)") >= capture.frames


@pytest.mark.skipif(NO_VIDEO is not None, reason=f"no video: {NO_VIDEO}")
@pytest.mark.skipif(not have_tools("ffprobe"), reason="ffprobe (ffmpeg) missing")
def test_ffprobe_reads_one_frame_per_update(capture: Capture) -> None:
    (video,) = capture.videos
    assert video.path == capture.directory / "display.mp4" and video.error is None
    assert video.frames + video.merged == capture.frames >= 15
    stream = ffprobe(video.path)
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", *SIZE)
    assert stream["pix_fmt"] == "yuv420p"
    assert int(stream["nb_read_frames"]) == video.frames


@pytest.mark.skipif(NO_VIDEO is not None, reason=f"no video: {NO_VIDEO}")
@pytest.mark.skipif(not have_tools("ffprobe"), reason="ffprobe (ffmpeg) missing")
def test_odd_surface_size_keeps_its_exact_size(tmp_path: Path) -> None:
    result = run_session(tmp_path, (333, 211), updates=3)
    (video,) = result.videos
    stream = ffprobe(video.path)
    assert (stream["width"], stream["height"], stream["pix_fmt"]) == (333, 211, "yuv444p")
    assert int(stream["nb_read_frames"]) == video.frames
    assert video.frames + video.merged == result.frames
