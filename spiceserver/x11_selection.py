"""The X thread of :class:`~spiceserver.x11_clipboard.X11Clipboard`: the selection protocol.

Everything here runs on one thread that owns one python-xlib connection (python-xlib blocks,
and a connection must stay on one thread).  It talks to the event loop only through the
:class:`Bridge` it is given: commands come in through :meth:`Bridge.take_commands` (the loop
wakes the thread through a pipe), results and listener calls go out through
:meth:`Bridge.to_loop`.  Nothing here waits for the loop or for another X client: every
exchange is a state with a deadline, checked by the one ``select()`` loop, so an owner that
never answers or a requestor that stops reading costs a timeout and nothing else.

The conventions followed are the ICCCM's (section 2, "Peer-to-Peer Communication by Means of
Selections") as spice-vdagent implements them (``spice-vdagent:src/vdagent/x11.c``): targets
mapped to VDAgent types by its table (``x11-priv.h``), INCR above
``min(max request size - 100, 262144)`` bytes, and owner changes followed with XFixes.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from spiceserver.clipboard import ClipboardType, Fetch, Selection

if TYPE_CHECKING:
    import asyncio

    from Xlib.display import Display

__all__ = ["TYPE_TARGETS", "Bridge", "Grab", "SelectionThread"]

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
#: The selections bridged (spice-gtk's session handles these two; SECONDARY is unused).
SELECTIONS = (Selection.CLIPBOARD, Selection.PRIMARY)
#: ICCCM caps a single property at the server's max request size; above this we use INCR
#: (``spice-vdagent:src/vdagent/x11.c`` ``max_prop_size``).
INCR_CHUNK_CAP = 262_144
#: SelectionRequests waiting on a client's data at once; more are refused at once.
MAX_SERVING = 32
#: INCR transfers to requestors at once; more are refused at once.
MAX_OUTGOING_INCR = 16
#: Properties on our window that receive conversions.  Each selection converts one target at
#: a time, but a property an owner may still write into (it answered after our timeout, or we
#: stopped an INCR transfer over the cap) is left alone for a while before reuse.
PROPERTY_POOL = 8
#: Slack on top of the fetch timeout the loop enforces, for the X thread's own deadline.
SERVE_SLACK = 1.0
#: The select() timeout when nothing is due: the thread wakes at least this often.
IDLE_WAKE = 1.0


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
class _Conversion:
    """One ConvertSelection of ours in flight (TARGETS of a new owner, or a read())."""

    target: int
    prop: int
    deadline: float
    done: Callable[[bytes | list[int] | None, int], None]
    incr: bool = False
    ptype: int = 0
    buf: bytearray = field(default_factory=bytearray)


@dataclass
class _Request:
    """A requestor's SelectionRequest, kept until answered."""

    requestor: Any  # Xlib Window
    selection: int
    target: int
    prop: int
    time: int


@dataclass
class _Serving:
    request: _Request
    key: tuple[Selection, int, ClipboardType]
    target_name: str
    deadline: float


@dataclass
class _Outgoing:
    """An INCR transfer to a requestor: the rest is written on each PropertyNotify Delete."""

    window: Any  # Xlib Window
    prop: int
    ptype: int
    data: memoryview
    deadline: float
    offset: int = 0


@dataclass
class _SelState:
    """What the X thread knows of one selection."""

    selection: Selection
    atom: int
    applied: int = -1  # generation of the client grab last applied
    grab: Grab | None = None
    owned_time: int | None = None  # our ownership's server timestamp, while we own it
    owner: int = 0  # the owner window as XFixes last reported it
    owner_gen: int = 0
    targets_wanted: bool = False
    targets: frozenset[int] | None = None  # the desktop owner's TARGETS, once known
    reported: bool = False  # the listener was told of a desktop grab not yet released
    active: _Conversion | None = None
    reads: deque[tuple[ClipboardType, asyncio.Future[bytes | None]]] = field(default_factory=deque)
    #: The last fetch of the current grab: (grab generation, type, data or None).  A grab's
    #: data never changes, and a client that did not answer is not asked again for it.
    cache: tuple[int, ClipboardType, bytes | None] | None = None


