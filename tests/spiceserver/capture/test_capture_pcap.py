"""Capture mode without real clients: the pcap writer read back by a tiny independent reader,
checksums against a plain RFC 1071 loop, and a loopback session with capture on.

The interop counterpart (tests/interop/test_capture.py) checks the same files with tshark and
ffprobe against spice-gtk.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from spiceserver import NumpySource, Rect, SpiceServer
from spiceserver.capture import video_unavailable_reason
from spiceserver.capture.pcap import (
    CLIENT,
    MSS,
    SERVER,
    SERVER_PORT,
    PcapFile,
    TcpFlow,
    checksum,
    ones_complement_sum,
)
from spiceserver.capture.session import SessionCapture, _cut
from spiceserver.protocol.enums import ChannelType, LinkError
from spiceserver.protocol.link import LinkProtocol
from tests.conftest import run
from tests.fakeclient import LoopbackClient, link_message

PASSWORD = "capture-pw"
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10
HAVE_VIDEO = video_unavailable_reason() is None


# ---------------------------------------------------------------------- an independent reader


def rfc1071(data: bytes) -> int:
    """The Internet checksum the slow, obvious way (RFC 1071 §4.1)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


@dataclass
class Packet:
    ts: float
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    options: bytes
    payload: bytes
    ip_checksum_ok: bool
    tcp_checksum_ok: bool
    ip_total_length: int


def read_pcap(data: bytes) -> list[Packet]:
    """libpcap (microsecond, Ethernet) → packets, checking every length on the way."""
    magic, major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, 1)
    offset = 24
    packets = []
    while offset < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, offset)
        assert incl == orig <= snaplen and usec < 1_000_000
        frame = data[offset + 16 : offset + 16 + incl]
        assert len(frame) == incl
        offset += 16 + incl
        assert frame[12:14] == b"\x08\x00"  # EtherType IPv4
        ip = frame[14:]
        assert ip[0] == 0x45 and ip[9] == 6  # IPv4, IHL 5, TCP
        total = struct.unpack_from("!H", ip, 2)[0]
        assert total == len(ip)
        tcp = ip[20:total]
        data_offset = (tcp[12] >> 4) * 4
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
        sport, dport, seq, ack, _off, flags, window = struct.unpack_from("!HHIIBBH", tcp)
        packets.append(
            Packet(
                ts=sec + usec / 1e6,
                src=ip[12:16],
                dst=ip[16:20],
                sport=sport,
                dport=dport,
                seq=seq,
                ack=ack,
                flags=flags,
                window=window,
                options=tcp[20:data_offset],
                payload=tcp[data_offset:],
                ip_checksum_ok=rfc1071(ip[:20]) == 0,
                tcp_checksum_ok=rfc1071(pseudo + tcp) == 0,
                ip_total_length=total,
            )
        )
    return packets


def streams(packets: list[Packet]) -> tuple[bytes, bytes]:
    """(client → server, server → client) payloads, checking sequence numbers never skip."""
    out = {SERVER_PORT: bytearray(), -1: bytearray()}
    next_seq: dict[int, int] = {}
    for p in packets:
        key = SERVER_PORT if p.dport == SERVER_PORT else -1
        if p.flags & SYN:
            next_seq[key] = (p.seq + 1) & 0xFFFF_FFFF
            continue
        assert p.seq == next_seq[key], "sequence gap"
        other = -1 if key == SERVER_PORT else SERVER_PORT
        assert p.flags & ACK and p.ack == next_seq[other]
        out[key] += p.payload
        next_seq[key] = (p.seq + len(p.payload) + (1 if p.flags & FIN else 0)) & 0xFFFF_FFFF
    return bytes(out[SERVER_PORT]), bytes(out[-1])


# ---------------------------------------------------------------------- checksums


