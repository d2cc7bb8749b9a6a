"""The built-in agent through the whole server stack, in memory: clipboard with a
MemoryClipboard, monitors configs to the layout controller, files into a directory, and
hostile agent clients (token overrun, grab floods, clients that never answer)."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from spiceserver import ScenarioSource, SpiceServer
from spiceserver.clipboard import ClipboardType, MemoryClipboard, Selection
from spiceserver.errors import ConfigError
from spiceserver.protocol.enums import AgentMsg, FileXferStatus, MainClientMsg, MainServerMsg
from spiceserver.record import MemoryRecorder
from spiceserver.server.agent import HIGH_WATER
from spiceserver.server.filexfer import HOLD_BYTES
from spiceserver.sources.base import Head
from tests import agentkit as ak
from tests.conftest import run
from tests.fakeclient import frame
from tests.memory import PASSWORD, MemoryClient, main_at, make_server, ready, turns


class AgentClient:
    """spice-gtk's side of the agent over an in-memory main channel (tokens honoured)."""

    def __init__(self, main: MemoryClient) -> None:
        self.main = main
        self.tokens = 0
        self.reassembler = ak.Reassembler()
        self.received: list[ak.Received] = []
        self.init: tuple[int, ...] = ()

    @classmethod
    async def connect(cls, server: Any, caps: tuple[int, ...] = ak.GTK_CAPS) -> AgentClient:
        client = cls(await main_at(server))
        client.read()
        client.main.send(frame(MainClientMsg.AGENT_START, struct.pack("<I", 0xFFFFFFFF)))
        client.send(ak.caps_message(caps))
        await client.wait(AgentMsg.ANNOUNCE_CAPABILITIES)
        return client

    def read(self) -> None:
        for type_, body in self.main.messages():
            if type_ == MainServerMsg.INIT:
                self.init = struct.unpack_from("<8I", body)
                self.tokens += self.init[5]
            elif type_ == MainServerMsg.AGENT_TOKEN:
                self.tokens += struct.unpack("<I", body)[0]
            elif type_ == MainServerMsg.AGENT_DATA:
                self.received += self.reassembler.feed(body)

    def send(self, message: bytes, *, honour_tokens: bool = True) -> None:
        for piece in ak.pieces(message):
            self.read()
            assert not honour_tokens or self.tokens > 0, "out of agent tokens"
            self.tokens -= 1
            self.main.send(frame(MainClientMsg.AGENT_DATA, piece))

    async def send_paced(self, message: bytes) -> None:
        """Like spice-gtk: wait for tokens instead of overrunning them."""
        for piece in ak.pieces(message):
            await turns(lambda: (self.read(), self.tokens > 0)[1])
            self.tokens -= 1
            self.main.send(frame(MainClientMsg.AGENT_DATA, piece))

    async def wait(self, type_: int, timeout: float = 10.0) -> ak.Received:
        def found() -> bool:
            self.read()
            return any(r.type == type_ for r in self.received)

        await turns(found, timeout)
        index = next(i for i, r in enumerate(self.received) if r.type == type_)
        return self.received.pop(index)


def test_init_announces_the_agent_and_off_turns_it_off() -> None:
    async def scenario() -> None:
        server = await ready(make_server())
        client = await AgentClient.connect(server)
        assert (client.init[4], client.init[5]) == (1, 10)
        await server.close()
        off = await ready(make_server(agent=False))
        main = await main_at(off)
        init = struct.unpack_from("<8I", main.messages()[0][1])
        assert (init[4], init[5]) == (0, 0)
        await off.close()

    run(scenario())


