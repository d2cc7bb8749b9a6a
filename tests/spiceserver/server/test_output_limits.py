"""Item 1 and 5 of the hardening issue: every byte queued for a client counts against a cap.

A client that makes the server talk and never reads is closed at its channel's cap, or its
session's; repeated requests that change nothing queue nothing; small replies reach the
transport joined, so what it holds is what it reports; the largest legal burst is accepted.
The whole stack in memory (``tests.memory``).
"""

from __future__ import annotations

import logging
import struct

import pytest

from spiceserver.protocol.enums import AgentMsg, ChannelType, MainServerMsg
from spiceserver.server.transports.stream import COALESCE_BELOW, coalesce
from tests import agentkit as ak
from tests.conftest import run
from tests.fakeclient import frame
from tests.memory import (
    PASSWORD,
    init_session_id,
    linked,
    main_at,
    make_server,
    ready,
    turns,
)

MIB = 1024 * 1024
PEER2 = ("127.0.0.7", 40001)


def test_a_flood_of_attach_channels_that_is_never_read_queues_nothing() -> None:
    async def scenario() -> None:
        server = await ready(make_server())
        main = await main_at(server)
        main.send(frame(104))
        assert [t for t, _ in main.messages()].count(MainServerMsg.CHANNELS_LIST) == 1
        main.transport.stalled = True  # the client reads nothing from here on
        for _ in range(10):  # 500,000 requests, each read as a real socket would deliver it
            main.send(frame(104) * 50_000)
            await turns(lambda: main.transport.reading)
        assert main.transport.unsent == 0 and not main.transport.closing
        await server.close()

    run(scenario())


def test_a_client_that_only_makes_the_server_talk_is_closed_at_its_channels_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        server = await ready(make_server())
        main = await main_at(server)
        main.messages()
        main.transport.stalled = True
        flood = (frame(105, struct.pack("<H", 1)) + frame(105, struct.pack("<H", 2))) * 10_000
        for _ in range(100):  # each pair changes the mode twice: two replies
            main.send(flood)
            await turns(lambda: main.transport.reading or main.transport.closing)
            if main.transport.closing:
                break
        assert main.transport.aborted
        assert 1 * MIB < main.transport.unsent < 1 * MIB + 64 * 1024  # main's cap: 1 MiB
        await server.close()

    with caplog.at_level(logging.INFO, logger="spiceserver"):
        run(scenario())
    assert "client stopped reading" in caplog.text and "max_write_buffer" in caplog.text
    mode_lines = [r for r in caplog.records if "mouse mode" in r.getMessage()]
    assert len(mode_lines) < 100  # ~200,000 changes: the log did not follow


def test_a_session_is_capped_as_a_whole() -> None:
    async def scenario() -> None:
        server = await ready(make_server(max_session_write_buffer=200_000))
        main = await main_at(server)
        sid = init_session_id(main)
        inputs = await linked(server, ChannelType.INPUTS, PASSWORD, connection_id=sid, peer=PEER2)
        main.transport.unsent = 199_990  # main's client has stopped reading
        inputs.transport.stalled = True
        motion = frame(111, struct.pack("<iiH", 1, 1, 0))  # MOUSE_MOTION: an ACK per 4
        inputs.send(motion * 200)
        await turns(lambda: inputs.transport.reading or inputs.transport.closing)
        assert inputs.transport.aborted  # well below its own 1 MiB, but the session is full
        assert not main.transport.closing
        await server.close()

    run(scenario())


def test_small_replies_reach_the_transport_joined() -> None:
    chunks = [b"h" * 6, b"b" * 16, memoryview(b"x" * 10_000), b"h" * 6, b"t" * 4]
    joined = coalesce(chunks)
    assert [len(c) for c in joined] == [22, 10_000, 10]
    assert joined[1] is chunks[2]  # large ones are never copied
    assert b"".join(bytes(c) for c in joined) == b"".join(bytes(c) for c in chunks)
    assert coalesce([b"x" * COALESCE_BELOW]) == [b"x" * COALESCE_BELOW]

    async def scenario() -> None:
        server = await ready(make_server())
        main = await main_at(server)
        sid = init_session_id(main)
        inputs = await linked(server, ChannelType.INPUTS, PASSWORD, connection_id=sid, peer=PEER2)
        before = inputs.transport.chunks
        inputs.send(frame(111, struct.pack("<iiH", 1, 1, 0)) * 256)  # 64 MOTION_ACKs
        assert inputs.transport.chunks - before == 1  # one object, not 128
        await server.close()

    run(scenario())


def test_eight_largest_agent_messages_back_to_back_are_accepted() -> None:
    async def scenario() -> None:
        server = await ready(make_server())
        main = await main_at(server)
        main.messages()
        # AGENT_DATA at main's 64 KiB limit, carrying one legal 512 KiB agent message (data
        # nobody asked for: dropped by the agent, the connection stays).
        agent = ak.message(AgentMsg.CLIPBOARD, struct.pack("<I", 1) + bytes(8 * 65536 - 24))
        stream = b"".join(frame(107, piece) for piece in ak.pieces(agent, 65536))
        for start in range(0, len(stream), 256 * 1024):  # as reads of 256 KiB deliver it
            await turns(lambda: main.transport.reading)
            main.send(stream[start : start + 256 * 1024])
        await turns(lambda: main.transport.reading)
        assert not main.transport.closing
        await server.close()

    run(scenario())
