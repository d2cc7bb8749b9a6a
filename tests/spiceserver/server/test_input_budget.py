"""Item 2 of the hardening issue: the work a client causes per loop turn is bounded in events.

One 4 KiB KEY_SCANCODE is ~4,000 key events; they reach the embedder at most
``max_events_per_call`` per loop turn, and the log lines they cause are rate-limited per
template, with a count of what was dropped.  The whole stack in memory (``tests.memory``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from spiceserver.logs import LogLimiter
from spiceserver.protocol.enums import ChannelType
from spiceserver.protocol.events import InputEvent, KeyEvent
from spiceserver.record import MemoryRecorder
from tests.conftest import run
from tests.fakeclient import frame
from tests.memory import (
    PASSWORD,
    FakeClock,
    init_session_id,
    linked,
    main_at,
    make_server,
    ready,
    turns,
)

PEER2 = ("127.0.0.7", 40001)


def test_key_scancode_work_is_bounded_per_loop_turn() -> None:
    delivered: list[InputEvent] = []

    async def scenario() -> None:
        server = await ready(make_server(on_input=delivered.append))
        main = await main_at(server)
        sid = init_session_id(main)
        inputs = await linked(server, ChannelType.INPUTS, PASSWORD, connection_id=sid, peer=PEER2)
        connection = server.context.sessions.sessions[sid].channels[(ChannelType.INPUTS, 0)]
        steps: list[tuple[int, float]] = []  # events and loop time of each step
        handled = connection.handler.on_events

        def on_events(events: list[object], now: float) -> None:
            steps.append((len(events), asyncio.get_running_loop().time()))
            handled(events, now)

        connection.handler.on_events = on_events
        message = frame(104, bytes([0x1E, 0x9E]) * 2048)  # one 4 KiB KEY_SCANCODE: 4,096 keys
        inputs.send(message * 4)
        assert not inputs.transport.reading  # the backlog is taken step by step ...
        await turns(lambda: inputs.transport.reading)  # ... then reading resumes
        assert max(events for events, _ in steps) <= 256  # channel_limits.max_events_per_call
        assert len(steps) >= 4 * 4096 // 256
        # A millisecond at least between two steps (ServerConfig.flood_pause): the loop breathes.
        assert all(b - a >= 0.0005 for (_, a), (_, b) in itertools.pairwise(steps))
        assert len(delivered) == 4 * 4096
        assert all(isinstance(e, KeyEvent) for e in delivered)
        await server.close()

    run(scenario())


def test_input_log_lines_cannot_amplify(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        server = await ready(make_server())  # the default sink logs keys at INFO
        server._log_limiter.reset()
        main = await main_at(server)
        sid = init_session_id(main)
        inputs = await linked(server, ChannelType.INPUTS, PASSWORD, connection_id=sid, peer=PEER2)
        inputs.send(frame(104, bytes([0x1E, 0x9E]) * 2048) * 4)
        await turns(lambda: inputs.transport.reading)
        await server.close()  # reports what was dropped

    with caplog.at_level(logging.INFO, logger="spiceserver"):
        run(scenario())
    keys = [r for r in caplog.records if r.getMessage().startswith("key ")]
    assert len(keys) <= 25  # a burst of 20, then 5 per second: not 16,384 lines
    assert any("were not logged" in r.getMessage() for r in caplog.records)


def test_log_limiter_lets_bursts_through_then_a_rate_and_counts_the_rest() -> None:
    now = [0.0]
    limiter = LogLimiter(rate=2.0, burst=3, clock=lambda: now[0])

    def record(msg: str = "%s: refused", arg: str = "peer") -> logging.LogRecord:
        return logging.LogRecord(
            "spiceserver.connection", logging.WARNING, "", 0, msg, (arg,), None
        )

    passed = [limiter.filter(record()) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert limiter.filter(record("other %s"))  # another template has its own budget
    now[0] += 0.5  # one more token
    line = record()
    assert limiter.filter(line)
    assert line.getMessage() == "peer: refused [7 similar lines not logged]"
    assert not limiter.filter(record())


def test_a_session_records_at_its_rate_and_says_what_it_left_out() -> None:
    async def scenario() -> None:
        recorder = MemoryRecorder()
        server = await ready(make_server(recorders=[recorder], record_rate=10, record_burst=100))
        clock = FakeClock.install(server)  # frozen: no token comes back until it moves
        main = await main_at(server)
        sid = init_session_id(main)
        inputs = await linked(server, ChannelType.INPUTS, PASSWORD, connection_id=sid, peer=PEER2)
        inputs.send(frame(104, bytes([0x1E, 0x9E]) * 2048))  # 4,096 key events
        await turns(lambda: inputs.transport.reading)
        keys = [e for e in recorder.events if e["event"] == "key"]
        assert len(keys) == 100  # the burst; successful links do not count
        clock.advance(1.0)  # ten more may be recorded
        inputs.send(frame(104, b"\x1e\x9e"))
        dropped = [e for e in recorder.events if e["event"] == "record_dropped"]
        assert dropped[0]["dropped"] == 4096 - len(keys) and dropped[0]["session"] == f"{sid:#010x}"
        assert [e["event"] for e in recorder.events[-2:]] == ["key", "key"]
        main.transport.close()  # the session ends: the links and disconnects are all there
        events = [e["event"] for e in recorder.events]
        assert events.count("link") == 2 and events.count("disconnect") == 2
        await server.close()

    run(scenario())
