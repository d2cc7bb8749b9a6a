"""Hostile clients that hold the ticket (or guess it), for the hostile barrage.

Each case of issue 12 as a coroutine ``case(port, password, **options) -> dict``: it opens its
own connections to 127.0.0.1:PORT (from a loopback source address of its own where the
server's per-address accounting matters), misbehaves for a bounded time, and returns what it
saw (bytes sent, whether and when the server closed it, answers, timings).  What the server
did meanwhile (memory, file descriptors, other clients' display gaps, log and record volume)
is measured from outside by the caller: ``tests/interop/bench_hostile.py`` and
``tests/interop/test_hostile.py``.  Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from spiceserver.protocol.enums import AgentMsg, ChannelType, LinkError
from tests import agentkit as ak
from tests.fakeclient import LoopbackClient, encrypt_ticket, frame, link_message, parse_link_reply

Result = dict[str, Any]
Case = Callable[..., Awaitable[Result]]

#: spice-gtk's DISPLAY_INIT values (pixmap cache, GLZ window in pixels).
GLZ_WINDOW = 16 << 20
PIXMAP_CACHE = 20 << 20
#: Where the ticket guesser comes from; every other case links from 127.0.0.1 or its own.
GUESSER = "127.0.0.2"


async def session(
    port: int, password: str, source: str | None = None
) -> tuple[LoopbackClient, int]:
    """A main channel linked with the right ticket, and its session id."""
    main = await LoopbackClient.open(port, source=source)
    code = await main.link(ChannelType.MAIN, password)
    if code != LinkError.OK:
        raise ConnectionError(f"main link refused: {code}")
    return main, struct.unpack_from("<I", await main.receive(103))[0]


async def channel(
    port: int, password: str, kind: int, session_id: int, source: str | None = None
) -> LoopbackClient:
    client = await LoopbackClient.open(port, source=source)
    code = await client.link(kind, password, connection_id=session_id)
    if code != LinkError.OK:
        raise ConnectionError(f"{ChannelType(kind).name} link refused: {code}")
    return client


def stop_reading(client: LoopbackClient) -> None:
    client.writer.transport.pause_reading()  # type: ignore[attr-defined]


async def flood(client: LoopbackClient, chunk: bytes, seconds: float) -> tuple[int, float | None]:
    """Write ``chunk`` again and again for ``seconds`` (never reading); bytes written, and
    when the server closed the connection (None: it did not)."""
    started = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - started < seconds:
            client.writer.write(chunk)
            await asyncio.wait_for(client.writer.drain(), max(0.05, seconds))
            sent += len(chunk)
            if client.writer.transport.is_closing() or client.reader.at_eof():
                return sent, time.monotonic() - started
    except (ConnectionError, TimeoutError):
        return sent, time.monotonic() - started
    return sent, None


async def close_all(*clients: LoopbackClient) -> None:
    for client in clients:
        client.writer.transport.abort()  # type: ignore[attr-defined]
    await asyncio.sleep(0)


# ---------------------------------------------------------------------- 1. making it talk


async def attach_flood(port: int, password: str, seconds: float = 5.0, sessions: int = 1) -> Result:
    """``sessions`` main channels flooding ATTACH_CHANNELS, reading nothing."""
    opened = [await session(port, password) for _ in range(sessions)]
    for main, _ in opened:
        stop_reading(main)
    chunk = frame(104) * 10_000
    results = await asyncio.gather(*(flood(main, chunk, seconds) for main, _ in opened))
    await close_all(*(main for main, _ in opened))
    return {
        "sent_mib": round(sum(sent for sent, _ in results) / 2**20, 1),
        "closed": sum(1 for _, closed in results if closed is not None),
    }


async def mouse_mode_flood(
    port: int, password: str, seconds: float = 10.0, sessions: int = 1
) -> Result:
    """MOUSE_MODE_REQUEST alternating server/client (each one a change the server answers),
    reading nothing: closed once its replies pass the main channel's cap."""
    opened = [await session(port, password) for _ in range(sessions)]
    for main, _ in opened:
        stop_reading(main)
    chunk = (frame(105, struct.pack("<H", 1)) + frame(105, struct.pack("<H", 2))) * 5000
    results = await asyncio.gather(*(flood(main, chunk, seconds) for main, _ in opened))
    await close_all(*(main for main, _ in opened))
    times = [closed for _, closed in results if closed is not None]
    return {
        "sent_mib": round(sum(sent for sent, _ in results) / 2**20, 1),
        "closed": len(times),
        "closed_after_s": round(max(times), 2) if times else None,
    }