@pytest.mark.parametrize("length", [1, 2, 3, 20, 511, 512, 513, 4096, 65495, 100_001])
def test_checksum_matches_rfc1071(length: int) -> None:
    rng = np.random.default_rng(length)
    data = rng.integers(1, 256, length, dtype=np.uint8).tobytes()
    assert checksum(ones_complement_sum(data)) == rfc1071(data)
    # The numpy path reads memoryviews of any layout without copying first.
    assert ones_complement_sum(memoryview(data)) == ones_complement_sum(data)


def test_checksum_of_parts_adds_up() -> None:
    head, tail = b"\x45\x00" * 10, os.urandom(999)
    assert checksum(ones_complement_sum(head) + ones_complement_sum(tail)) == rfc1071(head + tail)


def test_checksum_negative_zero() -> None:
    # Words summing to 0xFFFF: ones' complement "negative zero", checksum 0.
    assert checksum(ones_complement_sum(b"\xff\x00\x00\xff")) == rfc1071(b"\xff\x00\x00\xff") == 0


# ---------------------------------------------------------------------- TcpFlow


def test_flow_handshake_data_and_close_read_back() -> None:
    buf = io.BytesIO()
    file = PcapFile(buf, buffer_size=1000)  # both paths: gathered records and big payloads
    flow = TcpFlow(file, ("10.1.2.3", 40001), "10.1.2.4", isn=(0xFFFF_FFF0, 5))
    big = os.urandom(2 * MSS + 7)
    flow.open(1000.25)
    flow.data(CLIENT, [b"REDQ-hello"], 1000.5)
    flow.data(SERVER, [big, memoryview(b"xyz"), b""], 1001.000_001)
    flow.data(CLIENT, [b""], 1001.5)  # nothing sent: no packet
    flow.close(1002.0)
    file.flush()
    assert file.complete == len(buf.getvalue())
    packets = read_pcap(buf.getvalue())
    assert len(packets) == flow.packets

    assert [p.flags for p in packets[:3]] == [SYN, SYN | ACK, ACK]
    assert packets[0].options[:4] == struct.pack("!BBH", 2, 4, MSS)  # MSS option
    assert packets[0].options[5:] == b"\x03\x03\x0e"  # window scale 14
    assert [p.flags for p in packets[-3:]] == [FIN | ACK, FIN | ACK, ACK]
    assert all(p.ip_checksum_ok and p.tcp_checksum_ok for p in packets)
    assert all(p.ip_total_length <= 65535 and len(p.payload) <= MSS for p in packets)
    for p in packets:
        client_side = p.dport == SERVER_PORT
        assert (p.sport, p.dport) == ((40001, 5900) if client_side else (5900, 40001))
        assert (p.src, p.dst) == (
            (b"\n\x01\x02\x03", b"\n\x01\x02\x04")
            if client_side
            else (b"\n\x01\x02\x04", b"\n\x01\x02\x03")
        )

    to_server, to_client = streams(packets)  # also checks seq/ack arithmetic, across 2**32
    assert to_server == b"REDQ-hello"
    assert to_client == big + b"xyz"
    data_packets = [p for p in packets if p.payload]
    assert [len(p.payload) for p in data_packets] == [10, MSS, MSS, 7 + 3]
    assert [p.ts for p in data_packets] == [1000.5, 1001.000001, 1001.000001, 1001.000001]
    # Every write is acknowledged by the other side right after.
    assert packets[4].flags == ACK and packets[4].ack == packets[3].seq + 10


