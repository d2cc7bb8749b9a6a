"""Watch display updates from outside: the longest gap between frames, in a process of its own.

    SPICE_GAPWATCH_PASSWORD=pw python -m tests.interop.gapwatch PORT [--clients 2]

Links ``--clients`` light clients to a server whose source is the animated pattern (main and
display, as :mod:`tests.interop.bench_clients` does: ACKs, PONGs, no decoding) and prints one
JSON line about every 100 ms: ``{"t": <time.monotonic()>, "gap_ms": ..., "frames": ...}``,
where ``gap_ms`` is the longest time any client went without a new frame (a DRAW_COPY of the
frame counter) during that interval, counting a gap still open at its end.  ``time.monotonic``
is the system's monotonic clock, so a benchmark in another process can line the lines up
with what it did.  Running apart from the hostile clients keeps their CPU out of the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time

from spiceserver.protocol.enums import ChannelType
from tests.interop.bench_clients import (
    DISPLAY_DRAW_COPY,
    DISPLAY_INIT,
    GLZ_WINDOW_PIXELS,
    MAIN_ATTACH_CHANNELS,
    PIXMAP_CACHE_PIXELS,
    ChannelClient,
)

PASSWORD_ENV = "SPICE_GAPWATCH_PASSWORD"
COUNTER_TOP_LEFT = (16, 16)


class WatchedDisplay(ChannelClient):
    """A display channel that notes when each new pattern frame arrives."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.last_frame = time.monotonic()
        self.longest = 0.0

    def _handle(self, type_: int, prefix: bytes) -> None:
        if type_ == DISPLAY_DRAW_COPY:
            _surface, top, left = struct.unpack("<Iii", prefix)
            if (left, top) == COUNTER_TOP_LEFT:
                now = time.monotonic()
                self.longest = max(self.longest, now - self.last_frame)
                self.last_frame = now
        super()._handle(type_, prefix)

    def take_longest(self) -> float:
        """The longest gap since the last call, a gap still open included."""
        now = time.monotonic()
        longest, self.longest = max(self.longest, now - self.last_frame), 0.0
        return longest


async def open_channel(
    port: int, factory: type[ChannelClient], kind: int, password: str, session: int = 0
) -> ChannelClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: factory(kind, session, password), "127.0.0.1", port
    )
    result = await asyncio.wait_for(client.linked, 60)
    if result:
        raise ConnectionError(f"link refused: SpiceLinkErr {result}")
    return client


async def watch(port: int, password: str, clients: int, interval: float) -> None:
    displays: list[WatchedDisplay] = []
    for _ in range(clients):
        main = await open_channel(port, ChannelClient, ChannelType.MAIN, password)
        session = await asyncio.wait_for(main.session_id, 30)
        main.send(MAIN_ATTACH_CHANNELS)
        display = await open_channel(port, WatchedDisplay, ChannelType.DISPLAY, password, session)
        display.send(
            DISPLAY_INIT, struct.pack("<BqBi", 1, PIXMAP_CACHE_PIXELS, 1, GLZ_WINDOW_PIXELS)
        )
        assert isinstance(display, WatchedDisplay)
        displays.append(display)
    for _ in range(100):  # the first full frames (bounded: 10 s)
        if all(d.frames >= 2 for d in displays):
            break
        await asyncio.sleep(0.1)
    for display in displays:
        display.take_longest()
    print(json.dumps({"event": "ready"}), flush=True)
    while True:
        await asyncio.sleep(interval)
        gap = max(display.take_longest() for display in displays)
        frames = sum(display.frames for display in displays)
        closed = sum(1 for display in displays if display.closed.done())
        line = {"t": round(time.monotonic(), 4), "gap_ms": round(1000 * gap, 1), "frames": frames}
        if closed:
            line["closed"] = closed
        print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        sys.exit(f"set {PASSWORD_ENV}")
    try:
        import uvloop

        uvloop.run(watch(args.port, password, args.clients, args.interval))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
