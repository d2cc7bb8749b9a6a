"""State shared by the X clipboard thread's parts, and its owner side: answering requestors.

:class:`Serving` is the half of :class:`~spiceserver.x11_selection.SelectionThread` that acts
for a client that owns a selection: desktop programs' SelectionRequests are answered
(ICCCM 2.2, 2.6) with TARGETS, TIMESTAMP, or the client's data fetched through the
:class:`Bridge`, in one property or by INCR (ICCCM 2.7.2) above one X request.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from spiceserver.clipboard import ClipboardType, Fetch, Selection

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "TRANSFER_TIMEOUTS",
    "TYPE_TARGETS",
    "Bridge",
    "Conversion",
    "Grab",
    "Outgoing",
    "Pending",
    "Request",
    "SelState",
    "Serving",
    "wid",
]

logger = logging.getLogger("spiceserver.clipboard")

#: VDAgent type → X targets, preferred first when reading from a desktop owner; all of them
#: are offered when a client grabs with that type (``spice-vdagent:src/vdagent/x11-priv.h``
#: ``clipboard_format_templ``, plus TEXT and ``text/plain``, which spice-gtk also maps to text:
#: ``spice-gtk:src/spice-gtk-session.c`` ``atom2agent``).
TYPE_TARGETS: dict[ClipboardType, tuple[str, ...]] = {
    ClipboardType.UTF8_TEXT: (
        "UTF8_STRING",
        "text/plain;charset=utf-8",
        "text/plain;charset=UTF-8",
        "STRING",
        "TEXT",
        "text/plain",
    ),
    ClipboardType.PNG: ("image/png",),
    ClipboardType.BMP: ("image/bmp", "image/x-bmp", "image/x-MS-bmp", "image/x-win-bitmap"),
    ClipboardType.TIFF: ("image/tiff",),
    ClipboardType.JPG: ("image/jpeg",),
}
#: ICCCM caps a single property at the server's max request size; above this we use INCR
#: (``spice-vdagent:src/vdagent/x11.c`` ``max_prop_size``).
INCR_CHUNK_CAP = 262_144
#: SelectionRequests waiting on a client's data at once; more are refused at once.
MAX_SERVING = 32
#: INCR transfers to requestors at once; more are refused at once.
MAX_OUTGOING_INCR = 8
#: A whole transfer gets this many timeouts: a conversion, however steadily an INCR owner
#: trickles, and a client's fetch, which crosses the network (5 MB at 2 Mbit/s is 20 s).
TRANSFER_TIMEOUTS = 4
#: Slack on top of the fetch timeout the loop enforces, for the X thread's own deadline.
SERVE_SLACK = 1.0


class Bridge(Protocol):
    """What the X thread needs from its owner on the loop side."""

    max_bytes: int
    timeout: float

    def take_commands(self) -> list[tuple[Any, ...]]:
        """Commands queued by the loop since the last call (and the current grabs)."""

    def wanted(self) -> dict[Selection, tuple[int, Grab | None]]:
        """Per selection: (generation, the client's grab or None)."""

    def to_loop(self, fn: Callable[..., object], *args: object) -> None:
        """Call ``fn(*args)`` on the event loop."""

    def start_fetch(self, key: tuple[Selection, int, ClipboardType], fetch: Fetch) -> None:
        """Run ``fetch(type)`` on the loop; the result comes back as a ``fetched`` command."""

    def cap_hit(self, what: str, size: int) -> None:
        """Log (rate-limited) that ``what`` of ``size`` bytes is over the cap."""

    def warn(self, key: str, message: str, *args: object) -> None:
        """``logger.warning(message, *args)``, at most once per interval per ``key``."""

    def deliver_read(self, future: asyncio.Future[bytes | None], value: bytes | None) -> None:
        """On the loop: resolve a read() (no-op if it was cancelled)."""

    def desktop_grabbed(self, selection: Selection, types: tuple[ClipboardType, ...]) -> None:
        """On the loop: tell the listener."""

    def desktop_released(self, selection: Selection) -> None:
        """On the loop: tell the listener."""


@dataclass(frozen=True)
class Grab:
    """A client's grab of one selection, as the loop handed it over."""

    types: tuple[ClipboardType, ...]
    fetch: Fetch
    generation: int


@dataclass
class Conversion:
    """One ConvertSelection of ours in flight (TARGETS of a new owner, or a read())."""

    target: int
    prop: int
    deadline: float  # of the next step (the answer, the next INCR chunk)
    end: float  # of the whole conversion
    done: Callable[[bytes | list[int] | None, int], None]
    incr: bool = False
    ptype: int = 0
    buf: bytearray = field(default_factory=bytearray)


@dataclass
class Request:
    """A requestor's SelectionRequest, kept until answered."""

    requestor: Any  # Xlib Window
    selection: int
    target: int
    prop: int
    time: int


@dataclass
class Pending:
    """A request waiting on a client's data."""

    request: Request
    key: tuple[Selection, int, ClipboardType]
    target_name: str
    deadline: float


@dataclass
class Outgoing:
    """An INCR transfer to a requestor: the rest is written on each PropertyNotify Delete."""

    window: Any  # Xlib Window
    prop: int
    ptype: int
    data: memoryview
    deadline: float
    offset: int = 0


@dataclass
class SelState:
    """What the X thread knows of one selection."""

    selection: Selection
    atom: int
    applied: int = -1  # generation of the client grab last applied
    grab: Grab | None = None
    owned_time: int | None = None  # our ownership's server timestamp, while we own it
    owned_gen: int = -1  # the grab generation we took it for
    owner: int = 0  # the owner window as XFixes last reported it
    owner_gen: int = 0
    targets_wanted: bool = False
    targets: frozenset[int] | None = None  # the desktop owner's TARGETS, once known
    reported: bool = False  # the listener was told of a desktop grab not yet released
    active: Conversion | None = None
    reads: deque[tuple[ClipboardType, asyncio.Future[bytes | None]]] = field(default_factory=deque)
    #: The last fetch of the current grab: (grab generation, type, data or None).  A grab's
    #: data never changes, and a client that did not answer is not asked again for it.
    cache: tuple[int, ClipboardType, bytes | None] | None = None


class Serving:
    """Answers requestors for the selections a client owns (a mixin of the X thread)."""

    bridge: Bridge
    name: str
    win: Any  # our Xlib Window
    chunk: int
    a_targets: int
    a_timestamp: int
    a_incr: int
    a_utf8: int
    by_atom: dict[int, SelState]
    sels: dict[Selection, SelState]
    type_atoms: dict[ClipboardType, tuple[int, ...]]
    target_types: dict[int, tuple[str, ClipboardType]]
    serving: list[Pending]
    fetching: set[tuple[Selection, int, ClipboardType]]
    outgoing: dict[tuple[int, int], Outgoing]

    # ------------------------------------------------------------------ serving requestors

    def _on_request(self, ev: Any) -> None:
        s = self.by_atom.get(ev.selection)
        # An obsolete requestor may pass None as the property: use the target (ICCCM 2.2).
        req = Request(ev.requestor, ev.selection, ev.target, ev.property or ev.target, ev.time)
        grab = s.grab if s is not None and s.owned_time is not None else None
        if s is None or grab is None or wid(ev.owner) != self.win.id:
            self._notify(req, ok=False)
            return
        from Xlib import Xatom

        if ev.target == self.a_targets:
            atoms = [self.a_targets, self.a_timestamp]
            for ctype in grab.types:
                atoms.extend(self.type_atoms.get(ctype, ()))
            self._reply(req, Xatom.ATOM, 32, atoms)
            return
        if ev.target == self.a_timestamp:
            self._reply(req, Xatom.INTEGER, 32, [s.owned_time or 0])
            return
        # MULTIPLE is declined as a whole (ICCCM lets an owner refuse any target); we do not
        # list it in TARGETS, so requestors rarely try.
        known = self.target_types.get(ev.target)
        if known is None or known[1] not in grab.types:
            self._notify(req, ok=False)
            return
        target_name, ctype = known
        key = (s.selection, grab.generation, ctype)
        if s.cache is not None and s.cache[:2] == key[1:]:
            data = s.cache[2]
            if data is None:
                self._notify(req, ok=False)
            else:
                self._send_data(req, target_name, data)
            return
        if len(self.serving) >= MAX_SERVING:
            self.bridge.warn(
                "serving", "%s: too many X clipboard requests waiting; refusing one", self.name
            )
            self._notify(req, ok=False)
            return
        deadline = time.monotonic() + self.bridge.timeout * TRANSFER_TIMEOUTS + SERVE_SLACK
        self.serving.append(Pending(req, key, target_name, deadline))
        if key not in self.fetching:
            self.fetching.add(key)
            self.bridge.start_fetch(key, grab.fetch)

    def _fetched(self, key: tuple[Selection, int, ClipboardType], data: bytes | None) -> None:
        self.fetching.discard(key)
        s = self.sels[key[0]]
        if s.grab is not None and s.grab.generation == key[1]:
            s.cache = (key[1], key[2], data)
        waiting = [serve for serve in self.serving if serve.key == key]
        self.serving = [serve for serve in self.serving if serve.key != key]
        for serve in waiting:
            if data is None:
                self._notify(serve.request, ok=False)
            else:
                self._send_data(serve.request, serve.target_name, data)

    def _send_data(self, req: Request, target_name: str, data: bytes) -> None:
        from Xlib import Xatom

        if target_name == "STRING":  # ICCCM 2.6.2: STRING is ISO Latin-1
            data = data.decode("utf-8", "replace").encode("latin-1", "replace")
            ptype = Xatom.STRING
        elif target_name == "TEXT":  # the owner picks the encoding of TEXT
            ptype = self.a_utf8
        else:
            ptype = req.target
        self._reply(req, ptype, 8, data)

    def _reply(self, req: Request, ptype: int, fmt: int, data: bytes | list[int]) -> None:
        from Xlib import X

        window = req.requestor
        if isinstance(data, bytes) and len(data) > self.chunk:
            # ICCCM 2.7.2: announce INCR with a lower bound of the size, then one chunk per
            # deletion of the property by the requestor.
            key = (window.id, req.prop)
            if key not in self.outgoing and len(self.outgoing) >= MAX_OUTGOING_INCR:
                self.bridge.warn(
                    "incr", "%s: too many INCR transfers at once; refusing one", self.name
                )
                self._notify(req, ok=False)
                return
            logger.debug("sending %d bytes by INCR to window %#x", len(data), window.id)
            window.change_attributes(event_mask=X.PropertyChangeMask)
            window.change_property(req.prop, self.a_incr, 32, [len(data)])
            deadline = time.monotonic() + self.bridge.timeout
            self.outgoing[key] = Outgoing(window, req.prop, ptype, memoryview(data), deadline)
        else:
            window.change_property(req.prop, ptype, fmt, data)
        self._notify(req, ok=True)

    def _notify(self, req: Request, *, ok: bool) -> None:
        from Xlib import X
        from Xlib.protocol import event

        notify = event.SelectionNotify(
            time=req.time,
            requestor=req.requestor,
            selection=req.selection,
            target=req.target,
            property=req.prop if ok else X.NONE,
        )
        req.requestor.send_event(notify)

    def _outgoing_step(self, window: int, prop: int, state: int) -> None:
        from Xlib import X

        out = self.outgoing.get((window, prop))
        if out is None or state != X.PropertyDelete:
            return
        chunk = bytes(out.data[out.offset : out.offset + self.chunk])
        out.window.change_property(out.prop, out.ptype, 8, chunk)
        out.offset += len(chunk)
        out.deadline = time.monotonic() + self.bridge.timeout
        if not chunk:  # the zero-length write ends the transfer
            self._end_outgoing(window, prop)

    def _end_outgoing(self, window: int, prop: int) -> None:
        out = self.outgoing.pop((window, prop))
        if not any(w == window for w, _ in self.outgoing):
            out.window.change_attributes(event_mask=0)


def wid(window: Any) -> int:
    """A python-xlib window field as an id (python-xlib wraps even None as a Window)."""
    return int(getattr(window, "id", window) or 0)