class FillingDisk(io.BytesIO):
    """A stream that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: object) -> int:
        if not self.room:
            raise OSError(28, "No space left on device")
        n = super().write(memoryview(data)[: self.room])  # type: ignore[arg-type]
        self.room -= n
        return n


@pytest.mark.parametrize("room", [0, 10, 24, 100, 1500, 5000, 70_000, 150_000])
def test_full_disk_leaves_whole_records(room: int) -> None:
    def write_all(raw: io.BytesIO) -> PcapFile:
        file = PcapFile(raw, buffer_size=4096)
        flow = TcpFlow(file, ("10.0.0.1", 40000))
        flow.open(1.0)
        for i in range(40):
            flow.data(SERVER, [bytes([i]) * (1000 + 3000 * (i % 3))], 2.0 + i)
        flow.data(CLIENT, [b"c" * 100_000], 3.0)
        flow.close(4.0)
        file.flush()
        return file

    full = io.BytesIO()
    write_all(full)
    disk = FillingDisk(room)
    with pytest.raises(OSError, match="No space"):
        write_all(disk)
    data = disk.getvalue()
    assert full.getvalue().startswith(data)
    if data:
        read_pcap(data)  # whole records only


def test_flow_addresses_without_ipv4() -> None:
    buf = io.BytesIO()
    file = PcapFile(buf)
    flow = TcpFlow(file, ("::1", SERVER_PORT), "::ffff:127.0.0.1")
    flow.open(1.0)
    file.flush()
    first = read_pcap(buf.getvalue())[0]
    assert first.src == bytes([192, 0, 2, 1])  # TEST-NET stand-in for an IPv6 peer
    assert first.dst == bytes([127, 0, 0, 1])  # IPv4-mapped address kept
    assert first.sport != SERVER_PORT


def test_link_stage_cut_at_message_boundaries() -> None:
    link = link_message(ChannelType.DISPLAY, common_caps=[0, 3])  # AUTH_SELECTION announced
    stream = link + struct.pack("<I", 1) + bytes(128) + b"channel data"
    cuts = link_boundaries(stream)
    assert cuts == [len(link), len(link) + 4, len(link) + 4 + 128]
    # One read holding the auth selection, the ticket and more: three pieces.
    assert _cut(stream[len(link) :], len(link), cuts) == [
        stream[len(link) : len(link) + 4],
        bytes(128),
        b"channel data",
    ]
    no_selection = link_message(ChannelType.DISPLAY, common_caps=[3])
    stream = no_selection + bytes(128)
    assert link_boundaries(stream) == [len(no_selection), len(no_selection) + 128]
    assert link_boundaries(b"RED") == []


def link_boundaries(stream: bytes) -> list[int]:
    """Where the link stage's own parser says each client message ended (the server answers
    as it would, with our common caps and a 128-byte ticket)."""
    link = LinkProtocol()
    if link.receive_data(stream) is not None:
        link.accept(bytes(162), ticket_size=128)
        link.receive_data(b"")
    return link.client_boundaries


# ---------------------------------------------------------------------- a session on loopback


def random_frame(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    frame[..., 3] = 0
    return frame


async def open_session(port: int) -> tuple[LoopbackClient, LoopbackClient, int]:
    main = await LoopbackClient.open(port)
    assert await main.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
    session_id = struct.unpack_from("<I", await main.receive(103))[0]
    main.send(104)  # ATTACH_CHANNELS
    await main.receive(104)
    display = await LoopbackClient.open(port)
    assert await display.link(ChannelType.DISPLAY, PASSWORD, connection_id=session_id) == 0
    generation, _window = struct.unpack("<II", await display.receive(3))
    display.send(1, struct.pack("<I", generation))  # ACK_SYNC
    display.send(101, struct.pack("<BqBi", 1, 1 << 20, 1, 1 << 20))  # DISPLAY_INIT
    return main, display, session_id


def test_session_capture_on_loopback(tmp_path: Path, event_loop_name: str) -> None:
    updates = 4

    async def scenario() -> tuple[SpiceServer, int, int]:
        source = NumpySource(frame=random_frame(96, 64, 1))
        async with SpiceServer(
            source, password=PASSWORD, port=0, capture_dir=str(tmp_path), warmup_encoders=False
        ) as server:
            main, display, session_id = await open_session(server.port)
            await display.receive(314)  # SURFACE_CREATE
            await display.receive(102)  # MARK after the first full frame
            for i in range(updates):
                source.frame[8:16, 8 * i : 8 * i + 8, :3] = 255
                source.damage([Rect(8 * i, 8, 8, 8)])
                await display.receive(304)
                await asyncio.sleep(0.04)  # one update per batch
            # Readable while the session runs: buffers are written out every second.
            main_pcap = tmp_path / f"session-{session_id:08x}" / "main.pcap"
            await asyncio.sleep(1.2)
            assert streams(read_pcap(main_pcap.read_bytes()))[0].startswith(b"REDQ")
            await display.close()
            await main.close()
            session = next((s for s in server.sessions() if s.id == session_id), None)
            frames = session.metrics.frames if session else -1
            await asyncio.sleep(0.2)  # let the server see both connections close
        return server, session_id, frames

    result = run(scenario(), loop=event_loop_name)
    assert isinstance(result, tuple)
    server, session_id, frames = result
    directory = tmp_path / f"session-{session_id:08x}"
    names = sorted(p.name for p in directory.iterdir())
    assert names == (["display.mp4"] if HAVE_VIDEO else []) + ["display.pcap", "main.pcap"]

    main_in, main_out = streams(read_pcap((directory / "main.pcap").read_bytes()))
    assert main_in.startswith(b"REDQ") and main_out.startswith(b"REDQ")
    display_packets = read_pcap((directory / "display.pcap").read_bytes())
    assert all(p.ip_checksum_ok and p.tcp_checksum_ok for p in display_packets)
    assert [p.flags for p in display_packets[-3:]] == [FIN | ACK, FIN | ACK, ACK]
    display_in, display_out = streams(display_packets)
    assert display_in.startswith(b"REDQ") and display_out.startswith(b"REDQ")
    # Each DRAW_COPY (mini header: u16 type 304, u32 size) is in the server's stream.
    assert display_out.count(struct.pack("<H", 304)) >= 1 + updates

    if HAVE_VIDEO:
        assert server.context.captures is not None
        (video,) = server.context.captures.videos
        assert (video.width, video.height, video.error) == (96, 64, None)
        assert video.frames + video.merged == frames >= 1 + updates
        import av

        with av.open(str(video.path)) as container:
            decoded = list(container.decode(video=0))
        assert len(decoded) == video.frames
        assert (decoded[0].width, decoded[0].height) == (96, 64)
        pts = [int(f.pts or 0) for f in decoded]
        assert pts == sorted(set(pts))  # real, strictly increasing timestamps


def test_capture_off_costs_one_attribute(tmp_path: Path) -> None:
    async def scenario() -> None:
        source = NumpySource(frame=random_frame(32, 32, 2))
        async with SpiceServer(source, password=PASSWORD, port=0, warmup_encoders=False) as server:
            assert server.context.captures is None
            main, display, _ = await open_session(server.port)
            await display.receive(102)
            assert all(c.capture is None for c in server.context.connections)
            await display.close()
            await main.close()

    run(scenario())
    assert not any(tmp_path.iterdir())


def test_capture_failure_disables_capture_not_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk fills up during the first frame: logged once, the session's frames keep flowing,
    and what was written before stays readable."""
    real_create = SessionCapture.create

    class FullDisk(io.FileIO):
        room = 3000  # bytes left: the link stage fits, the first frame does not

        def write(self, data: object) -> int:
            view = memoryview(data)  # type: ignore[arg-type]
            if not self.room:
                raise OSError(28, "No space left on device")
            n = super().write(view[: self.room])
            self.room -= n
            return n

    def create(self: SessionCapture, stem: str, suffix: str) -> io.FileIO:
        file = real_create(self, stem, suffix)
        if stem != "display" or suffix != ".pcap":
            return file
        name = str(file.name)
        file.close()
        return FullDisk(name, "wb")

    monkeypatch.setattr(SessionCapture, "create", create)

    async def scenario() -> None:
        source = NumpySource(frame=random_frame(64, 48, 3))
        async with SpiceServer(
            source, password=PASSWORD, port=0, capture_dir=str(tmp_path), warmup_encoders=False
        ) as server:
            main, display, _ = await open_session(server.port)
            await display.receive(102)
            for i in range(3):
                source.frame[0:8, 8 * i : 8 * i + 8, :3] = 7
                source.damage([Rect(8 * i, 0, 8, 8)])
                await display.receive(304)
            await display.close()
            await main.close()

    with caplog.at_level(logging.WARNING, logger="spiceserver.capture"):
        run(scenario())
    failures = [r for r in caplog.records if "capture disabled" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    assert "No space left" in failures[0].getMessage()
    (directory,) = tmp_path.iterdir()
    for name in ("main.pcap", "display.pcap"):
        to_server, _ = streams(read_pcap((directory / name).read_bytes()))
        assert to_server.startswith(b"REDQ")


def test_refused_link_writes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        source = NumpySource(frame=random_frame(32, 32, 4))
        async with SpiceServer(
            source, password=PASSWORD, port=0, capture_dir=str(tmp_path), warmup_encoders=False
        ) as server:
            client = await LoopbackClient.open(server.port)
            assert await client.link(ChannelType.MAIN, "wrong") == LinkError.PERMISSION_DENIED
            await client.close()
            await asyncio.sleep(0.1)

    run(scenario())
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not HAVE_VIDEO, reason="PyAV (spiceserver[capture]) not installed")
@pytest.mark.parametrize("size", [(64, 48), (33, 17)])
def test_video_writer_frames_sizes_and_timestamps(tmp_path: Path, size: tuple[int, int]) -> None:
    import av

    from spiceserver.capture.video import VideoWriter

    width, height = size
    writer = VideoWriter(tmp_path / "v.mp4", width, height)
    for i in range(5):
        pixels = np.full((8, 8, 4), 40 * i, dtype=np.uint8)
        writer.update([(Rect(i, i, 8, 8), pixels)], 100.0 + 0.5 * i)
        # Let the worker take each update (merges are allowed, just not wanted here).
        for _ in range(200):
            if writer.frames_written + writer.frames_merged > i:
                break
            time.sleep(0.005)
    writer.update([(Rect(width - 4, height - 4, 8, 8), np.zeros((8, 8, 4), np.uint8))], 103.0)
    writer.finish()
    assert writer.join(30)
    assert writer.error is None
    assert writer.frames_written + writer.frames_merged == 6
    with av.open(str(tmp_path / "v.mp4")) as container:
        frames = list(container.decode(video=0))
        time_base = container.streams.video[0].time_base
    assert len(frames) == writer.frames_written
    assert (frames[0].width, frames[0].height) == size
    assert time_base is not None
    seconds = [float((f.pts or 0) * time_base) for f in frames]
    assert seconds[0] == 0.0 and seconds == sorted(seconds)
    if writer.frames_merged == 0:
        assert seconds == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 3.0], abs=0.002)
    # Lossy, but the last painted square is clearly there.
    last = frames[-1].to_ndarray(format="bgr24")
    assert abs(int(last[4 + 4, 4 + 4, 0]) - 160) < 24