def test_desktop_text_reaches_the_client_and_client_text_reaches_the_desktop() -> None:
    async def scenario() -> None:
        memory = MemoryClipboard()
        memory.offer(Selection.CLIPBOARD, {ClipboardType.UTF8_TEXT: "hello ✓".encode()})
        server = await ready(make_server(clipboard=memory))
        await server.start()
        client = await AgentClient.connect(server)
        grab = await client.wait(AgentMsg.CLIPBOARD_GRAB)
        assert grab.payload == struct.pack("<B3xII", 0, 0, 1)
        client.send(ak.request(0, 1))
        data = await client.wait(AgentMsg.CLIPBOARD)
        assert data.payload == struct.pack("<B3xI", 0, 1) + "hello ✓".encode()

        client.send(ak.grab(1, (1, 2), serial=0))
        assert await memory.wait_client(Selection.PRIMARY) == (1, 2)
        fetch = asyncio.ensure_future(memory.fetch(Selection.PRIMARY, ClipboardType.PNG))
        request = await client.wait(AgentMsg.CLIPBOARD_REQUEST)
        assert request.payload == struct.pack("<B3xI", 1, 2)
        client.send(ak.clipboard(1, 2, b"\x89PNG..."))
        assert await fetch == b"\x89PNG..."
        client.send(ak.release(1))
        await turns(lambda: memory.client_types(Selection.PRIMARY) is None)
        await server.close()

    run(scenario())


