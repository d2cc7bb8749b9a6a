"""Items 4 and 6 of the hardening issue: what a link reveals, and what an abandoned one costs.

Before its ticket is checked a secondary link gets the same answer for a live session and an
unknown one; a right ticket naming no session is paced like a wrong one.  The RSA key of a
link abandoned before its ticket is reused; one a ticket was encrypted with never is.  The
whole stack in memory (``tests.memory``); the pacing itself is tested over sockets in
``test_security.py``.
"""

from __future__ import annotations

import struct

from spiceserver.protocol.enums import ChannelType, LinkError
from tests.conftest import run
from tests.fakeclient import encrypt_ticket, link_message, parse_link_reply
from tests.memory import (
    PASSWORD,
    MemoryClient,
    init_session_id,
    key_ready,
    main_at,
    make_server,
    ready,
)


def test_secondary_links_get_the_same_answer_for_live_and_unknown_sessions() -> None:
    async def scenario() -> None:
        server = await ready(make_server())
        sid = init_session_id(await main_at(server))
        answers = []
        for number, connection_id in enumerate((sid, sid ^ 0x5A5A5A5A)):
            await key_ready(server)
            probe = MemoryClient(server, (f"127.0.0.{20 + number}", 40000))
            probe.send(link_message(ChannelType.DISPLAY, 0, connection_id))
            answers.append(probe.transport.take())  # answered at once, either way
        assert [parse_link_reply(a).error for a in answers] == [LinkError.OK, LinkError.OK]
        assert len(answers[0]) == len(answers[1])
        for n, cid in enumerate((sid, sid ^ 0x5A5A5A5A)):
            await key_ready(server)
            guesser = MemoryClient(server, (f"127.0.0.{30 + n}", 40000))
            code = guesser.link(ChannelType.DISPLAY, "guess", connection_id=cid)
            assert code == LinkError.PERMISSION_DENIED
        # Only the ticket's holder learns a session is gone, and is then paced like a guesser.
        await key_ready(server)
        prober = MemoryClient(server, ("127.0.0.40", 40000))
        code = prober.link(ChannelType.DISPLAY, PASSWORD, connection_id=sid ^ 0x5A5A5A5A)
        assert code == LinkError.BAD_CONNECTION_ID
        assert server.context.failures.spacing("127.0.0.40", server.context.clock()) > 0
        await server.close()

    run(scenario())


def test_keys_of_abandoned_links_are_reused_but_never_after_a_ticket() -> None:
    async def scenario() -> None:
        server = await ready(make_server(rsa_key_pool=1))
        first = MemoryClient(server, ("127.0.0.50", 40000))
        first.send(link_message(ChannelType.MAIN))
        key = parse_link_reply(first.transport.take()).public_key
        first.transport.close()  # gave up before sending a ticket
        await key_ready(server)
        second = MemoryClient(server, ("127.0.0.51", 40000))
        second.send(link_message(ChannelType.MAIN))
        assert parse_link_reply(second.transport.take()).public_key == key  # not regenerated

        # An address that failed waits for its turn; one that leaves meanwhile had sent a
        # ticket encrypted with its key: that key is never shown again.
        await key_ready(server)
        assert MemoryClient(server, ("127.0.0.52", 1)).link(ChannelType.MAIN, "x") != 0
        await key_ready(server)
        waiting = MemoryClient(server, ("127.0.0.52", 2))
        waiting.send(link_message(ChannelType.MAIN))
        reply = parse_link_reply(waiting.transport.take())
        waiting.send(struct.pack("<I", 1) + encrypt_ticket(reply.public_key, PASSWORD))
        assert server.context.gate.waiting("127.0.0.52") == 1
        waiting.transport.close()
        assert server.context.gate.waiting("127.0.0.52") == 0
        seen = set()
        for n in range(3):
            await key_ready(server)
            probe = MemoryClient(server, (f"127.0.0.{60 + n}", 40000))
            probe.send(link_message(ChannelType.MAIN))
            seen.add(parse_link_reply(probe.transport.take()).public_key)
        assert reply.public_key not in seen
        await server.close()

    run(scenario())