@pytest.mark.skipif(not HAVE_VIDEO, reason="PyAV (spiceserver[capture]) not installed")
def test_video_writer_queues_then_merges_when_the_encoder_is_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import av

    from spiceserver.capture import video

    gate = threading.Event()
    real_pts = video.VideoWriter._pts

    def slow_pts(self: video.VideoWriter, ts: float) -> int:
        gate.wait(10)  # the encoder is stuck on its first frame until the gate opens
        return real_pts(self, ts)

    monkeypatch.setattr(video.VideoWriter, "_pts", slow_pts)
    writer = video.VideoWriter(tmp_path / "q.mp4", 64, 16)
    writer.max_queue = 2

    def square(i: int) -> list[tuple[Rect, np.ndarray]]:
        return [(Rect(8 * i, 0, 8, 8), np.full((8, 8, 4), 200, np.uint8))]

    writer.update(square(0), 10.0)
    deadline = time.monotonic() + 10
    while writer._pending is not None:  # wait until the worker holds frame 0
        assert time.monotonic() < deadline
        time.sleep(0.005)
    for i in range(1, 6):
        writer.update(square(i), 10.0 + i)
    assert (len(writer._queue), writer.frames_merged) == (2, 2)  # 1, 2 queued; 3, 4 merged
    gate.set()
    writer.finish()
    assert writer.join(30) and writer.error is None
    assert writer.frames_written == 4
    with av.open(str(tmp_path / "q.mp4")) as container:
        frames = list(container.decode(video=0))
        time_base = container.streams.video[0].time_base
    assert time_base is not None
    assert [float((f.pts or 0) * time_base) for f in frames] == [0.0, 1.0, 2.0, 5.0]
    last = frames[-1].to_ndarray(format="bgr24")
    assert all(last[4, 8 * i + 4, 0] > 150 for i in range(6))  # merged updates kept
    second = frames[1].to_ndarray(format="bgr24")
    assert second[4, 12, 0] > 150 and second[4, 20, 0] < 50  # queued frames are snapshots