async def motion_flood(port: int, password: str, seconds: float = 10.0) -> Result:
    """MOUSE_MOTION on the inputs channel (an ACK per four), reading nothing."""
    main, session_id = await session(port, password)
    inputs = await channel(port, password, ChannelType.INPUTS, session_id)
    stop_reading(inputs)
    sent, closed = await flood(inputs, frame(111, struct.pack("<iiH", 1, 1, 0)) * 4000, seconds)
    await close_all(inputs, main)
    return {"sent_mib": round(sent / 2**20, 1), "closed_after_s": closed and round(closed, 2)}


# ---------------------------------------------------------------------- 2. work per event


async def key_scancode(
    port: int, password: str, total: int = 1 << 20, seconds: float = 30.0
) -> Result:
    """KEY_SCANCODE messages of 4 KiB (2,048 presses and releases of A each): ``total`` bytes,
    or as many as ``seconds`` allow."""
    main, session_id = await session(port, password)
    inputs = await channel(port, password, ChannelType.INPUTS, session_id)
    message = frame(104, bytes([0x1E, 0x9E]) * 2048)
    started = time.monotonic()
    sent = 0
    while sent < total and time.monotonic() - started < seconds:
        inputs.writer.write(message * 16)
        await inputs.writer.drain()
        sent += 16 * len(message)
    # Four MOUSE_MOTIONs after the keys: the server ACKs them only once it has handled
    # everything before them, so the attack ends when its work is done.
    inputs.writer.write(frame(111, struct.pack("<iiH", 1, 1, 0)) * 4)
    with contextlib.suppress(TimeoutError, ConnectionError):
        await inputs.receive(111, timeout=120)  # MOUSE_MOTION_ACK
    elapsed = time.monotonic() - started
    await close_all(inputs, main)
    messages = sent // len(message)
    return {
        "sent_mib": round(sent / 2**20, 2),
        "key_events": messages * 4096,
        "s": round(elapsed, 2),
    }


# ---------------------------------------------------------------------- 3. GLZ dictionaries


async def glz_ids(port: int, password: str, ids: int = 48) -> Result:
    """One session opening display channels with ``ids`` different GLZ dictionary ids, each
    drawn a full frame (so its dictionary holds pixels) before the next."""
    main, session_id = await session(port, password)
    frames = 0
    for glz_id in range(ids):
        display = await channel(port, password, ChannelType.DISPLAY, session_id)
        display.send(1, struct.pack("<I", 1))  # ACK_SYNC
        display.send(101, struct.pack("<BqBi", 1, PIXMAP_CACHE, glz_id % 256, GLZ_WINDOW))
        with contextlib.suppress(TimeoutError, ConnectionError):
            await display.receive(102, timeout=10)  # MARK: the first full frame is in
            frames += 1
        await close_all(display)
    await close_all(main)
    return {"ids": ids, "full_frames": frames}


# ---------------------------------------------------------------------- 4. guessing


async def _guess(port: int, source: str, abandon_after: float | None) -> str:
    """One wrong ticket; what became of it."""
    try:
        client = await asyncio.wait_for(LoopbackClient.open(port, source=source), 5)
    except (OSError, TimeoutError):
        return "not connected"
    try:
        client.writer.write(link_message(ChannelType.MAIN))
        header = await asyncio.wait_for(client.reader.readexactly(16), 5)
        body = await asyncio.wait_for(
            client.reader.readexactly(struct.unpack_from("<I", header, 12)[0]), 5
        )
        reply = parse_link_reply(header + body)
        client.writer.write(struct.pack("<I", 1) + encrypt_ticket(reply.public_key, "guess"))
        try:
            result = await asyncio.wait_for(client.reader.readexactly(4), abandon_after)
        except TimeoutError:
            return "abandoned"
        return "denied" if struct.unpack("<I", result)[0] else "accepted"
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        return "closed by the server"
    finally:
        client.writer.transport.abort()  # type: ignore[attr-defined]


