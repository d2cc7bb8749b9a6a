"""A barrage of hostile clients for robustness tests and the barrage benchmark.

Every case opens its own connection(s) to 127.0.0.1:PORT, misbehaves, and returns how the
server reacted.  A case passes when the server answered as the protocol says (a link error or
a closed connection) within a bounded time — and, checked by the caller, the server is still
serving everyone else.
"""

from __future__ import annotations

import asyncio
import os
import resource
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from spiceserver.protocol.enums import ChannelType, LinkError
from tests.fakeclient import LoopbackClient, frame, link_message, parse_link_reply

Case = Callable[[int, str], Awaitable[str]]
CASES: dict[str, Case] = {}


def case(func: Case) -> Case:
    CASES[func.__name__] = func
    return func


async def _closed(client: LoopbackClient, timeout: float = 15.0) -> str:
    try:
        await client.closed_by_server(timeout=timeout)
    except TimeoutError:
        return "still open"
    return "closed"


async def _raw(port: int, data: bytes) -> tuple[bytes, str]:
    client = await LoopbackClient.open(port)
    client.writer.write(data)
    try:
        async with asyncio.timeout(15):
            reply = await client.reader.read(4096)
            rest = await _closed(client)
    except (TimeoutError, ConnectionError):
        return b"", "error"
    finally:
        await client.close()
    return reply, rest


def _link_error(reply: bytes) -> int | None:
    if len(reply) >= 20 and reply[:4] == b"REDQ":
        return parse_link_reply(reply).error
    return None


@case
async def garbage_instead_of_header(port: int, password: str) -> str:
    reply, rest = await _raw(port, os.urandom(64))
    return f"link error {_link_error(reply)}, {rest}"


@case
async def bad_version(port: int, password: str) -> str:
    reply, rest = await _raw(port, link_message(ChannelType.MAIN, major=3))
    return f"link error {_link_error(reply)}, {rest}"


@case
async def huge_link_size(port: int, password: str) -> str:
    reply, rest = await _raw(port, struct.pack("<4sIII", b"REDQ", 2, 2, 0xFFFFFFFF))
    return f"link error {_link_error(reply)}, {rest}"


@case
async def caps_outside_message(port: int, password: str) -> str:
    mess = struct.pack("<IBBIII", 0, 1, 0, 1000, 1000, 18)
    reply, rest = await _raw(port, struct.pack("<4sIII", b"REDQ", 2, 2, len(mess)) + mess)
    return f"link error {_link_error(reply)}, {rest}"


@case
async def unknown_channel_type(port: int, password: str) -> str:
    client = await LoopbackClient.open(port)
    code = await client.link(200, password, connection_id=1)
    await client.close()
    return f"link error {code}"


#: Cases whose ticket is refused come from addresses of their own: the server paces every
#: ticket check of an address that failed, and the other cases link from 127.0.0.1.
GUESSER = "127.0.0.66"


@case
async def unknown_session(port: int, password: str) -> str:
    client = await LoopbackClient.open(port, source="127.0.0.67")
    code = await client.link(ChannelType.DISPLAY, password, connection_id=0xDEADBEEF)
    await client.close()
    return f"link error {code}"


@case
async def wrong_ticket(port: int, password: str) -> str:
    client = await LoopbackClient.open(port, source=GUESSER)
    code = await client.link(ChannelType.MAIN, password + "x")
    await client.close()
    return f"link error {code}"


@case
async def undecryptable_ticket(port: int, password: str) -> str:
    client = await LoopbackClient.open(port, source="127.0.0.68")
    client.writer.write(link_message(ChannelType.MAIN))
    header = await client.reader.readexactly(16)
    await client.reader.readexactly(struct.unpack_from("<I", header, 12)[0])
    client.writer.write(struct.pack("<I", 1) + os.urandom(128))
    result = await client.reader.readexactly(4)
    state = await _closed(client)
    return f"link result {struct.unpack('<I', result)[0]}, {state}"


@case
async def sasl_mechanism(port: int, password: str) -> str:
    client = await LoopbackClient.open(port)
    client.writer.write(link_message(ChannelType.MAIN, common_caps=[0, 2, 3]))
    header = await client.reader.readexactly(16)
    await client.reader.readexactly(struct.unpack_from("<I", header, 12)[0])
    client.writer.write(struct.pack("<I", 2))
    result = await client.reader.read(4)
    state = await _closed(client)
    return f"link result {struct.unpack('<I', result)[0] if len(result) == 4 else None}, {state}"


@case
async def truncated_link_then_close(port: int, password: str) -> str:
    client = await LoopbackClient.open(port)
    client.writer.write(link_message(ChannelType.MAIN)[:20])
    await client.close()
    return "closed by client"