def test_reconnected_channel_gets_its_own_pcap(tmp_path: Path) -> None:
    async def scenario() -> int:
        source = NumpySource(frame=random_frame(32, 32, 5))
        async with SpiceServer(
            source, password=PASSWORD, port=0, capture_dir=str(tmp_path), warmup_encoders=False
        ) as server:
            main, display, session_id = await open_session(server.port)
            await display.receive(102)
            again = await LoopbackClient.open(server.port)  # replaces the first display
            assert await again.link(ChannelType.DISPLAY, PASSWORD, connection_id=session_id) == 0
            assert await display.closed_by_server()
            await again.close()
            await main.close()
            await asyncio.sleep(0.1)
        return session_id

    session_id = run(scenario())
    assert isinstance(session_id, int)
    directory = tmp_path / f"session-{session_id:08x}"
    assert {"main.pcap", "display.pcap", "display.2.pcap"} <= {p.name for p in directory.iterdir()}
    for name in ("display.pcap", "display.2.pcap"):
        to_server, _ = streams(read_pcap((directory / name).read_bytes()))
        assert to_server.startswith(b"REDQ")


def test_cli_capture_option() -> None:
    from spiceserver.__main__ import build_parser, config_from_args

    args = build_parser().parse_args(["serve", "--password", "pw", "--capture", "/tmp/caps"])
    assert config_from_args(args)[0].capture_dir == "/tmp/caps"
    args = build_parser().parse_args(["serve", "--password", "pw"])
    assert config_from_args(args)[0].capture_dir is None