def test_five_megabytes_both_ways_are_paced_and_token_flow_keeps_going() -> None:
    async def scenario() -> None:
        memory = MemoryClipboard()
        server = await ready(make_server(clipboard=memory))
        await server.start()
        client = await AgentClient.connect(server)
        text = bytes(range(32, 127)) * (5_000_000 // 95)
        memory.offer(Selection.CLIPBOARD, {ClipboardType.UTF8_TEXT: text})
        await client.wait(AgentMsg.CLIPBOARD_GRAB)
        client.send(ak.request(0, 1))
        data = await client.wait(AgentMsg.CLIPBOARD, timeout=30)
        assert data.payload[8:] == text
        assert not client.main.transport.closing

        client.send(ak.grab(0, (1,), serial=1))
        await memory.wait_client(Selection.CLIPBOARD)
        fetch = asyncio.ensure_future(memory.fetch(Selection.CLIPBOARD, ClipboardType.UTF8_TEXT))
        await client.wait(AgentMsg.CLIPBOARD_REQUEST)
        await client.send_paced(ak.clipboard(0, 1, text))  # ~2,450 pieces: tokens flow
        assert await fetch == text
        await server.close()

    run(scenario())


def test_output_waits_below_the_high_water_mark() -> None:
    async def scenario() -> None:
        memory = MemoryClipboard()
        server = await ready(make_server(clipboard=memory))
        await server.start()
        client = await AgentClient.connect(server)
        client.main.transport.stalled = True  # the client stops reading
        memory.offer(Selection.CLIPBOARD, {ClipboardType.UTF8_TEXT: b"z" * 4_000_000})
        client.main.transport.stalled = False
        client.read()
        client.send(ak.request(0, 1))
        await asyncio.sleep(0.05)
        client.main.transport.stalled = True
        await asyncio.sleep(0.05)
        # Nothing crossed the main channel's 1 MiB write limit: the connection is alive.
        assert not client.main.transport.closing
        assert client.main.transport.unsent < HIGH_WATER + 128 * 1024
        await server.close()

    run(scenario())


def test_a_client_that_never_answers_does_not_block_anything() -> None:
    async def scenario() -> None:
        memory = MemoryClipboard()
        server = await ready(make_server(clipboard=memory, clipboard_timeout=0.2))
        await server.start()
        mute = await AgentClient.connect(server)
        other = await AgentClient.connect(server)
        mute.send(ak.grab(0, (1,), serial=0))
        await memory.wait_client(Selection.CLIPBOARD)
        started = time.monotonic()
        assert await memory.fetch(Selection.CLIPBOARD, ClipboardType.UTF8_TEXT) is None
        assert time.monotonic() - started < 2
        # Meanwhile the other client is served: a desktop offer reaches it.
        memory.offer(Selection.PRIMARY, {ClipboardType.UTF8_TEXT: b"x"})
        await other.wait(AgentMsg.CLIPBOARD_GRAB)
        await server.close()

    run(scenario())


def test_another_clients_grab_replaces_the_owner() -> None:
    async def scenario() -> None:
        memory = MemoryClipboard()
        memory.offer(Selection.CLIPBOARD, {ClipboardType.UTF8_TEXT: b"desk"})
        server = await ready(make_server(clipboard=memory))
        await server.start()
        first = await AgentClient.connect(server)
        second = await AgentClient.connect(server)
        await first.wait(AgentMsg.CLIPBOARD_GRAB)
        await second.wait(AgentMsg.CLIPBOARD_GRAB)
        first.send(ak.grab(0, (1,), serial=1))
        await memory.wait_client(Selection.CLIPBOARD)
        # The second client had our (the desktop's) grab: it is told we no longer own it.
        await second.wait(AgentMsg.CLIPBOARD_RELEASE)
        second.send(ak.grab(0, (2,), serial=1))
        await turns(lambda: memory.client_types(Selection.CLIPBOARD) == (ClipboardType.PNG,))
        # The first client's data is no longer asked for (it lost the selection).
        first.main.transport.protocol.connection_lost(None)  # type: ignore[union-attr]
        assert memory.client_types(Selection.CLIPBOARD) == (ClipboardType.PNG,)
        await server.close()

    run(scenario())


def test_token_overrun_closes_only_that_client(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        server = await ready(make_server())
        good = await AgentClient.connect(server)
        bad = await AgentClient.connect(server)
        # Tokens go back as pieces are consumed, so only a client that keeps sending while
        # they are held back (files waiting to be written) can overrun them.
        connection = bad.main.protocol.connection
        assert connection is not None and connection.channel is not None
        connection.channel.agent.hold(True)  # type: ignore[attr-defined]
        for piece in ak.pieces(ak.clipboard(0, 1, b"x" * 30_000)):
            bad.main.send(frame(MainClientMsg.AGENT_DATA, piece))
        await turns(lambda: bad.main.transport.closing)
        assert "beyond the client's tokens" in caplog.text
        good.send(ak.monitors([(640, 480, 0, 0)]))
        reply = await good.wait(AgentMsg.REPLY)
        assert reply.payload == struct.pack("<II", 2, 1)
        await server.close()

    run(scenario())


def test_bad_protocol_closes_and_oversized_clipboard_is_dropped() -> None:
    async def scenario() -> None:
        server = await ready(make_server(clipboard=MemoryClipboard(), clipboard_max_bytes=10_000))
        await server.start()
        client = await AgentClient.connect(server)
        await client.send_paced(ak.clipboard(0, 1, b"q" * 200_000))  # over the cap: skipped
        client.send(ak.monitors([(640, 480, 0, 0)]))
        await client.wait(AgentMsg.REPLY)
        client.send(ak.message(AgentMsg.REPLY, bytes(8), protocol=7))
        await turns(lambda: client.main.transport.closing)
        await server.close()

    run(scenario())


def test_grab_flood_is_bounded_and_fast() -> None:
    async def scenario() -> None:
        memory = MemoryClipboard()
        server = await ready(make_server(clipboard=memory))
        await server.start()
        client = await AgentClient.connect(server)
        started = time.monotonic()
        for i in range(10_000):
            await client.send_paced(ak.grab(0, (1,), serial=i))
            if i % 10 == 0:  # and the desktop fights back
                memory.offer(Selection.CLIPBOARD, {ClipboardType.UTF8_TEXT: b"d"})
        elapsed = time.monotonic() - started
        await turns(lambda: memory.client_types(Selection.CLIPBOARD) is not None)
        assert elapsed < 20, elapsed
        assert not client.main.transport.closing
        agent = server.context.sessions.sessions  # one session, its stream's queue small
        handler = next(iter(agent.values())).main.handler
        assert handler.channel.agent.queued_bytes < 4096
        await server.close()

    run(scenario(), timeout=60)


def test_monitors_config_goes_to_the_layout_in_client_order_without_disabled() -> None:
    async def scenario() -> None:
        server = await ready(make_server())
        requests: list[tuple[Head, ...]] = []
        server.context.layout.request = lambda session, heads: requests.append(heads)  # type: ignore[method-assign]
        client = await AgentClient.connect(server)
        client.send(
            ak.monitors(
                [(1280, 720, 0, 0), (0, 0, 0, 0), (800, 600, 1280, 0)],
                [(170, 300), (0, 0), (100, 200)],
            )
        )
        await client.wait(AgentMsg.REPLY)
        assert requests == [(Head(0, 0, 1280, 720, 300, 170), Head(1280, 0, 800, 600, 200, 100))]
        await server.close()

    run(scenario())


# ---------------------------------------------------------------------- file transfer


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def transfer(
    client: AgentClient, xfer_id: int, name: str, data: bytes, *, announced: int | None = None
) -> tuple[int, ...]:
    client.send(ak.file_start(xfer_id, name, len(data) if announced is None else announced))
    status = struct.unpack_from("<II", (await client.wait(AgentMsg.FILE_XFER_STATUS)).payload)
    if status[1] != FileXferStatus.CAN_SEND_DATA:
        return status
    for i in range(0, len(data), 65536):
        await client.send_paced(ak.file_data(xfer_id, data[i : i + 65536]))
    final = (await client.wait(AgentMsg.FILE_XFER_STATUS)).payload
    return struct.unpack_from(f"<II{'Q' if len(final) == 16 else ''}", final)


def test_files_land_byte_exact_with_safe_unique_names(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await ready(make_server(file_transfer_dir=str(tmp_path)))
        client = await AgentClient.connect(server)
        data = bytes(range(256)) * 1200  # 300 KiB
        assert await transfer(client, 1, "report.pdf", data) == (1, FileXferStatus.SUCCESS)
        assert await transfer(client, 2, "report.pdf", b"two") == (2, FileXferStatus.SUCCESS)
        assert await transfer(client, 3, "../../etc/passwd", b"p") == (3, FileXferStatus.SUCCESS)
        assert await transfer(client, 4, ".bashrc", b"b") == (4, FileXferStatus.SUCCESS)
        assert await transfer(client, 5, "a\x01b\u200bc", b"c") == (5, FileXferStatus.SUCCESS)
        assert await transfer(client, 6, "..", b"") == (6, FileXferStatus.SUCCESS)
        assert (tmp_path / "report.pdf").read_bytes() == data
        assert (tmp_path / "report (1).pdf").read_bytes() == b"two"
        assert names(tmp_path) == [
            "abc",
            "bashrc",
            "file",
            "passwd",
            "report (1).pdf",
            "report.pdf",
        ]
        await server.close()

    run(scenario())


def test_too_big_and_no_space_are_refused_with_not_enough_space(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await ready(make_server(file_transfer_dir=str(tmp_path), file_transfer_max=1000))
        client = await AgentClient.connect(server)
        status = await transfer(client, 1, "big.bin", b"", announced=1001)
        assert status == (1, FileXferStatus.NOT_ENOUGH_SPACE)
        await server.close()
        server = await ready(make_server(file_transfer_dir=str(tmp_path)))
        client = await AgentClient.connect(server)
        client.send(ak.file_start(2, "huge.bin", 1 << 60))
        reply = (await client.wait(AgentMsg.FILE_XFER_STATUS)).payload
        xfer, result, free = struct.unpack("<IIQ", reply)
        assert (xfer, result) == (2, FileXferStatus.NOT_ENOUGH_SPACE) and 0 < free < 1 << 60
        assert names(tmp_path) == []
        await server.close()

    run(scenario())


def test_cancel_disconnect_and_stalled_transfers_leave_no_partial_files(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await ready(
            make_server(file_transfer_dir=str(tmp_path), file_transfer_timeout=0.3)
        )
        client = await AgentClient.connect(server)
        client.send(ak.file_start(1, "cancelled.bin", 100_000))
        await client.wait(AgentMsg.FILE_XFER_STATUS)
        await client.send_paced(ak.file_data(1, b"x" * 50_000))
        client.send(ak.file_status(1, FileXferStatus.CANCELLED))
        client.send(ak.file_start(2, "stalled.bin", 100))  # never sends its data
        await client.wait(AgentMsg.FILE_XFER_STATUS)
        status = await client.wait(AgentMsg.FILE_XFER_STATUS)  # the idle timeout
        assert struct.unpack_from("<II", status.payload) == (2, FileXferStatus.ERROR)
        client.send(ak.file_start(3, "left.bin", 100_000))
        await client.wait(AgentMsg.FILE_XFER_STATUS)
        await client.send_paced(ak.file_data(3, b"y" * 10_000))
        await turns(lambda: (tmp_path / "left.bin").exists())
        client.main.transport.protocol.connection_lost(None)  # type: ignore[union-attr]
        await turns(lambda: names(tmp_path) == [], timeout=5)
        await server.close()

    run(scenario())


def test_several_files_at_once_are_bounded(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await ready(
            make_server(file_transfer_dir=str(tmp_path), file_transfer_max_active=2)
        )
        client = await AgentClient.connect(server)
        for xfer in (1, 2, 3):
            client.send(ak.file_start(xfer, f"f{xfer}", 3))
        statuses = [
            struct.unpack_from("<II", (await client.wait(AgentMsg.FILE_XFER_STATUS)).payload)
            for _ in range(3)
        ]
        assert sorted(statuses) == [
            (1, FileXferStatus.CAN_SEND_DATA),
            (2, FileXferStatus.CAN_SEND_DATA),
            (3, FileXferStatus.ERROR),
        ]
        for xfer in (2, 1):
            client.send(ak.file_data(xfer, b"abc"))
        done = [await client.wait(AgentMsg.FILE_XFER_STATUS) for _ in range(2)]
        assert {struct.unpack_from("<II", d.payload)[1] for d in done} == {3}
        assert names(tmp_path) == ["f1", "f2"]
        await server.close()

    run(scenario())


def test_on_file_takes_files_instead_and_off_refuses(tmp_path: Path) -> None:
    async def scenario() -> None:
        got: list[tuple[str, bytes]] = []

        async def on_file(name: str, data: bytes) -> None:
            got.append((name, data))

        server = await ready(make_server(on_file=on_file))
        client = await AgentClient.connect(server)
        assert await transfer(client, 1, "dir/x.txt", b"hello") == (1, FileXferStatus.SUCCESS)
        assert got == [("x.txt", b"hello")]
        await server.close()
        server = await ready(make_server(file_transfer_dir=None))
        client = await AgentClient.connect(server)
        client.send(ak.file_start(1, "x", 1))
        status = await client.wait(AgentMsg.FILE_XFER_STATUS)
        assert struct.unpack("<II", status.payload) == (1, FileXferStatus.DISABLED)
        await server.close()

    run(scenario())


def test_session_record_has_types_and_sizes_never_content(tmp_path: Path) -> None:
    async def scenario() -> None:
        recorder = MemoryRecorder()
        memory = MemoryClipboard()
        memory.offer(Selection.CLIPBOARD, {ClipboardType.UTF8_TEXT: b"secret desktop"})
        server = await ready(
            make_server(clipboard=memory, recorders=[recorder], file_transfer_dir=str(tmp_path))
        )
        await server.start()
        client = await AgentClient.connect(server)
        await client.wait(AgentMsg.CLIPBOARD_GRAB)
        client.send(ak.request(0, 1))
        await client.wait(AgentMsg.CLIPBOARD)
        client.send(ak.grab(1, (1,), serial=0))
        await memory.wait_client(Selection.PRIMARY)
        fetch = asyncio.ensure_future(memory.fetch(Selection.PRIMARY, ClipboardType.UTF8_TEXT))
        await client.wait(AgentMsg.CLIPBOARD_REQUEST)
        client.send(ak.clipboard(1, 1, b"secret client"))
        assert await fetch == b"secret client"
        assert await transfer(client, 1, "notes.txt", b"secret file") == (1, 3)
        await recorder.wait_for(lambda e: e.get("event") == "file_transfer")
        await server.close()
        agent = [e for e in recorder.events if e["event"].startswith(("clipboard", "file"))]
        strip = [{k: v for k, v in e.items() if k not in ("t", "session", "peer")} for e in agent]
        assert strip == [
            {
                "event": "clipboard_grab",
                "channel": "main",
                "channel_id": 0,
                "by": "desktop",
                "selection": "clipboard",
                "types": ["utf8_text"],
            },
            {
                "event": "clipboard_transfer",
                "channel": "main",
                "channel_id": 0,
                "direction": "to_client",
                "selection": "clipboard",
                "type": "utf8_text",
                "size": 14,
            },
            {
                "event": "clipboard_grab",
                "channel": "main",
                "channel_id": 0,
                "by": "client",
                "selection": "primary",
                "types": ["utf8_text"],
            },
            {
                "event": "clipboard_transfer",
                "channel": "main",
                "channel_id": 0,
                "direction": "from_client",
                "selection": "primary",
                "type": "utf8_text",
                "size": 13,
            },
            {
                "event": "file_transfer",
                "channel": "main",
                "channel_id": 0,
                "name": "notes.txt",
                "size": 11,
                "result": "success",
            },
        ]
        assert "secret" not in repr(recorder.events)

    run(scenario())


def test_scenario_clipboard_step_offers_text_to_clients() -> None:
    async def scenario() -> None:
        source = ScenarioSource(
            {
                "size": [64, 48],
                "start": "immediately",
                "steps": [
                    {"clipboard": "from the scenario ✓"},
                    {"wait": 0.05},
                    {"clipboard": "primary text", "selection": "primary"},
                ],
            }
        )
        server = SpiceServer(source, password=PASSWORD, port=0, warmup_encoders=False)
        await ready(server)
        await server.start()
        client = await AgentClient.connect(server)
        grab = await client.wait(AgentMsg.CLIPBOARD_GRAB)
        client.send(ak.request(0, 1))
        data = await client.wait(AgentMsg.CLIPBOARD)
        assert data.payload[8:] == "from the scenario ✓".encode()
        grab = await client.wait(AgentMsg.CLIPBOARD_GRAB)
        assert grab.payload[0] == 1  # PRIMARY
        # What a client copies can be read back from the scenario's clipboard.
        backend = source.clipboard_backend()
        assert backend is not None
        client.send(ak.grab(0, (1,), serial=1))
        assert await backend.wait_client(Selection.CLIPBOARD) == (ClipboardType.UTF8_TEXT,)
        await server.close()

    run(scenario())


def test_scenario_clipboard_step_is_checked() -> None:
    with pytest.raises(ConfigError, match="clipboard is a text"):
        ScenarioSource({"steps": [{"clipboard": 5}]})
    with pytest.raises(ConfigError, match=r"expected one of .clipboard., .primary."):
        ScenarioSource({"steps": [{"clipboard": "x", "selection": "secondary"}]})


def test_slow_disk_holds_the_clients_tokens_back(tmp_path: Path, monkeypatch: Any) -> None:
    import spiceserver.server.filexfer as filexfer

    written = filexfer._write

    def slow_write(fd: int, data: bytes) -> None:
        time.sleep(0.004)  # ~16 MB/s: slower than the client sends
        written(fd, data)

    monkeypatch.setattr(filexfer, "_write", slow_write)

    async def scenario() -> None:
        server = await ready(make_server(file_transfer_dir=str(tmp_path)))
        client = await AgentClient.connect(server)
        connection = client.main.protocol.connection
        assert connection is not None and connection.handler is not None
        files = connection.handler.agent.files  # type: ignore[attr-defined]
        data = os.urandom(4 * 1024 * 1024)
        client.send(ak.file_start(1, "big.bin", len(data)))
        await client.wait(AgentMsg.FILE_XFER_STATUS)
        most = 0
        for i in range(0, len(data), 65536):
            message = ak.file_data(1, data[i : i + 65536])
            for piece in ak.pieces(message):
                await turns(lambda: (client.read(), client.tokens > 0)[1])
                client.tokens -= 1
                client.main.send(frame(MainClientMsg.AGENT_DATA, piece))
                most = max(most, files.unwritten)
        status = await client.wait(AgentMsg.FILE_XFER_STATUS, timeout=30)
        assert struct.unpack("<II", status.payload) == (1, FileXferStatus.SUCCESS)
        assert (tmp_path / "big.bin").read_bytes() == data
        # Never more than the hold mark, one 64 KiB message and the client's window in flight.
        assert HOLD_BYTES < most <= HOLD_BYTES + 65536 + 10 * 2048, most
        await server.close()

    run(scenario())
