"""Run ``spiceserver`` with a time stamp at each hop of a desktop update (benchmark hook).

    python -m tests.interop.hoptrace OUT.json serve --source desktop:N ...

Wraps, without touching the server's code, the places an X change passes on its way to the
socket and notes ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux, as the harness's
``time.monotonic()`` and spice-gtk's event times) at each:

* ``event``: the capture parsed a damage event (the first since its last grab: after the
  socket read that brought it, when it came straight off the socket);
* ``grab``: the grab of the damaged boxes starts (on the capture thread, or on the loop for
  small ones: x11_loop.py); inside it ``read``/``read-done`` (X events read),
  ``shot``/``shot-done`` (XShmGetImage) and ``publish``/``published`` (the hand-over, which
  on the loop includes all that follows);
* ``applied``: the event loop applies the update (frame written, listeners told);
* ``update`` / ``encode`` / ``encoded``: the display task (or the damage callback,
  ``send-now``) starts the update, calls the encoder and has the images;
* ``written``: the update is written to the transport (the kernel has the bytes).

At exit (SIGTERM) writes ``[[name, seconds], ...]`` to OUT.json.  ``bench_desktop
--trace-hops`` matches them to its latency samples.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import runpy
import sys
import time
from pathlib import Path
from typing import Any

STAMPS: list[tuple[str, float]] = []
#: Bound: a long run keeps the latest stamps only.
MAX_STAMPS = 200_000


def note(name: str) -> None:
    if len(STAMPS) < MAX_STAMPS:
        STAMPS.append((name, time.perf_counter()))


def around(owner: Any, name: str, before: str | None, after: str | None) -> None:
    """Wrap the method ``owner.name`` with a stamp before and after it."""
    method = getattr(owner, name)

    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        if before:
            note(before)
        try:
            return method(self, *args, **kwargs)
        finally:
            if after:
                note(after)

    setattr(owner, name, traced)


def install() -> None:
    from spiceserver.server.channels.display import update_loop
    from spiceserver.sources import desktop, x11_events

    capture = desktop._Capture
    on_event = capture._on_event

    def traced_on_event(self: Any, event: Any) -> None:
        if (event.type & 0x7F) == self.damage_event and not self.pending:
            note("event")
        on_event(self, event)

    capture._on_event = traced_on_event  # type: ignore[method-assign]
    # Damage read straight off the socket (x11_events.py) reaches ``pending`` directly: its
    # callback is that list's append.
    direct_read = x11_events.DirectDamage.read

    def traced_direct_read(self: Any, damaged: Any) -> tuple[int, bool, bool]:
        pending = getattr(damaged, "__self__", None)
        was_empty = not pending
        result = direct_read(self, damaged)
        if was_empty and pending:
            note("event")
        return result

    x11_events.DirectDamage.read = traced_direct_read  # type: ignore[method-assign]
    # The grab starts with its plan (on the capture thread, or on the loop: x11_loop.py).
    around(capture, "grab_plan", "grab", None)
    around(capture, "_grab", "shot", "shot-done")
    around(capture, "_read_events", "read", "read-done")
    around(desktop.DesktopSource, "_publish", "publish", "published")
    around(desktop.DesktopSource, "_apply", "applied", None)  # on the loop, either way
    around(update_loop.DisplayHandler, "_update_sent", None, "written")
    # The update task's start, or an update sent right from the damage callback
    # (DisplayHandler._send_now): both begin here.
    around(update_loop.DisplayHandler, "_begin_update", "update", None)
    around(update_loop.DisplayHandler, "_send_now", "send-now", None)  # not a hop: counted
    # ... or the small update sent in one go (DisplayHandler._send_small).
    around(update_loop.DisplayHandler, "_send_small", "update", None)
    # The task's encode (on worker threads: the images inside are stamped too, later), and
    # the encode of each image on the loop (_send_now's, _send_small's).
    update_loop.encode_bands = traced_encode(update_loop.encode_bands)
    from spiceserver.server.codecs import ImageEncoder

    around(ImageEncoder, "encode", "encode", "encoded")
    around(ImageEncoder, "encode_small", "encode", "encoded")


def traced_encode(encode: Any) -> Any:
    """``encode`` (a coroutine function or a plain one) with a stamp before and after."""
    if inspect.iscoroutinefunction(encode):

        @functools.wraps(encode)
        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            note("encode")
            result = await encode(*args, **kwargs)
            note("encoded")
            return result

        return traced_async

    @functools.wraps(encode)
    def traced(*args: Any, **kwargs: Any) -> Any:
        note("encode")
        result = encode(*args, **kwargs)
        note("encoded")
        return result

    return traced


def main() -> None:
    out = Path(sys.argv[1])
    atexit.register(lambda: out.write_text(json.dumps(STAMPS)))
    install()
    sys.argv = ["spiceserver", *sys.argv[2:]]
    runpy.run_module("spiceserver", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