async def brute_force(
    port: int,
    password: str,
    seconds: float = 10.0,
    concurrency: int = 100,
    abandon_after: float | None = 0.03,
    source: str = GUESSER,
) -> Result:
    """``concurrency`` guessers from one address, each giving up on any answer slower than
    ``abandon_after`` (None: waiting for every answer), for ``seconds``."""
    outcomes: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def guesser() -> None:
        for _ in range(100_000):
            if time.monotonic() >= deadline:
                return
            what = await _guess(port, source, abandon_after)
            outcomes[what] = outcomes.get(what, 0) + 1
            if what == "not connected":
                await asyncio.sleep(0.01)

    await asyncio.gather(*(guesser() for _ in range(concurrency)))
    return {"attempts": sum(outcomes.values()), **outcomes}


async def right_ticket_after_failures(port: int, password: str, source: str = GUESSER) -> Result:
    """How long the right ticket takes from an address that has just been guessing."""
    started = time.monotonic()
    client = await LoopbackClient.open(port, source=source)
    code = await asyncio.wait_for(client.link(ChannelType.MAIN, password), 30)
    elapsed = time.monotonic() - started
    await close_all(client)
    return {"result": int(code), "answered_after_s": round(elapsed, 3)}


# ---------------------------------------------------------------------- 5. legal bursts


async def agent_burst(port: int, password: str) -> Result:
    """Eight 64 KiB AGENT_DATA back to back (main's documented limit), then ATTACH_CHANNELS:
    answered with the channel list if the connection survived."""
    main, _ = await session(port, password)
    # One legal 512 KiB agent message (clipboard data nobody asked for: the agent drops it).
    agent = ak.message(AgentMsg.CLIPBOARD, struct.pack("<I", 1) + os.urandom(8 * 65536 - 24))
    main.writer.write(b"".join(frame(107, piece) for piece in ak.pieces(agent, 65536)))
    main.send(104)
    try:
        await main.receive(104, timeout=10)
        accepted = True
    except (TimeoutError, ConnectionError):
        accepted = False
    await close_all(main)
    return {"accepted": accepted}


