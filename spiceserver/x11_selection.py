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
from typing import TYPE_CHECKING, Any

from spiceserver.clipboard import ClipboardType, Selection
from spiceserver.x11_selection_serve import (
    INCR_CHUNK_CAP,
    TRANSFER_TIMEOUTS,
    TYPE_TARGETS,
    Bridge,
    Conversion,
    Grab,
    Outgoing,
    Pending,
    SelState,
    Serving,
    wid,
)

if TYPE_CHECKING:
    import asyncio

    from Xlib.display import Display

__all__ = ["SELECTIONS", "TRANSFER_TIMEOUTS", "Bridge", "Grab", "SelectionThread"]

logger = logging.getLogger("spiceserver.clipboard")

#: The selections bridged (spice-gtk's session handles these two; SECONDARY is unused).
SELECTIONS = (Selection.CLIPBOARD, Selection.PRIMARY)
#: Properties on our window that receive conversions.  Each selection converts one target at
#: a time, but a property an owner may still write into (it answered after our timeout, or we
#: stopped an INCR transfer over the cap) is left alone for a while before reuse.
PROPERTY_POOL = 8
#: The select() timeout when nothing is due: the thread wakes at least this often.
IDLE_WAKE = 1.0


class SelectionThread(Serving):
    """The X side; construct, then :meth:`run` on the thread, which returns when stopped."""

    def __init__(self, bridge: Bridge, display: Display, wake_fd: int, name: str) -> None:
        self.bridge = bridge
        self.d = display
        self.wake_fd = wake_fd
        self.name = name
        self.stopping = False
        self.xfixes = False
        self.handlers: dict[int, Callable[[Any], None]] = {}
        self.sels: dict[Selection, SelState] = {}
        self.serving: list[Pending] = []
        self.fetching: set[tuple[Selection, int, ClipboardType]] = set()
        self.outgoing: dict[tuple[int, int], Outgoing] = {}
        #: Quarantined properties: atom → (until, written since we last deleted it).
        self.tainted: dict[int, tuple[float, bool]] = {}
        self.stamp_pending = False

    # ------------------------------------------------------------------ setup and main loop

    def _create(self) -> None:
        """Our window, the atoms and the selection states (X round trips: on the thread)."""
        from Xlib import X, Xatom

        display = self.d
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
            Selection.CLIPBOARD: SelState(Selection.CLIPBOARD, intern("CLIPBOARD")),
            Selection.PRIMARY: SelState(Selection.PRIMARY, Xatom.PRIMARY),
        }
        self.by_atom = {s.atom: s for s in self.sels.values()}
        self.free_props: deque[int] = deque(
            intern(f"SPICE_SELECTION_{i}") for i in range(PROPERTY_POOL)
        )
        # The largest property we write at once (python-xlib has no BIG-REQUESTS, so the core
        # limit applies: max_request_length is in 4-byte units).
        self.chunk = min(display.display.info.max_request_length * 4 - 100, INCR_CHUNK_CAP)

    def setup(self) -> None:
        from Xlib import X
        from Xlib.ext import xfixes

        self._create()
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
            s.owner = wid(d.get_selection_owner(s.atom))
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

    def _apply_grab(self, s: SelState, grab: Grab | None) -> None:
        from Xlib import X
        from Xlib.protocol import request

        s.grab = grab
        s.cache = None
        if grab is not None:
            # Taken again even while we own it: the new owner time tells clipboard managers
            # (which follow XFixes too) that the content changed.
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
            if s.grab is None or s.owned_gen == s.grab.generation:
                continue
            self.win.set_selection_owner(s.atom, timestamp)
            if wid(self.d.get_selection_owner(s.atom)) == self.win.id:
                s.owned_time = timestamp
                s.owned_gen = s.grab.generation
            else:
                logger.warning("%s: could not take the X %s selection", self.name, s.selection.name)

    # ------------------------------------------------------------------ events

    def _on_property(self, ev: Any) -> None:
        from Xlib import X

        window = wid(ev.window)
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
            self.tainted[ev.atom] = (time.monotonic() + 2 * self.bridge.timeout, True)
            return
        for s in self.sels.values():
            conv = s.active
            if conv is not None and conv.incr and conv.prop == ev.atom:
                self._incr_chunk(s, conv)
                return

    def _on_clear(self, ev: Any) -> None:
        s = self.by_atom.get(ev.atom)
        if s is not None and wid(ev.window) == self.win.id:
            self._check_ownership(s)  # another program took it; XFixes tells us who

    def _check_ownership(self, s: SelState) -> None:
        """Forget our ownership unless the server says we still have it.  Events can be stale:
        one queued while we took the selection again (for a new grab) reports an older
        change, so the server is asked (one round trip, only while we think we own it)."""
        if s.owned_time is not None and wid(self.d.get_selection_owner(s.atom)) != self.win.id:
            s.owned_time = None

    def _on_owner(self, ev: Any) -> None:
        from Xlib.ext import xfixes

        s = self.by_atom.get(ev.selection)
        if s is None:
            return
        set_owner = ev.sub_code == xfixes.XFixesSetSelectionOwnerNotify
        owner = wid(ev.owner) if set_owner else 0
        logger.debug(
            "X %s: owner now %#x (XFixes subcode %d)", s.selection.name, owner, ev.sub_code
        )
        s.owner = owner
        s.owner_gen += 1
        s.targets = None
        s.targets_wanted = False
        if owner != self.win.id:
            self._check_ownership(s)  # (SelectionClear says so too, but it may come later)
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

    # ------------------------------------------------------------------ converting (reading)

    def _schedule(self, now: float) -> None:
        """Start the next conversion of each idle selection: a new owner's TARGETS first."""
        for s in self.sels.values():
            if s.active is not None:
                continue
            if s.targets_wanted and s.owned_time is not None:
                s.targets_wanted = False  # a stale owner change: we own it (again)
            elif s.targets_wanted:
                s.targets_wanted = False
                self._convert(
                    s, self.a_targets, now, functools.partial(self._targets, s, s.owner_gen)
                )
            elif s.reads:
                ctype, future = s.reads.popleft()
                self._start_read(s, ctype, future, now)

    def _start_read(
        self,
        s: SelState,
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
        s: SelState,
        target: int,
        now: float,
        done: Callable[[bytes | list[int] | None, int], None],
    ) -> None:
        from Xlib import X

        prop = self._take_prop()
        if prop is None:
            self.bridge.warn("property", "%s: no free property for a conversion", self.name)
            done(None, 0)
            return
        self.win.convert_selection(s.atom, target, prop, X.CurrentTime)
        timeout = self.bridge.timeout
        s.active = Conversion(target, prop, now + timeout, now + timeout * TRANSFER_TIMEOUTS, done)

    def _finish(
        self, s: SelState, value: bytes | list[int] | None, ptype: int, taint: bool = False
    ) -> None:
        conv = s.active
        assert conv is not None
        s.active = None
        if taint:
            self.tainted[conv.prop] = (time.monotonic() + 2 * self.bridge.timeout, True)
        else:
            self.free_props.append(conv.prop)
        conv.done(value, ptype)

    def _on_notify(self, ev: Any) -> None:
        from Xlib import X

        s = self.by_atom.get(ev.selection)
        if s is None or wid(ev.requestor) != self.win.id:
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
            conv.deadline = min(time.monotonic() + self.bridge.timeout, conv.end)
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

    def _incr_chunk(self, s: SelState, conv: Conversion) -> None:
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
        conv.deadline = min(time.monotonic() + self.bridge.timeout, conv.end)

    def _targets(
        self, s: SelState, generation: int, value: bytes | list[int] | None, _ptype: int
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

    def _report(self, s: SelState, types: tuple[ClipboardType, ...]) -> None:
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
                self.bridge.warn(
                    f"answer {s.selection.name}",
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
            # A fetch whose answer never came (the loop was stuck, say) may be asked again.
            self.fetching = {serve.key for serve in self.serving} & self.fetching
        for key, out in list(self.outgoing.items()):
            if now >= out.deadline:
                logger.info("%s: a program stopped reading an INCR transfer; dropped", self.name)
                self._end_outgoing(*key)
        # A quarantined property is freed only once it stayed empty for a whole period after
        # we deleted it: an owner we stopped listening to (late answer, INCR over the cap)
        # writes again after each deletion until it gives up, and must never write into a
        # later conversion.
        for prop, (until, written) in list(self.tainted.items()):
            if now < until:
                continue
            if written:
                self.win.delete_property(prop)
                self.tainted[prop] = (now + 2 * self.bridge.timeout, False)
            else:
                del self.tainted[prop]
                self.free_props.append(prop)

    def _next_deadline(self, now: float) -> float:
        deadlines = [now + IDLE_WAKE]
        deadlines += [s.active.deadline for s in self.sels.values() if s.active is not None]
        deadlines += [serve.deadline for serve in self.serving]
        deadlines += [out.deadline for out in self.outgoing.values()]
        deadlines += [until for until, _ in self.tainted.values()]
        return min(deadlines)


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