async def _linked(port: int, password: str, channel: int) -> LoopbackClient:
    main = await LoopbackClient.open(port)
    assert await main.link(ChannelType.MAIN, password) == LinkError.OK
    session_id = struct.unpack_from("<I", await main.receive(103))[0]
    if channel == ChannelType.MAIN:
        return main
    other = await LoopbackClient.open(port)
    assert await other.link(channel, password, connection_id=session_id) == LinkError.OK
    other.main = main  # type: ignore[attr-defined]
    return other


async def _after_link(
    port: int, password: str, channel: int, data: bytes, timeout: float = 15.0
) -> str:
    client = await _linked(port, password, channel)
    client.writer.write(data)
    state = await _closed(client, timeout)
    await client.close()
    main = getattr(client, "main", None)
    if main is not None:
        await main.close()
    return state


def _channel_cases() -> None:
    payloads = {
        "garbage_frames": lambda: os.urandom(4096),
        "oversized_frame": lambda: struct.pack("<HI", 101, 1 << 31),
        "unknown_type": lambda: frame(999, b"x"),
        "short_body": lambda: frame(101, b"\x01"),
        "long_body": lambda: frame(103, b"\x00" * 9),
        "bad_button": lambda: frame(113, struct.pack("<BH", 77, 0)),
        "flood_10mb": lambda: frame(103, b"\x00\x00") * (10 * 1024 * 1024 // 8) + os.urandom(9),
    }
    for channel in (ChannelType.MAIN, ChannelType.DISPLAY, ChannelType.INPUTS, ChannelType.CURSOR):
        for name, make in payloads.items():
            # The inputs channel handles every event of a 10 MiB flood before it reaches the
            # bad tail (1.3 M key events, paced by ``flood_pause``: ~10 s on these 2-core
            # machines, alone), so 15 s was too thin a margin for a loaded CI run; 25 s stays
            # within run_cases' 30 s a case.
            wait = 25.0 if name.startswith("flood") else 15.0

            async def run(
                port: int,
                password: str,
                channel: int = channel,
                make: Callable[[], bytes] = make,
                wait: float = wait,
            ) -> str:
                return await _after_link(port, password, channel, make(), wait)

            CASES[f"{ChannelType(channel).name.lower()}_{name}"] = run


_channel_cases()


@dataclass
class HalfOpen:
    """Idle connections held open, each stalled at some point of the link stage.

    They come from ``per_address`` per loopback address (127.0.2.1, 127.0.2.2, …): one address
    may hold only ``max_unauthenticated_per_address`` (32) links in progress.
    """

    clients: list[LoopbackClient]

    @classmethod
    async def open(cls, port: int, count: int, per_address: int = 25) -> HalfOpen:
        raise_fd_limit(count + 256)
        clients = []
        for i in range(count):
            n = i // per_address
            source = f"127.0.{2 + n // 250}.{1 + n % 250}"
            client = await LoopbackClient.open(port, source=source)
            client.writer.write(link_message(ChannelType.MAIN)[: (i * 7) % 34])
            clients.append(client)
        return cls(clients)

    async def still_open(self) -> int:
        await asyncio.sleep(0)
        return sum(1 for c in self.clients if not c.reader.at_eof())

    async def close(self) -> None:
        for client in self.clients:
            client.writer.close()


def raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def answered(outcome: str) -> bool:
    """The server reacted as the protocol says: a link error, or it closed the connection."""
    return (
        outcome.startswith(("link error", "link result"))
        or outcome.endswith("closed")
        or outcome == "closed by client"
    )


async def run_cases(port: int, password: str) -> dict[str, str]:
    """Every case once, a few at a time; returns case name → what the server did."""
    results: dict[str, str] = {}
    semaphore = asyncio.Semaphore(8)

    async def one(name: str, case: Case) -> None:
        async with semaphore:
            try:
                async with asyncio.timeout(30):
                    results[name] = await case(port, password)
            except Exception as exc:  # the case's own client failed: report it
                results[name] = f"client error {type(exc).__name__}: {exc}"

    await asyncio.gather(*(one(name, case) for name, case in CASES.items()))
    return results


async def good_link(port: int, password: str) -> float:
    """Seconds for one full main link (RSA encryption on our side included)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    client = await LoopbackClient.open(port)
    assert await client.link(ChannelType.MAIN, password) == LinkError.OK
    await client.receive(103)
    elapsed = loop.time() - started
    await client.close()
    return elapsed


__all__ = ["CASES", "HalfOpen", "answered", "good_link", "run_cases"]
