"""Benchmark: how many clients one server process keeps at 30 frames/s.

    python -m tests.interop.bench_clients [--image-compression auto-glz] [--steps 1,5,10,20,30,40]
        [--seconds 10] [--warmup 4] [--size 1024x768] [--encode-cache-mib 64]

The server, ``spiceserver serve --source pattern:WxH`` (animated at 30 frames/s, ``--max-fps
30``), runs in its own process; this process runs the clients.  Each is a light asyncio client
that links like spice-gtk (RSA-OAEP ticket, mini headers), opens main and display, sends
ATTACH_CHANNELS and DISPLAY_INIT with spice-gtk's GLZ window (16 Mi pixels), ACKs every
window per SET_ACK and answers PING, and never decodes an image: it reads the first 12 bytes
of each DRAW_COPY and skips the rest.

What a frame is: every pattern frame redraws the frame counter, whose damage never merges with
the band or the box, so each display update carrying a new pattern frame has exactly one
DRAW_COPY whose box starts at the counter's top-left corner (16, 16).  A client's fps is the
number of those per second.  (The server sends at most ``--max-fps`` updates per second; a
client that falls behind gets merged updates, so fewer counter draws.)

The clients are added step by step (``--steps``); after ``--warmup`` seconds for the new
clients' first full frames, each step is measured for ``--seconds``.  One JSON line per step:
min / median client fps, the server's CPU (all its threads, % of one core) and RSS, this client
process's CPU (it shares the machine's cores with the server), and the traffic received.  Then
one line with the largest step at which every client held at least ``--target`` fps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import struct
import time
from pathlib import Path

from spiceserver.config import COMPRESSION_NAMES
from spiceserver.protocol.enums import ChannelType
from tests.fakeclient import encrypt_ticket, link_message, parse_link_reply
from tests.interop.serverprocess import ServerProcess

PASSWORD = "bench-clients"
#: The pattern's frame counter rectangle starts here (spiceserver/sources/pattern.py).
COUNTER_TOP_LEFT = (16, 16)
#: spice-gtk's DISPLAY_INIT: pixmap cache and GLZ window in pixels (80 and 64 MiB / 4).
PIXMAP_CACHE_PIXELS = 20 << 20
GLZ_WINDOW_PIXELS = 16 << 20

_MINI = struct.Struct("<HI")
# Message ids (spice-protocol enums.h).
SET_ACK, PING = 3, 4
#: Clients linking at once (two channels each) while a step ramps up.
LINK_BATCH = 8
ACK_SYNC, ACK, PONG = 1, 2, 3
MAIN_INIT, MAIN_ATTACH_CHANNELS = 103, 104
DISPLAY_DRAW_COPY, DISPLAY_INIT = 304, 101


class ChannelClient(asyncio.Protocol):
    """One channel: link stage, then a message splitter that keeps only the bytes it needs."""

    def __init__(self, channel_type: int, connection_id: int, password: str) -> None:
        self.channel_type = channel_type
        self.connection_id = connection_id
        self.password = password
        self.transport: asyncio.Transport | None = None
        self.linked: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.session_id: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.bytes_received = 0
        self.frames = 0
        self._phase = "link"
        self._buffer = bytearray()
        # Message splitter state: collecting ``_want`` bytes of header or body prefix, then
        # skipping ``_skip`` bytes of body nobody reads.
        self._header = True
        self._want = _MINI.size
        self._skip = 0
        self._type = 0
        self._rest = 0
        self._ack_window = 0
        self._since_ack = 0
        # Body bytes read per message type; the rest of each body is skipped unread.
        self._prefix = {SET_ACK: 8, PING: 12}
        if channel_type == ChannelType.MAIN:
            self._prefix[MAIN_INIT] = 4
        else:
            self._prefix[DISPLAY_DRAW_COPY] = 12

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(link_message(self.channel_type, 0, self.connection_id))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self._phase == "messages":
            self._messages(memoryview(data))
            return
        self._buffer += data
        if self._phase == "link" and len(self._buffer) >= 16:
            size = struct.unpack_from("<I", self._buffer, 12)[0]
            if len(self._buffer) < 16 + size:
                return
            reply = parse_link_reply(bytes(self._buffer[: 16 + size]))
            del self._buffer[: 16 + size]
            if reply.error:
                self.linked.set_result(reply.error)
                return
            assert self.transport is not None
            self.transport.write(struct.pack("<I", 1))  # AUTH_SPICE (AUTH_SELECTION)
            self.transport.write(encrypt_ticket(reply.public_key, self.password))
            self._phase = "auth"
        if self._phase == "auth" and len(self._buffer) >= 4:
            (result,) = struct.unpack_from("<I", self._buffer)
            rest = bytes(self._buffer[4:])
            self._buffer.clear()
            self._phase = "messages"
            self.linked.set_result(result)
            if rest:
                self._messages(memoryview(rest))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.linked.done():
            self.linked.set_exception(ConnectionError("closed during the link"))
        if not self.closed.done():
            self.closed.set_result(None)

    # messages

    def send(self, type_: int, body: bytes = b"") -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_MINI.pack(type_, len(body)) + body)

    def _messages(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                if not self._skip:
                    self._message_done()
                continue
            step = min(self._want - len(self._buffer), end - pos)
            self._buffer += data[pos : pos + step]
            pos += step
            if len(self._buffer) < self._want:
                return
            if self._header:
                self._type, size = _MINI.unpack(self._buffer)
                self._buffer.clear()
                prefix = min(self._prefix.get(self._type, 0), size)
                self._rest = size - prefix
                if prefix:
                    self._header, self._want = False, prefix
                else:
                    self._skip = size
                    if not size:
                        self._message_done()
            else:
                self._handle(self._type, bytes(self._buffer))
                self._buffer.clear()
                self._header, self._want = True, _MINI.size
                self._skip = self._rest
                if not self._rest:
                    self._message_done()

    def _handle(self, type_: int, prefix: bytes) -> None:
        if type_ == DISPLAY_DRAW_COPY:
            _surface, top, left = struct.unpack("<Iii", prefix)
            if (left, top) == COUNTER_TOP_LEFT:
                self.frames += 1
        elif type_ == SET_ACK:
            generation, window = struct.unpack("<II", prefix)
            self.send(ACK_SYNC, struct.pack("<I", generation))
            self._ack_window, self._since_ack = window, -1  # SET_ACK itself is not counted
        elif type_ == PING:
            self.send(PONG, prefix)  # id and timestamp, without the padding
        elif type_ == MAIN_INIT and not self.session_id.done():
            self.session_id.set_result(struct.unpack("<I", prefix)[0])

    def _message_done(self) -> None:
        if not self._ack_window:
            return
        self._since_ack += 1
        if self._since_ack == self._ack_window:  # spice-gtk: one ACK per window messages
            self._since_ack = 0
            self.send(ACK)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_channel(port: int, channel_type: int, connection_id: int = 0) -> ChannelClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: ChannelClient(channel_type, connection_id, PASSWORD), "127.0.0.1", port
    )
    result = await asyncio.wait_for(client.linked, 60)
    if result:
        raise ConnectionError(f"link refused: SpiceLinkErr {result}")
    return client


class BenchClient:
    """A main and a display channel, as spice-gtk opens them."""

    main: ChannelClient
    display: ChannelClient

    async def connect(self, port: int) -> None:
        self.main = await open_channel(port, ChannelType.MAIN)
        session_id = await asyncio.wait_for(self.main.session_id, 30)
        self.main.send(MAIN_ATTACH_CHANNELS)
        self.display = await open_channel(port, ChannelType.DISPLAY, session_id)
        self.display.send(
            DISPLAY_INIT, struct.pack("<BqBi", 1, PIXMAP_CACHE_PIXELS, 1, GLZ_WINDOW_PIXELS)
        )

    def close(self) -> None:
        self.display.close()
        self.main.close()


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def ramp(server: ServerProcess, args: argparse.Namespace) -> list[dict[str, object]]:
    assert server.proc is not None
    clients: list[BenchClient] = []
    results: list[dict[str, object]] = []
    try:
        for target in args.steps:
            new = [BenchClient() for _ in range(target - len(clients))]
            # In batches: the server lets one address have only so many links in progress
            # (max_unauthenticated_per_address, 32), and each client makes two.
            for start in range(0, len(new), LINK_BATCH):
                batch = new[start : start + LINK_BATCH]
                await asyncio.gather(*(client.connect(server.port) for client in batch))
            clients += new
            await asyncio.sleep(args.warmup)
            frames = [c.display.frames for c in clients]
            received = sum(c.display.bytes_received for c in clients)
            server_cpu, own_cpu, started = (
                process_cpu_seconds(server.proc.pid),
                own_cpu_seconds(),
                time.monotonic(),
            )
            await asyncio.sleep(args.seconds)
            elapsed = time.monotonic() - started
            fps = [(c.display.frames - n) / elapsed for c, n in zip(clients, frames, strict=True)]
            step = {
                "clients": len(clients),
                "fps_min": round(min(fps), 1),
                "fps_median": round(statistics.median(fps), 1),
                "server_cpu_pct": round(
                    100 * (process_cpu_seconds(server.proc.pid) - server_cpu) / elapsed
                ),
                "client_cpu_pct": round(100 * (own_cpu_seconds() - own_cpu) / elapsed),
                "server_rss_mib": round(server.rss_mib()),
                "received_mib_s": round(
                    (sum(c.display.bytes_received for c in clients) - received) / elapsed / 2**20, 1
                ),
            }
            print(json.dumps(step), flush=True)
            results.append(step)
            if args.stop_below and step["fps_median"] < args.stop_below:  # type: ignore[operator]
                break
    finally:
        for client in clients:
            client.close()
        await asyncio.sleep(0.2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--image-compression", default="auto-glz", choices=sorted(COMPRESSION_NAMES)
    )
    parser.add_argument(
        "--steps", default="1,5,10,20,30,40", type=lambda s: sorted({int(v) for v in s.split(",")})
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured, per step")
    parser.add_argument("--warmup", type=float, default=4.0, help="before each step")
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--target", type=float, default=29.0, help="fps every client must hold")
    parser.add_argument(
        "--encode-cache-mib",
        type=float,
        default=None,
        help="the server's --encode-cache-mib (0: no sharing)",
    )
    parser.add_argument(
        "--stop-below",
        type=float,
        default=10.0,
        help="stop the ramp once the median client fps drops below this",
    )
    args = parser.parse_args()
    server_args = [
        "--source",
        f"pattern:{args.size}",
        "--max-fps",
        "30",
        "--image-compression",
        args.image_compression,
        "--max-clients",
        str(max(args.steps)),
        "--log-level",
        "warning",
    ]
    if args.encode_cache_mib is not None:
        server_args += ["--encode-cache-mib", str(args.encode_cache_mib)]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    with ServerProcess(server_args, PASSWORD) as server:
        results = runner(ramp(server, args))
        alive = server.alive()
    held = 0
    for step in results:
        if step["fps_min"] < args.target:  # type: ignore[operator]
            break
        held = step["clients"]  # type: ignore[assignment]
    print(
        json.dumps(
            {
                "image_compression": args.image_compression,
                "size": args.size,
                "encode_cache_mib": args.encode_cache_mib,
                "cores": os.cpu_count(),
                "server_survived": alive,
                f"max_clients_at_{args.target:g}fps": held,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
