"""Reading the capture's X events: DAMAGE straight off the socket, the rest through python-xlib.

Every change on the screen reaches the capture as DamageNotify events, so reading them sits
on the path of every small change (X damage → client).  python-xlib's reading path is made
for many threads sharing one connection: a ``pending_events()`` call takes half a dozen
locks, a ``select()`` and a ``recv()``, runs its generic parser and an event queue, and
``next_event()`` takes the locks again.  On a CPU coming out of an idle spell (the caches
cold: a typed glyph's case) that cost 0.19 ms from the loop's wake-up to the first event
parsed (``bench_desktop --trace-hops``, hops between ``read`` and ``event``).

:class:`DirectDamage` reads the socket itself while python-xlib has nothing in flight (no
reply awaited, no bytes of its own buffered, no events queued): what arrives is then only
events, and a run of DamageNotify is parsed right here, 32 bytes each.  The first thing that
is not one (another event, an error, a reply, a part of a packet) is handed, with everything
after it, to python-xlib's own parser (``parse_response``), which queues it as if it had read
it; the caller then takes python-xlib's path as before.  Nothing is read twice or skipped:
python-xlib's state is checked before each read, and the bytes it gets continue exactly where
its own reading would have.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spiceserver.sources.base import Rect

if TYPE_CHECKING:
    from Xlib.display import Display

__all__ = ["DirectDamage", "LeanDamageNotify", "use_lean_damage_events"]

logger = logging.getLogger("spiceserver.desktop")

#: DamageNotify (``xorgproto:damageproto.h`` xDamageNotifyEvent): type, level, sequence,
#: drawable, damage, timestamp, area (x, y, width, height), geometry; in the client's byte
#: order, which python-xlib sets to the host's.
_DAMAGE_NOTIFY = struct.Struct("=BBHIIIhhHHhhHH")
#: Its area: x, y, width, height at byte 16.
_DAMAGE_AREA = struct.Struct("=hhHH")
_AREA_OFFSET = 16
#: Every X event is 32 bytes (but GenericEvent, which says how many more follow).
_EVENT_BYTES = 32
#: python-xlib's state that must be empty for the socket to carry events only (and nothing
#: of python-xlib's half read), checked before each direct read (DirectDamage.idle), and
#: what else of its connection is used.
_INTERNALS = (
    "data_recv", "event_queue", "sent_requests", "recv_packet_len", "recv_active",
    "send_active", "parse_response", "close_internal",
)  # fmt: skip


class LeanDamageNotify:
    """A DamageNotify event parsed with one ``struct`` call, in place of python-xlib's
    generic ``rq`` parser: the attributes the capture and python-xlib itself read (the
    drawable and damage as plain resource ids, which nothing here looks up).

    For the events python-xlib still parses (those that arrive behind another event or a
    reply: :class:`DirectDamage`).  python-xlib's parser took 13 µs of a warm CPU and 128 µs
    of a cold one; this takes 1 µs and 45 µs (most of that is the wake-up itself).
    """

    __slots__ = (
        "area",
        "damage",
        "drawable",
        "drawable_geometry",
        "level",
        "send_event",
        "sequence_number",
        "timestamp",
        "type",
    )

    def __init__(self, display: Any = None, binarydata: bytes = b"", **_: Any) -> None:
        (
            code, self.level, self.sequence_number, self.drawable, self.damage,
            self.timestamp, ax, ay, aw, ah, gx, gy, gw, gh,
        ) = _DAMAGE_NOTIFY.unpack_from(binarydata)  # fmt: skip
        self.type = code & 0x7F  # the top bit: sent with SendEvent (python-xlib's split)
        self.send_event = bool(code & 0x80)
        # python-xlib's boxes have these four attributes too
        self.area = Rect(ax, ay, aw, ah)
        self.drawable_geometry = Rect(gx, gy, gw, gh)


def use_lean_damage_events(display: Display, event_type: int) -> bool:
    """Have ``display`` parse DamageNotify events as :class:`LeanDamageNotify`; False (and
    python-xlib's own parser kept) when its event table is not what this was written for."""
    from Xlib.ext import damage

    classes = getattr(getattr(display, "display", None), "event_classes", None)
    # python-xlib registers a copy of the class (extension_add_event sets its code), whose
    # field list is the original's own object.
    table = classes if isinstance(classes, dict) else {}
    if getattr(table.get(event_type), "_fields", None) is not getattr(
        damage.DamageNotify, "_fields", ()
    ):
        logger.debug("python-xlib's event table is not as expected: its DamageNotify parser")
        return False
    table[event_type] = LeanDamageNotify
    return True


class DirectDamage:
    """DamageNotify events read off a python-xlib connection's socket (see the module).

    One thread at a time, the one that reads the connection's events.  Use :meth:`create`.
    """

    def __init__(self, protocol: Any, event_type: int, read_bytes: int) -> None:
        self._protocol = protocol
        self._socket: socket.socket = protocol.socket
        self._event_type = event_type
        self._read_bytes = read_bytes

    @classmethod
    def create(cls, display: Display, event_type: int, read_bytes: int) -> DirectDamage | None:
        """For ``display``'s DamageNotify ``event_type``; None (python-xlib reads everything)
        when its connection is not the python-xlib this was written for."""
        protocol = getattr(display, "display", None)
        if protocol is None or not all(hasattr(protocol, name) for name in _INTERNALS):
            logger.debug("python-xlib's connection is not as expected: it reads every event")
            return None
        if not isinstance(getattr(protocol, "socket", None), socket.socket):
            return None
        return cls(protocol, event_type, read_bytes)

    def idle(self) -> bool:
        """Whether python-xlib has nothing in flight: the socket holds events only."""
        p = self._protocol
        # (data_recv is python-xlib's bytesview: its length, not its truth, says it is empty;
        # plain attribute tests: this runs on every read, on the path of each small change)
        return not (
            len(p.data_recv)
            or p.event_queue
            or p.sent_requests
            or p.recv_packet_len
            or p.recv_active
            or p.send_active
        )

    def queued(self) -> bool:
        """Whether python-xlib holds parsed events (no I/O)."""
        return bool(self._protocol.event_queue)

    def read(self, damaged: Callable[[Rect], None]) -> tuple[int, bool, bool]:
        """One read of the socket: ``damaged`` for each DamageNotify in it; their count,
        whether python-xlib must read now (it had something in flight, or it got what came
        behind the damage: queued by its parser, or waiting for the rest of a packet), and
        whether the socket was emptied (a short read: no second read to learn so, a system
        call that costs tens of microseconds of a cold CPU)."""
        if not self.idle():
            return 0, True, False
        try:
            data = self._socket.recv(self._read_bytes, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0, False, True
        except OSError:
            return 0, True, False  # python-xlib's next read meets the error, reports it
        protocol = self._protocol
        if not data:  # the X server closed the connection: as python-xlib says so
            protocol.close_internal("server")
            raise protocol.socket_error
        event_type, area, count = self._event_type, _DAMAGE_AREA.unpack_from, 0
        end = len(data) - len(data) % _EVENT_BYTES
        at = 0
        while at < end and data[at] & 0x7F == event_type:
            damaged(Rect(*area(data, at + _AREA_OFFSET)))
            at += _EVENT_BYTES
            count += 1
        if at < len(data):  # not damage, or part of a packet: python-xlib's from here on
            protocol.data_recv = data[at:]
            protocol.parse_response(None)
            return count, True, False
        return count, False, len(data) < self._read_bytes