async def agent_abuse(port: int, password: str, grabs: int = 10_000, big: int = 2 << 20) -> Result:
    """The built-in agent: ``grabs`` clipboard grabs as fast as the returned tokens allow
    (each its own AGENT_DATA, serials racing), a clipboard message of ``big`` bytes (over a
    server started with ``--clipboard-max`` below it), then a header with the wrong protocol:
    the grabs are taken, the big message skipped as it arrives, the bad header closes that
    connection only."""
    main, _ = await session(port, password)
    main.send(106, struct.pack("<I", 0xFFFFFFFF))  # AGENT_START
    tokens = 10
    started = time.monotonic()

    async def send(piece: bytes) -> None:
        nonlocal tokens
        while tokens == 0:
            tokens += struct.unpack("<I", await main.receive(110, timeout=10))[0]
        tokens -= 1
        main.send(107, piece)

    await send(ak.caps_message())
    for n in range(grabs):
        await send(ak.grab(n % 2, (1, 2), serial=n // 2))
    rate = grabs / (time.monotonic() - started)
    for piece in ak.pieces(ak.message(AgentMsg.CLIPBOARD, bytes(big)), 65536):
        await send(piece)
    await send(ak.message(AgentMsg.REPLY, bytes(8), protocol=7))
    try:
        closed = await main.closed_by_server(timeout=10)
    except TimeoutError:
        closed = False
    await close_all(main)
    return {"grabs": grabs, "grabs_per_s": round(rate), "closed_on_bad_header": closed}


# ---------------------------------------------------------------------- 6. probing sessions


async def _probe(port: int, connection_id: int, source: str) -> tuple[bytes, float]:
    client = await LoopbackClient.open(port, source=source)
    started = time.monotonic()
    client.writer.write(link_message(ChannelType.DISPLAY, 0, connection_id))
    header = await asyncio.wait_for(client.reader.readexactly(16), 10)
    body = await asyncio.wait_for(
        client.reader.readexactly(struct.unpack_from("<I", header, 12)[0]), 10
    )
    elapsed = time.monotonic() - started
    await close_all(client)
    reply = header + body
    return struct.pack("<I", parse_link_reply(reply).error) + struct.pack("<I", len(reply)), elapsed


async def session_probes(port: int, password: str, probes: int = 400) -> Result:
    """Display links naming a live session and unknown ones, alternately, without a ticket:
    does the answer (its code and size) or its timing tell them apart?"""
    main, session_id = await session(port, password)
    answers: dict[bool, set[bytes]] = {True: set(), False: set()}
    times: dict[bool, list[float]] = {True: [], False: []}
    started = time.monotonic()
    for n in range(probes):
        live = n % 2 == 0
        target = session_id if live else (session_id ^ (0x9E3779B9 * (n + 1))) & 0xFFFFFFFF or 1
        answer, elapsed = await _probe(port, target, "127.0.0.5")
        answers[live].add(answer)
        times[live].append(elapsed)
    rate = probes / (time.monotonic() - started)
    await close_all(main)
    return {
        "probes": probes,
        "probes_per_s": round(rate),
        "same_answer": answers[True] == answers[False] and len(answers[True]) == 1,
        "reply_ms_live_median": round(1000 * statistics.median(times[True]), 2),
        "reply_ms_unknown_median": round(1000 * statistics.median(times[False]), 2),
    }


# ---------------------------------------------------------------------- 7. one address


async def idle_sockets(
    port: int, password: str, count: int = 300, source: str = "127.0.0.4"
) -> Result:
    """``count`` idle sockets from one address, each stalled in the link stage; how many the
    server keeps, and how long a good link from another address then takes."""
    clients = []
    for i in range(count):
        client = await LoopbackClient.open(port, source=source)
        client.writer.write(link_message(ChannelType.MAIN)[: (i * 7) % 34])
        clients.append(client)
    await asyncio.sleep(0.5)  # the server closes the ones over its limits at once
    started = time.monotonic()
    good, _ = await session(port, password)
    link_ms = 1000 * (time.monotonic() - started)
    await close_all(good, *clients)
    # How many the server held: counted from outside, in its file descriptors.
    return {"opened": count, "good_link_ms": round(link_ms, 1)}


# ---------------------------------------------------------------------- session churn


async def hostile_session(port: int, password: str, number: int) -> None:
    """One short session doing a bit of everything above: flood ATTACH and mode changes,
    a display with its own GLZ id, 16 KiB of KEY_SCANCODE, then gone without a goodbye."""
    main, session_id = await session(port, password)
    main.writer.write(frame(104) * 2000 + (frame(105, b"\x01\x00") + frame(105, b"\x02\x00")) * 500)
    display = await channel(port, password, ChannelType.DISPLAY, session_id)
    display.send(1, struct.pack("<I", 1))
    display.send(101, struct.pack("<BqBi", 1, PIXMAP_CACHE, number % 256, GLZ_WINDOW))
    inputs = await channel(port, password, ChannelType.INPUTS, session_id)
    inputs.writer.write(frame(104, bytes([0x1E, 0x9E]) * 2048) * 4)
    with contextlib.suppress(TimeoutError, ConnectionError):
        await display.receive(314, timeout=5)  # SURFACE_CREATE: the display is going
    await close_all(inputs, display, main)


async def session_churn(port: int, password: str, sessions: int = 1000) -> Result:
    started = time.monotonic()
    failed = 0
    for number in range(sessions):
        try:
            await asyncio.wait_for(hostile_session(port, password, number), 30)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            failed += 1
    return {"sessions": sessions, "failed": failed, "s": round(time.monotonic() - started, 1)}


__all__ = [
    "GUESSER",
    "agent_abuse",
    "agent_burst",
    "attach_flood",
    "brute_force",
    "glz_ids",
    "hostile_session",
    "idle_sockets",
    "key_scancode",
    "motion_flood",
    "mouse_mode_flood",
    "right_ticket_after_failures",
    "session",
    "session_churn",
    "session_probes",
]