def test_tls_links_are_captured_decrypted(tmp_path: Path) -> None:
    """On the TLS listener the pcap holds the SPICE bytes, not the TLS records."""
    import dataclasses
    import ssl

    from spiceserver.config import ServerConfig

    if "tls_port" not in {f.name for f in dataclasses.fields(ServerConfig)}:
        pytest.skip("this build has no TLS listener")
    tlsutil = pytest.importorskip("tests.tlsutil")
    files = tlsutil.make_tls_files(tmp_path)
    context = ssl.create_default_context(cafile=str(files.ca))
    context.check_hostname = False
    captures = tmp_path / "captures"

    async def scenario() -> int:
        source = NumpySource(frame=random_frame(32, 32, 6))
        async with SpiceServer(
            source,
            password=PASSWORD,
            port=0,
            tls_port=0,
            tls_cert=str(files.cert),
            tls_key=str(files.key),
            capture_dir=str(captures),
            warmup_encoders=False,
        ) as server:
            assert server.tls_port is not None
            main = await LoopbackClient.open(server.tls_port, ssl=context)
            assert await main.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
            session_id = struct.unpack_from("<I", await main.receive(103))[0]
            await main.close()
            await asyncio.sleep(0.1)
        return int(session_id)

    session_id = run(scenario())
    assert isinstance(session_id, int)
    pcap = captures / f"session-{session_id:08x}" / "main.pcap"
    to_server, to_client = streams(read_pcap(pcap.read_bytes()))
    assert to_server.startswith(b"REDQ") and to_client.startswith(b"REDQ")
    assert struct.pack("<H", 103) in to_client  # MAIN INIT, in clear
