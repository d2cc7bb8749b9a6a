"""TLS, ticket rules, limits and abuse over loopback (issue: security and robustness)."""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from spiceserver import ConfigError, ImageCompression, NumpySource, SpiceServer
from spiceserver.protocol.enums import ChannelType, LinkError
from spiceserver.server.security import FailureTracker, tls_context
from tests.conftest import eventually, run
from tests.fakeclient import LoopbackClient
from tests.spiceserver.server.test_loopback import (
    PASSWORD,
    Canvas,
    open_display,
    open_session,
    random_frame,
    receive_until,
)
from tests.tlsutil import TlsFiles, make_tls_files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def client_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files.ca))
    context.check_hostname = False
    return context


def server(source: NumpySource | None = None, **options: object) -> SpiceServer:
    options.setdefault("image_compression", ImageCompression.OFF)
    return SpiceServer(source or NumpySource(64, 64), password=PASSWORD, port=0, **options)


def test_tls_key_readable_by_others_is_refused(tls: TlsFiles, tmp_path: Path) -> None:
    loose = tmp_path / "loose.pem"
    loose.write_bytes(tls.key.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        tls_context(str(tls.cert), str(loose))
    assert tls_context(str(tls.cert), str(tls.key)).minimum_version == ssl.TLSVersion.TLSv1_2


def test_plain_links_are_sent_to_tls_and_tls_links_work(tls: TlsFiles) -> None:
    async def scenario() -> None:
        async with server(
            tls_port=0,
            tls_cert=str(tls.cert),
            tls_key=str(tls.key),
            plaintext_channels=frozenset({"inputs"}),
        ) as srv:
            assert srv.tls_port and srv.uri.endswith(f"?tls-port={srv.tls_port}")
            plain = await LoopbackClient.open(srv.port)
            assert await plain.link(ChannelType.MAIN, PASSWORD) == LinkError.NEED_SECURED
            secure = await LoopbackClient.open(srv.tls_port, ssl=client_context(tls))
            assert await secure.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
            session_id = struct.unpack_from("<I", await secure.receive(103))[0]
            inputs = await LoopbackClient.open(srv.port)  # a plaintext channel
            assert await inputs.link(ChannelType.INPUTS, PASSWORD, connection_id=session_id) == 0
            display = await LoopbackClient.open(srv.port)
            code = await display.link(ChannelType.DISPLAY, PASSWORD, connection_id=session_id)
            assert code == LinkError.NEED_SECURED
            for client in (plain, secure, inputs, display):
                await client.close()

    run(scenario())


def test_expired_ticket_is_refused() -> None:
    async def scenario() -> None:
        async with server(ticket_lifetime=30) as srv:
            client = await LoopbackClient.open(srv.port)
            assert await client.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
            srv.context.ticket.set_at -= 31  # half a minute later
            late = await LoopbackClient.open(srv.port)
            assert await late.link(ChannelType.MAIN, PASSWORD) == LinkError.PERMISSION_DENIED
            srv.set_ticket("new ticket", lifetime=30)
            fresh = await LoopbackClient.open(srv.port)
            assert await fresh.link(ChannelType.MAIN, "new ticket") == LinkError.OK

    run(scenario())


def test_one_shot_ticket_admits_one_session() -> None:
    async def scenario() -> None:
        async with server(one_shot_ticket=True) as srv:
            _main, session_id = await open_session(srv.port)
            second = await LoopbackClient.open(srv.port)
            assert await second.link(ChannelType.MAIN, PASSWORD) == LinkError.PERMISSION_DENIED
            display = await open_display(srv.port, session_id)  # its own channels still link
            await display.receive(314)

    run(scenario())


def test_failure_tracker_spaces_checks_per_address() -> None:
    tracker = FailureTracker(base_delay=0.25, max_delay=2, window=60, max_addresses=2)
    assert tracker.spacing("a", 0) == 0  # never failed: checked at once
    assert [tracker.failed("a", t) for t in range(6)] == [0.25, 0.5, 1, 2, 2, 2]
    assert tracker.spacing("a", 6) == 2
    assert tracker.failed("b", 10) == 0.25
    assert tracker.spacing("a", 200) == 0  # an old streak is forgotten
    assert tracker.failed("a", 200) == 0.25
    tracker.failed("c", 201)  # "b" falls out of the bounded table
    assert tracker.spacing("b", 202) == 0
    tracker.succeeded("a")
    assert tracker.spacing("a", 203) == 0


def test_repeated_failures_pace_every_check_of_that_address_only() -> None:
    async def scenario() -> None:
        async with server() as srv:
            for _ in range(2):
                bad = await LoopbackClient.open(srv.port, source="127.0.0.2")
                assert await bad.link(ChannelType.MAIN, "guess") == LinkError.PERMISSION_DENIED
            bad = await LoopbackClient.open(srv.port, source="127.0.0.2")
            started = time.monotonic()
            slow = asyncio.create_task(bad.link(ChannelType.MAIN, "guess"))
            await asyncio.sleep(0.05)
            good = await LoopbackClient.open(srv.port)  # another address
            assert await good.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
            assert time.monotonic() - started < 0.4  # the good client did not wait
            assert await slow == LinkError.PERMISSION_DENIED
            assert time.monotonic() - started >= 0.45  # after two failures: 0.5 s apart
            # The right ticket from the failing address waits its turn just the same: the
            # answer's timing says nothing about the ticket.
            right = await LoopbackClient.open(srv.port, source="127.0.0.2")
            started = time.monotonic()
            assert await right.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
            assert time.monotonic() - started >= 0.9  # after three failures: 1 s apart
            assert srv.context.failures.spacing("127.0.0.2", srv.context.clock()) == 0

    run(scenario())


def test_abandoned_attempts_are_forgotten_and_never_checked() -> None:
    async def scenario() -> None:
        async with server(ticket_check_spacing=2.0, ticket_check_max_spacing=2.0) as srv:
            bad = await LoopbackClient.open(srv.port, source="127.0.0.3")
            assert await bad.link(ChannelType.MAIN, "guess") == LinkError.PERMISSION_DENIED
            checks = srv.context.gate.checks
            waiting = []
            for _ in range(10):  # each waits for its turn (2 s apart), then gives up
                client = await LoopbackClient.open(srv.port, source="127.0.0.3")
                task = asyncio.create_task(client.link(ChannelType.MAIN, "guess"))
                waiting.append((client, task))
            await eventually(lambda: srv.context.gate.waiting("127.0.0.3") == 10)
            for client, task in waiting:
                task.cancel()
                client.writer.transport.abort()  # type: ignore[attr-defined]
            # Each close is seen at once, not when its turn would have come (2 s apart).
            await eventually(lambda: not srv.context.addresses.open["127.0.0.3"], timeout=1.5)
            assert srv.context.gate.waiting("127.0.0.3") == 0
            assert srv.context.gate.checks == checks  # none of them was ever checked

    run(scenario())


def test_links_in_progress_and_connections_are_capped_per_address() -> None:
    async def scenario() -> None:
        async with server(max_unauthenticated_per_address=3, max_connections_per_address=5) as srv:
            idle = [await LoopbackClient.open(srv.port, source="127.0.0.4") for _ in range(3)]
            extra = await LoopbackClient.open(srv.port, source="127.0.0.4")
            assert await extra.closed_by_server()  # a fourth link in progress: refused
            await open_session(srv.port)  # other addresses: unaffected
            for client in idle:
                await client.close()
            await eventually(lambda: not srv.context.addresses.open["127.0.0.4"])
            linked = []
            for _ in range(5):  # linked connections no longer count as in progress ...
                client = await LoopbackClient.open(srv.port, source="127.0.0.4")
                assert await client.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
                linked.append(client)
            extra = await LoopbackClient.open(srv.port, source="127.0.0.4")
            assert await extra.closed_by_server()  # ... but count towards the address's 5
            assert srv.context.addresses.open["127.0.0.4"] == 5

    run(scenario())


def test_connection_limit_refuses_extra_connections_only() -> None:
    async def scenario() -> None:
        async with server(max_connections=3) as srv:
            _main, session_id = await open_session(srv.port)
            idle = [await LoopbackClient.open(srv.port) for _ in range(2)]
            extra = await LoopbackClient.open(srv.port)
            assert await extra.closed_by_server()
            await idle[0].close()
            await asyncio.sleep(0.1)  # let the server see the close
            display = await open_display(srv.port, session_id)
            await display.receive(314)

    run(scenario())


def test_hundreds_of_half_open_connections_do_not_block_a_good_client() -> None:
    async def scenario() -> None:
        source = NumpySource(frame=random_frame(200, 100, 9))
        async with server(source, handshake_timeout=60) as srv:
            idle = []
            for i in range(400):  # from 20 addresses: each holds 20 (max_connections_per_address)
                client = await LoopbackClient.open(srv.port, source=f"127.0.1.{1 + i % 20}")
                client.writer.write(b"REDQ\x02\x00"[: i % 6])  # stalled at every link stage
                idle.append(client)
            _main, session_id = await open_session(srv.port)
            display = await open_display(srv.port, session_id)
            canvas = Canvas(200, 100)
            await receive_until(display, canvas, source.frame)
            assert len(srv.context.connections) == 402
            for client in idle:
                client.writer.close()

    run(scenario(), timeout=120)


def test_client_that_stops_reading_gets_the_latest_frame_when_it_resumes() -> None:
    async def scenario() -> None:
        source = NumpySource(frame=random_frame(256, 256, 10))
        async with server(source, write_buffer_high=64 * 1024, max_fps=200) as srv:
            _main, session_id = await open_session(srv.port)
            display = await open_display(srv.port, session_id)
            canvas = Canvas(256, 256)
            await receive_until(display, canvas, source.frame)
            display.writer.transport.pause_reading()  # the client stops reading
            for seed in range(100, 400):  # 300 full frames, 77 MB of raw pixels
                source.update(random_frame(256, 256, seed))
                await asyncio.sleep(0.001)
            connection = next(
                c
                for c in srv.context.connections
                if c.request and c.request.channel_type == ChannelType.DISPLAY
            )
            buffered = connection.outlet.buffered()
            assert buffered < 8 * 1024 * 1024  # bounded: updates stopped at the high-water mark
            display.writer.transport.resume_reading()
            while True:  # what it sees: stale bands, then the newest frame, nothing queued
                await receive_until_or_ack(display, canvas)
                if np.array_equal(canvas.pixels[..., :3], source.frame[..., :3]):
                    break

    run(scenario(), timeout=120)


async def receive_until_or_ack(display: LoopbackClient, canvas: Canvas) -> None:
    """Apply one DRAW_COPY, acknowledging as spice-gtk would (window 20)."""
    canvas.apply(await display.receive(304, timeout=20))
    display.acked = getattr(display, "acked", 0) + 1
    if display.acked % 20 == 0:
        display.send(2)
