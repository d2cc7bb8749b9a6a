"""Item 3 of the hardening issue: GLZ dictionaries, bounded per session and in memory.

At most ``glz_dictionaries_per_session`` per session, each at most one frame of the source,
within ``glz_memory_budget`` across sessions, and freed by reference counting the moment a
session ends (checked with the cycle collector off).  The whole stack in memory
(``tests.memory``).
"""

from __future__ import annotations

import gc
import struct
import weakref
from typing import Any

import numpy as np

from spiceserver import ImageCompression, NumpySource, SpiceServer
from spiceserver.protocol.enums import ChannelType
from spiceserver.server.glz import MIN_DICTIONARY_BYTES
from tests.conftest import run
from tests.fakeclient import frame
from tests.memory import (
    PASSWORD,
    MemoryClient,
    init_session_id,
    linked,
    main_at,
    make_server,
    ready,
)

MIB = 1024 * 1024


def display_init(display: MemoryClient, glz_id: int, window: int = 16 << 20) -> None:
    display.send(frame(1, struct.pack("<I", 1)))  # ACK_SYNC
    display.send(frame(101, struct.pack("<BqBi", 1, 1 << 20, glz_id, window)))


def big_server(**options: Any) -> SpiceServer:
    """As ``make_server``, on a 4096x2048 source: a frame of 8 Mi pixels, the dictionaries' cap."""
    return SpiceServer(
        NumpySource(4096, 2048),
        password=PASSWORD,
        warmup_encoders=False,
        port=0,
        image_compression=ImageCompression.OFF,
        **options,
    )


def test_a_dictionary_keeps_at_most_one_frame() -> None:
    async def scenario() -> None:
        server = await ready(make_server())  # a 64x48 source; the client's window is 16 Mi
        main = await main_at(server)
        sid = init_session_id(main)
        display = await linked(server, ChannelType.DISPLAY, PASSWORD, connection_id=sid)
        display_init(display, 0)
        (entry,) = server.context.sessions.sessions[sid].glz_dictionaries.values()
        assert entry.dictionary.window_pixels == 16 << 20
        assert entry.dictionary.capacity == 64 * 48
        assert entry.dictionary.fits(64, 48) and not entry.dictionary.fits(64, 49)
        # charged at the window (capped at 8 Mi pixels): the budget still counts sessions
        assert server.context.glz.used == entry.charge == 34_209_792
        server.context.source.replace_frame(np.zeros((96, 128, 4), dtype=np.uint8))
        assert entry.dictionary.capacity == 128 * 96  # follows the source's new size
        assert server.context.glz.used == entry.charge == 34_209_792
        await server.close()

    run(scenario())


def test_glz_dictionaries_are_bounded_per_session_and_freed_when_it_ends() -> None:
    async def scenario() -> None:
        server = await ready(make_server())
        main = await main_at(server)
        sid = init_session_id(main)
        session = server.context.sessions.sessions[sid]
        for glz_id in range(48):  # a new display channel, each with its own dictionary id
            display = await linked(
                server,
                ChannelType.DISPLAY,
                PASSWORD,
                connection_id=sid,
                peer=("127.0.0.7", 41000 + glz_id),
            )
            display_init(display, glz_id)
            assert list(session.glz_dictionaries) == [glz_id]  # the older one replaced
        (entry,) = session.glz_dictionaries.values()
        assert server.context.glz.used == entry.charge < 34 * MIB  # the window's share
        freed = weakref.ref(entry.dictionary)
        del entry
        gc.disable()  # freed by reference counting, not by the cycle collector
        try:
            main.transport.close()  # the session ends
            assert freed() is None
        finally:
            gc.enable()
        assert server.context.glz.used == 0
        await server.close()

    run(scenario())


def test_glz_memory_budget_is_shared_by_the_sessions() -> None:
    async def scenario() -> None:
        full = 34_209_792  # a GLZ dictionary at its 8 Mi-pixel cap (GlzDictionary.max_nbytes)
        server = await ready(big_server(glz_memory_budget=full + MIN_DICTIONARY_BYTES + MIB))
        encoders = []
        mains = []
        for i in range(3):
            main = await main_at(server, ("127.0.0.7", 42000 + i))
            sid = init_session_id(main)
            display = await linked(
                server,
                ChannelType.DISPLAY,
                PASSWORD,
                connection_id=sid,
                peer=("127.0.0.7", 43000 + i),
            )
            display_init(display, 0)
            handler = server.context.sessions.sessions[sid].channels[(2, 0)].handler
            encoders.append(handler.encoder)
            mains.append(main)
        sizes = [None if e.glz is None else e.glz.max_nbytes for e in encoders]
        assert sizes[0] == full
        assert sizes[1] is not None and MIN_DICTIONARY_BYTES <= sizes[1] < full  # what was left
        assert sizes[2] is None  # nothing left: this one gets LZ
        assert server.context.glz.used <= server.config.glz_memory_budget
        mains[0].transport.close()  # a session ends: its share comes back
        main = await main_at(server, ("127.0.0.7", 42009))
        sid = init_session_id(main)
        display = await linked(
            server, ChannelType.DISPLAY, PASSWORD, connection_id=sid, peer=("127.0.0.7", 43009)
        )
        display_init(display, 0)
        assert server.context.glz.used <= server.config.glz_memory_budget
        await server.close()

    run(scenario())