class SelectionThread:
    """The X side; construct, then :meth:`run` on the thread, which returns when stopped."""

    def __init__(self, bridge: Bridge, display: Display, wake_fd: int, name: str) -> None:
        from Xlib import X, Xatom

        self.bridge = bridge
        self.d = display
        self.wake_fd = wake_fd
        self.name = name
        self.stopping = False
        display.set_error_handler(self._x_error)
        self.root = display.screen().root
        # Unmapped and InputOnly: never drawn, never focused; PropertyChangeMask for the
        # timestamp trick and INCR reception (ICCCM 2.4, 2.7.2).
        self.win = self.root.create_window(
            -10,
            -10,
            1,
            1,
            0,
            0,
            window_class=X.InputOnly,
            visual=X.CopyFromParent,
            event_mask=X.PropertyChangeMask,
        )
        intern = display.intern_atom
        self.a_targets = intern("TARGETS")
        self.a_timestamp = intern("TIMESTAMP")
        self.a_multiple = intern("MULTIPLE")
        self.a_incr = intern("INCR")
        self.a_utf8 = intern("UTF8_STRING")
        self.a_compound = intern("COMPOUND_TEXT")
        self.a_stamp = intern("SPICE_TIMESTAMP")
        #: X target atom → (its name, its VDAgent type).
        self.target_types: dict[int, tuple[str, ClipboardType]] = {}
        #: VDAgent type → its target atoms, preferred first.
        self.type_atoms: dict[ClipboardType, tuple[int, ...]] = {}
        for ctype, names in TYPE_TARGETS.items():
            atoms = tuple(Xatom.STRING if n == "STRING" else intern(n) for n in names)
            self.type_atoms[ctype] = atoms
            for atom, target_name in zip(atoms, names, strict=True):
                self.target_types[atom] = (target_name, ctype)
        self.sels = {
            Selection.CLIPBOARD: _SelState(Selection.CLIPBOARD, intern("CLIPBOARD")),
            Selection.PRIMARY: _SelState(Selection.PRIMARY, Xatom.PRIMARY),
        }
        self.by_atom = {s.atom: s for s in self.sels.values()}
        self.free_props: deque[int] = deque(
            intern(f"SPICE_SELECTION_{i}") for i in range(PROPERTY_POOL)
        )
        self.tainted: dict[int, float] = {}
        self.stamp_pending = False
        self.serving: list[_Serving] = []
        self.fetching: set[tuple[Selection, int, ClipboardType]] = set()
        self.outgoing: dict[tuple[int, int], _Outgoing] = {}
        # The largest property we write at once (python-xlib has no BIG-REQUESTS, so the core
        # limit applies: max_request_length is in 4-byte units).
        self.chunk = min(display.display.info.max_request_length * 4 - 100, INCR_CHUNK_CAP)
        self.handlers: dict[int, Callable[[Any], None]] = {}
        self.xfixes = False

    # ------------------------------------------------------------------ setup and main loop

    def setup(self) -> None:
        from Xlib import X
        from Xlib.ext import xfixes

        d = self.d
        self.handlers = {
            X.SelectionRequest: self._on_request,
            X.SelectionNotify: self._on_notify,
            X.SelectionClear: self._on_clear,
            X.PropertyNotify: self._on_property,
        }
        if d.has_extension("XFIXES"):
            d.xfixes_query_version()
            mask = (
                xfixes.XFixesSetSelectionOwnerNotifyMask
                | xfixes.XFixesSelectionWindowDestroyNotifyMask
                | xfixes.XFixesSelectionClientCloseNotifyMask
            )
            for s in self.sels.values():
                # A display method in python-xlib 0.33, not a window one.
                d.xfixes_select_selection_input(self.root, s.atom, mask)
            # The three selection events share one code (told apart by sub_code).
            code = d.query_extension("XFIXES").first_event + xfixes.XFixesSelectionNotify
            self.handlers[code] = self._on_owner
            self.xfixes = True
        else:
            logger.warning(
                "%s: no XFIXES extension: copies made on the desktop do not reach clients",
                self.name,
            )
        for s in self.sels.values():
            s.owner = _wid(d.get_selection_owner(s.atom))
            s.targets_wanted = s.owner != 0
        d.sync()

    def run(self) -> None:
        """The thread's body.  Returns when stopped or when the connection is lost."""
        from Xlib import error as xerror

        lost = False
        try:
            self.setup()
            self._loop()
        except (xerror.ConnectionClosedError, OSError) as exc:
            lost = True
            logger.warning(
                "lost the X connection to %s (%s): the clipboard bridge stops", self.name, exc
            )
        except Exception:
            lost = True
            logger.exception("the X clipboard bridge of %s stopped", self.name)
        finally:
            self._shutdown(connected=not lost)

    def _loop(self) -> None:
        d = self.d
        xfd = d.fileno()
        while True:
            self._commands()
            if self.stopping:
                return
            while d.pending_events():
                self._dispatch(d.next_event())
            now = time.monotonic()
            self._expire(now)
            self._schedule(now)
            d.flush()
            if d.pending_events():
                continue
            wait = max(0.0, min(self._next_deadline(now), now + IDLE_WAKE) - now)
            ready, _, _ = select.select([xfd, self.wake_fd], [], [], wait)
            if self.wake_fd in ready:
                _drain(self.wake_fd)

    def _dispatch(self, ev: Any) -> None:
        from Xlib import error as xerror

        # By code, not class: python-xlib clones extension event classes per display.
        handler = self.handlers.get(ev.type & 0x7F)  # the top bit flags a SendEvent
        if handler is None:
            return
        try:
            handler(ev)
        except xerror.XError as exc:  # a requestor's window vanished mid-answer, say
            logger.debug("X error while handling %s: %s", type(ev).__name__, exc)

    def _x_error(self, err: Any, request: Any) -> None:
        # Asynchronous errors: mostly BadWindow from requestors that went away.
        logger.debug("X error: %s", err)

    def _shutdown(self, connected: bool) -> None:
        from Xlib import X
        from Xlib.protocol import request

        for s in self.sels.values():
            if s.active is not None:
                s.active.done(None, 0)
                s.active = None
            while s.reads:
                self.bridge.to_loop(self.bridge.deliver_read, s.reads.popleft()[1], None)
            if s.reported and not connected:
                s.reported = False
                self.bridge.to_loop(self.bridge.desktop_released, s.selection)
        for command in self.bridge.take_commands():
            if command[0] == "read":
                self.bridge.to_loop(self.bridge.deliver_read, command[3], None)
        if connected:
            try:
                for serve in self.serving:
                    self._notify(serve.request, ok=False)
                for s in self.sels.values():
                    if s.owned_time is not None:
                        request.SetSelectionOwner(
                            display=self.d.display,
                            window=X.NONE,
                            selection=s.atom,
                            time=s.owned_time,
                        )
                self.win.destroy()
                self.d.sync()
            except Exception:
                logger.debug("giving up the selections failed", exc_info=True)
        self.serving.clear()
        self.outgoing.clear()
        try:
            self.d.close()
        except Exception:
            logger.debug("closing the X connection failed", exc_info=True)

    # ------------------------------------------------------------------ commands from the loop

    def _commands(self) -> None:
        for command in self.bridge.take_commands():
            kind = command[0]
            if kind == "stop":
                self.stopping = True
            elif kind == "read":
                _, selection, ctype, future = command
                self.sels[selection].reads.append((ctype, future))
            elif kind == "fetched":
                self._fetched(command[1], command[2])
        for selection, (generation, grab) in self.bridge.wanted().items():
            s = self.sels[selection]
            if generation != s.applied:
                s.applied = generation
                self._apply_grab(s, grab)

    def _apply_grab(self, s: _SelState, grab: Grab | None) -> None:
        from Xlib import X
        from Xlib.protocol import request

        s.grab = grab
        s.cache = None
        if grab is not None:
            if s.owned_time is None:
                self._ask_timestamp()
            return
        if s.owned_time is not None:
            # Not CurrentTime: the time we took it with, so a newer owner is never dislodged.
            request.SetSelectionOwner(
                display=self.d.display, window=X.NONE, selection=s.atom, time=s.owned_time
            )
            s.owned_time = None

    def _ask_timestamp(self) -> None:
        """SetSelectionOwner wants a real server time (ICCCM 2.1): a zero-length append to a
        property of ours raises a PropertyNotify that carries one."""
        from Xlib import X, Xatom

        if not self.stamp_pending:
            self.stamp_pending = True
            self.win.change_property(self.a_stamp, Xatom.INTEGER, 8, b"", mode=X.PropModeAppend)

    def _own(self, timestamp: int) -> None:
        for s in self.sels.values():
            if s.grab is None or s.owned_time is not None:
                continue
            self.win.set_selection_owner(s.atom, timestamp)
            if _wid(self.d.get_selection_owner(s.atom)) == self.win.id:
                s.owned_time = timestamp
            else:
                logger.warning("%s: could not take the X %s selection", self.name, s.selection.name)

    # ------------------------------------------------------------------ events

    def _on_property(self, ev: Any) -> None:
        from Xlib import X

        window = _wid(ev.window)
        if window != self.win.id:
            self._outgoing_step(window, ev.atom, ev.state)
            return
        if ev.state != X.PropertyNewValue:
            return
        if ev.atom == self.a_stamp and self.stamp_pending:
            self.stamp_pending = False
            self._own(ev.time)
            return
        if ev.atom in self.tainted:  # a late owner still writing: keep it in quarantine
            self.tainted[ev.atom] = time.monotonic() + 2 * self.bridge.timeout
            return
        for s in self.sels.values():
            conv = s.active
            if conv is not None and conv.incr and conv.prop == ev.atom:
                self._incr_chunk(s, conv)
                return

    def _on_clear(self, ev: Any) -> None:
        s = self.by_atom.get(ev.atom)
        if s is not None and _wid(ev.window) == self.win.id:
            s.owned_time = None  # another program took it; XFixes tells us who

    def _on_owner(self, ev: Any) -> None:
        from Xlib.ext import xfixes

        s = self.by_atom.get(ev.selection)
        if s is None:
            return
        set_owner = ev.sub_code == xfixes.XFixesSetSelectionOwnerNotify
        owner = _wid(ev.owner) if set_owner else 0
        logger.debug(
            "X %s: owner now %#x (XFixes subcode %d)", s.selection.name, owner, ev.sub_code
        )
        s.owner = owner
        s.owner_gen += 1
        s.targets = None
        s.targets_wanted = False
        if owner == self.win.id:
            # Our own SetSelectionOwner: the server already knows the client grabbed.
            s.reported = False
            return
        if owner == 0:
            # Released, or its window or client went away; after our own release, the
            # listener had no desktop grab to withdraw.
            self._report(s, ())
            return
        s.targets_wanted = True

    # ------------------------------------------------------------------ serving requestors

    def _on_request(self, ev: Any) -> None:
        s = self.by_atom.get(ev.selection)
        # An obsolete requestor may pass None as the property: use the target (ICCCM 2.2).
        req = _Request(ev.requestor, ev.selection, ev.target, ev.property or ev.target, ev.time)
        grab = s.grab if s is not None and s.owned_time is not None else None
        if s is None or grab is None or _wid(ev.owner) != self.win.id:
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
            logger.warning("%s: too many X clipboard requests waiting; refusing one", self.name)
            self._notify(req, ok=False)
            return
        deadline = time.monotonic() + self.bridge.timeout + SERVE_SLACK
        self.serving.append(_Serving(req, key, target_name, deadline))
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

    def _send_data(self, req: _Request, target_name: str, data: bytes) -> None:
        from Xlib import Xatom

        if target_name == "STRING":  # ICCCM 2.6.2: STRING is ISO Latin-1
            data = data.decode("utf-8", "replace").encode("latin-1", "replace")
            ptype = Xatom.STRING
        elif target_name == "TEXT":  # the owner picks the encoding of TEXT
            ptype = self.a_utf8
        else:
            ptype = req.target
        self._reply(req, ptype, 8, data)

    def _reply(self, req: _Request, ptype: int, fmt: int, data: bytes | list[int]) -> None:
        from Xlib import X

        window = req.requestor
        if isinstance(data, bytes) and len(data) > self.chunk:
            # ICCCM 2.7.2: announce INCR with a lower bound of the size, then one chunk per
            # deletion of the property by the requestor.
            key = (window.id, req.prop)
            if key not in self.outgoing and len(self.outgoing) >= MAX_OUTGOING_INCR:
                logger.warning("%s: too many INCR transfers at once; refusing one", self.name)
                self._notify(req, ok=False)
                return
            logger.debug("sending %d bytes by INCR to window %#x", len(data), window.id)
            window.change_attributes(event_mask=X.PropertyChangeMask)
            window.change_property(req.prop, self.a_incr, 32, [len(data)])
            deadline = time.monotonic() + self.bridge.timeout
            self.outgoing[key] = _Outgoing(window, req.prop, ptype, memoryview(data), deadline)
        else:
            window.change_property(req.prop, ptype, fmt, data)
        self._notify(req, ok=True)

    def _notify(self, req: _Request, *, ok: bool) -> None:
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

    # ------------------------------------------------------------------ converting (reading)

    def _schedule(self, now: float) -> None:
        """Start the next conversion of each idle selection: a new owner's TARGETS first."""
        for s in self.sels.values():
            if s.active is not None:
                continue
            if s.targets_wanted:
                s.targets_wanted = False
                self._convert(
                    s, self.a_targets, now, functools.partial(self._targets, s, s.owner_gen)
                )
            elif s.reads:
                ctype, future = s.reads.popleft()
                self._start_read(s, ctype, future, now)

    def _start_read(
        self,
        s: _SelState,
        ctype: ClipboardType,
        future: asyncio.Future[bytes | None],
        now: float,
    ) -> None:
        def done(value: bytes | list[int] | None, ptype: int) -> None:
            data = self._decode(ctype, value, ptype)
            self.bridge.to_loop(self.bridge.deliver_read, future, data)

        candidates = self.type_atoms.get(ctype, ())
        if s.targets is not None:
            candidates = tuple(a for a in candidates if a in s.targets)
        if s.owned_time is not None or (self.xfixes and s.owner == 0) or not candidates:
            # We own it (the data is a client's, not the desktop's), nobody does, or the
            # owner does not offer that type.
            done(None, 0)
            return
        self._convert(s, candidates[0], now, done)

    def _convert(
        self,
        s: _SelState,
        target: int,
        now: float,
        done: Callable[[bytes | list[int] | None, int], None],
    ) -> None:
        from Xlib import X

        prop = self._take_prop()
        if prop is None:
            logger.warning("%s: no free property for a conversion; giving up", self.name)
            done(None, 0)
            return
        self.win.convert_selection(s.atom, target, prop, X.CurrentTime)
        s.active = _Conversion(target, prop, now + self.bridge.timeout, done)

    def _finish(
        self, s: _SelState, value: bytes | list[int] | None, ptype: int, taint: bool = False
    ) -> None:
        conv = s.active
        assert conv is not None
        s.active = None
        if taint:
            self.tainted[conv.prop] = time.monotonic() + 2 * self.bridge.timeout
        else:
            self.free_props.append(conv.prop)
        conv.done(value, ptype)

    def _on_notify(self, ev: Any) -> None:
        from Xlib import X

        s = self.by_atom.get(ev.selection)
        if s is None or _wid(ev.requestor) != self.win.id:
            return
        conv = s.active
        if conv is None or ev.target != conv.target or ev.property not in (X.NONE, conv.prop):
            return  # an answer to a conversion that already timed out
        if ev.property == X.NONE:
            self._finish(s, None, 0)
            return
        head = self.win.get_property(conv.prop, X.AnyPropertyType, 0, 1)
        if head is None:
            self._finish(s, None, 0)
            return
        cap = self.bridge.max_bytes
        if head.property_type == self.a_incr:
            size = int(head.value[0]) if len(head.value) else 0
            if size > cap:
                self.bridge.cap_hit(f"X {s.selection.name} data (INCR)", size)
                self._finish(s, None, 0, taint=True)  # not deleted: the owner never starts
                return
            logger.debug("X %s: receiving %d+ bytes by INCR", s.selection.name, size)
            conv.incr = True
            conv.deadline = time.monotonic() + self.bridge.timeout
            self.win.delete_property(conv.prop)  # starts the transfer (ICCCM 2.7.2)
            return
        size = len(head.value) * (head.format // 8) + head.bytes_after
        if size > cap:
            self.win.delete_property(conv.prop)
            self.bridge.cap_hit(f"X {s.selection.name} data", size)
            self._finish(s, None, 0)
            return
        full = self.win.get_property(conv.prop, X.AnyPropertyType, 0, (size + 3) // 4, True)
        if full is None:
            self._finish(s, None, 0)
            return
        self._finish(s, _value(full), full.property_type)

    def _incr_chunk(self, s: _SelState, conv: _Conversion) -> None:
        from Xlib import X

        room = self.bridge.max_bytes - len(conv.buf)
        # Deleting the property (here, with the read) asks the owner for the next chunk; a
        # reply that does not fit leaves it in place (bytes_after > 0): the owner stalls.
        part = self.win.get_property(conv.prop, X.AnyPropertyType, 0, room // 4 + 1, True)
        if part is None:
            return
        value = _value(part)
        if isinstance(value, list):  # INCR of 16/32-bit items: not a clipboard type of ours
            self._finish(s, None, 0, taint=True)
            return
        if part.bytes_after or len(value) > room:
            self.bridge.cap_hit(f"X {s.selection.name} data (INCR)", len(conv.buf) + len(value))
            self._finish(s, None, 0, taint=True)
            return
        if not value:
            self._finish(s, bytes(conv.buf), conv.ptype)
            return
        conv.ptype = part.property_type
        conv.buf += value
        conv.deadline = time.monotonic() + self.bridge.timeout

    def _targets(
        self, s: _SelState, generation: int, value: bytes | list[int] | None, _ptype: int
    ) -> None:
        if generation != s.owner_gen:
            return  # the owner changed meanwhile; its successor's TARGETS is asked next
        if not isinstance(value, list):
            self._report(s, ())
            return
        logger.debug("X %s: TARGETS %s", s.selection.name, value)
        s.targets = frozenset(value)
        types = tuple(
            ctype
            for ctype, atoms in self.type_atoms.items()
            if any(atom in s.targets for atom in atoms)
        )
        self._report(s, types)

    def _report(self, s: _SelState, types: tuple[ClipboardType, ...]) -> None:
        if types:
            s.reported = True
            self.bridge.to_loop(self.bridge.desktop_grabbed, s.selection, types)
        elif s.reported:
            s.reported = False
            self.bridge.to_loop(self.bridge.desktop_released, s.selection)

    def _decode(
        self, ctype: ClipboardType, value: bytes | list[int] | None, ptype: int
    ) -> bytes | None:
        """Text as UTF-8 whatever the owner sent; other types as they came."""
        from Xlib import Xatom

        if not isinstance(value, bytes):
            return None
        if ctype != ClipboardType.UTF8_TEXT:
            return value
        if ptype == Xatom.STRING:
            return value.decode("latin-1").encode("utf-8")
        if ptype == self.a_compound:  # only its ASCII subset is safe without a converter
            return value if value.isascii() else None
        return value

    # ------------------------------------------------------------------ properties and time

    def _take_prop(self) -> int | None:
        if not self.free_props:
            return None
        return self.free_props.popleft()

    def _expire(self, now: float) -> None:
        for s in self.sels.values():
            conv = s.active
            if conv is not None and now >= conv.deadline:
                logger.warning(
                    "%s: the program that owns the X %s selection did not answer within %.1f s",
                    self.name,
                    s.selection.name,
                    self.bridge.timeout,
                )
                self._finish(s, None, 0, taint=True)
        late = [serve for serve in self.serving if now >= serve.deadline]
        if late:
            self.serving = [serve for serve in self.serving if now < serve.deadline]
            for serve in late:
                self._notify(serve.request, ok=False)
        for key, out in list(self.outgoing.items()):
            if now >= out.deadline:
                logger.info("%s: a program stopped reading an INCR transfer; dropped", self.name)
                self._end_outgoing(*key)
        for prop, until in list(self.tainted.items()):
            if now >= until:
                del self.tainted[prop]
                self.win.delete_property(prop)
                self.free_props.append(prop)

    def _next_deadline(self, now: float) -> float:
        deadlines = [now + IDLE_WAKE]
        deadlines += [s.active.deadline for s in self.sels.values() if s.active is not None]
        deadlines += [serve.deadline for serve in self.serving]
        deadlines += [out.deadline for out in self.outgoing.values()]
        deadlines += list(self.tainted.values())
        return min(deadlines)


def _wid(window: Any) -> int:
    """A python-xlib window field as an id (python-xlib wraps even None as a Window)."""
    return int(getattr(window, "id", window) or 0)


def _value(prop: Any) -> bytes | list[int]:
    if prop.format == 8:
        return bytes(prop.value)
    return [int(v) for v in prop.value]


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
