"""RandR on the X desktop: its monitors as heads, and a client's monitor layout applied.

Everything here blocks on X round trips: call it from a thread of its own, never from the
event loop (:class:`~spiceserver.sources.desktop.DesktopSource` runs :class:`RandrLayout` in a
one-thread executor, and :func:`read_heads` on its capture thread).

**Heads.**  RandR 1.5 monitors (``RRGetMonitors``) are the heads: the X server makes one per
enabled output (or per ``xrandr --setmonitor``), in root-window coordinates, with a physical
size.  Without RandR 1.5, or with no active monitor, one head covers the screen.

**Applying a layout** follows spice-vdagent (``spice-vdagent:src/vdagent/x11-randr.c``,
``vdagent_x11_set_monitor_config``): head *i* goes to output *i* (connected outputs first; on
Xorg's dummy driver DUMMY0 … DUMMY15), each through a mode of the head's size — one the output
already has, else a mode we create with CVT reduced-blanking timings (:func:`cvt_reduced_blanking`)
and add to the output.  Order matters because a CRTC must always fit in the screen
(``SetScreenSize`` fails with BadMatch otherwise): the screen first grows to hold both the old
and the new layout, then each head's CRTC is set, CRTCs beyond the heads are disabled, and the
screen shrinks to the heads' bounding box (clamped to the screen's min/max size).  The server is
grabbed meanwhile, so other clients — our own capture connection included — never see the
intermediate sizes.  Modes we created that no CRTC uses any more are deleted.  Unlike
spice-vdagent, widths are not rounded down to a multiple of 8: the frame must be the size of
the client's window, and Xorg (dummy) takes any width.

**Restoring.**  Before the first change the original layout (screen size, every CRTC's
configuration, the modes that existed) is remembered; :meth:`RandrLayout.restore` puts it back
and deletes the modes we created.

**Fixed-size servers.**  Xvfb reports RandR 1.5, but its maximum screen size is its start size
(the framebuffer is allocated once): it takes modes that fit — a smaller desktop — while adding a
larger one fails with BadMatch.  Such a server cannot follow a client's window, so a screen whose
maximum is its current size raises :class:`RandrUnsupported` up front.  Otherwise the first
failure on a server where no layout was ever applied raises it too, after putting back what was
changed; the caller then stops trying.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from spiceserver.errors import SpiceError
from spiceserver.sources.base import Head

if TYPE_CHECKING:
    from Xlib.display import Display

__all__ = [
    "Applied",
    "ModeTiming",
    "RandrError",
    "RandrLayout",
    "RandrUnsupported",
    "RandrWorker",
    "cvt_reduced_blanking",
    "describe",
    "fix_xlib_errors",
    "plan_layout",
    "read_heads",
    "read_layout",
]

logger = logging.getLogger("spiceserver.randr")

_T = TypeVar("_T")

MM_PER_INCH = 25.4
#: The DPI given to the screen when the client sent no physical size (spice-vdagent's choice).
DEFAULT_DPI = 96
#: Refresh rate of the modes we create.
REFRESH_HZ = 60.0
#: How long :meth:`RandrWorker.apply` waits for the source to show a layout it set (the X
#: server has it already; this is only the capture thread's hand-over).
SHOWN_TIMEOUT = 10.0

# RandR protocol constants (randrproto.txt); python-xlib has some of them under other names.
_ROTATE_0 = 1
_HSYNC_POSITIVE = 0x1
_VSYNC_NEGATIVE = 0x8
_SET_CONFIG_SUCCESS = 0
_SET_CONFIG_INVALID_CONFIG_TIME = 1
_CONNECTED = 0


class RandrError(SpiceError):
    """A layout could not be applied (what was changed has been put back)."""


class RandrUnsupported(RandrError):
    """This X server cannot change its modes (Xvfb, RandR < 1.2, no usable output)."""


# ---------------------------------------------------------------------- python-xlib repair


def fix_xlib_errors(display: Display) -> None:
    """Undo python-xlib 0.33's RandR error registration on ``display``'s connection.

    ``Xlib/ext/randr.py`` ``init`` registers its three errors at the codes 0, 1 and 2 — not at
    the extension's first error code — and as classes that cannot be built from an error
    packet.  Code 2 is the core BadValue: after that, any BadValue on the connection (a
    refused screen size, Xvfb's SetCrtcConfig) kills python-xlib's reader with an
    AttributeError instead of reaching the error handler.  The table is shared by every
    connection of the process, so repairing it once is enough (repeating it is harmless).
    """
    from Xlib import X
    from Xlib import error as xerror

    table = display.display.error_classes
    for code in (X.BadRequest, X.BadValue):
        table[code] = xerror.xerror_class[code]
    table.pop(0, None)


# ---------------------------------------------------------------------- mode timings


@dataclass(frozen=True, slots=True)
class ModeTiming:
    """A video mode as RandR takes it (``RRCreateMode``); ``dot_clock`` in Hz."""

    width: int
    height: int
    dot_clock: int
    h_sync_start: int
    h_sync_end: int
    h_total: int
    v_sync_start: int
    v_sync_end: int
    v_total: int
    flags: int

    @property
    def refresh(self) -> float:
        """Frames a second."""
        return self.dot_clock / (self.h_total * self.v_total)


# VESA CVT 1.1 reduced blanking: the blanking is fixed, so a mode needs the least pixel clock.
_RB_MIN_V_BLANK_US = 460.0  # minimum vertical blanking time
_RB_V_FRONT_PORCH = 3  # lines
_RB_MIN_V_BACK_PORCH = 6  # lines
_RB_H_BLANK = 160  # pixels
_RB_H_SYNC = 32  # pixels
_CLOCK_STEP_HZ = 250_000


def _cvt_vsync_lines(width: int, height: int) -> int:
    """CVT's vertical sync width encodes the aspect ratio (10 for "other")."""
    for (w, h), lines in (((4, 3), 4), ((16, 9), 5), ((16, 10), 6), ((5, 4), 7), ((15, 9), 7)):
        if width * h == height * w:
            return lines
    return 10


def cvt_reduced_blanking(width: int, height: int, refresh: float = REFRESH_HZ) -> ModeTiming:
    """CVT reduced-blanking timings for a ``width`` × ``height`` mode at ``refresh`` Hz."""
    if width <= 0 or height <= 0 or refresh <= 0:
        raise ValueError(f"bad mode {width}x{height}@{refresh}")
    vsync = _cvt_vsync_lines(width, height)
    # The line period that leaves the minimum blanking time in a frame, then the blanking
    # lines that take (at least) that time, never fewer than porches and sync need.
    h_period_us = (1e6 / refresh - _RB_MIN_V_BLANK_US) / height
    v_blank = max(
        math.floor(_RB_MIN_V_BLANK_US / h_period_us) + 1,
        _RB_V_FRONT_PORCH + vsync + _RB_MIN_V_BACK_PORCH,
    )
    v_total = height + v_blank
    h_total = width + _RB_H_BLANK
    # CVT 1.1 takes the clock from the estimated line period, not from the frame's total
    # (X's own libxcvt does the same: 1280x720 is 63.75 MHz, not 64).
    clock = h_total / h_period_us * 1e6
    clock = math.floor(clock / _CLOCK_STEP_HZ) * _CLOCK_STEP_HZ
    h_sync_end = width + _RB_H_BLANK // 2
    v_sync_start = height + _RB_V_FRONT_PORCH
    return ModeTiming(
        width=width,
        height=height,
        dot_clock=int(clock),
        h_sync_start=h_sync_end - _RB_H_SYNC,
        h_sync_end=h_sync_end,
        h_total=h_total,
        v_sync_start=v_sync_start,
        v_sync_end=v_sync_start + vsync,
        v_total=v_total,
        flags=_HSYNC_POSITIVE | _VSYNC_NEGATIVE,  # CVT-RB polarities
    )


# ---------------------------------------------------------------------- layouts (pure)

#: One output's place in a layout: (x, y, width, height), or None when it is off.
Placement = tuple[int, int, int, int] | None


def plan_layout(
    heads: Iterable[Head],
    outputs: int,
    min_size: tuple[int, int],
    max_size: tuple[int, int],
) -> tuple[tuple[Head, ...], tuple[int, int]]:
    """The heads as they will be applied, and the screen size they need.

    At most ``outputs`` heads (the first ones), sizes clamped to ``max_size``, moved so the
    layout starts at 0,0 (as spice-vdagent's ``zero_base_monitors``), then cut to the screen
    size: the bounding box clamped to ``min_size`` … ``max_size``.
    """
    wanted = [h for h in heads if h.width > 0 and h.height > 0][: max(outputs, 0)]
    if not wanted:
        raise ValueError("a layout needs at least one head")
    max_w, max_h = max_size
    min_x = min(h.x for h in wanted)
    min_y = min(h.y for h in wanted)
    placed = [
        Head(
            h.x - min_x,
            h.y - min_y,
            min(h.width, max_w),
            min(h.height, max_h),
            h.width_mm,
            h.height_mm,
        )
        for h in wanted
    ]
    width = min(max(max(h.x + h.width for h in placed), min_size[0]), max_w)
    height = min(max(max(h.y + h.height for h in placed), min_size[1]), max_h)
    fitted = tuple(
        Head(
            h.x,
            h.y,
            min(h.width, width - h.x),
            min(h.height, height - h.y),
            h.width_mm,
            h.height_mm,
        )
        for h in placed
        if h.x < width and h.y < height
    )
    if not fitted:
        raise ValueError("no head fits in the screen's maximum size")
    # Without the heads left out, the box may be smaller.
    width = max(max(h.x + h.width for h in fitted), min_size[0])
    height = max(max(h.y + h.height for h in fitted), min_size[1])
    return fitted, (width, height)


def screen_mm(heads: Iterable[Head], width: int, height: int) -> tuple[int, int]:
    """The screen's physical size: at the heads' density where the client gave one, else
    :data:`DEFAULT_DPI`."""
    sized = [h for h in heads if h.width_mm > 0 and h.height_mm > 0]
    if sized:
        per_px_x = sum(h.width_mm for h in sized) / sum(h.width for h in sized)
        per_px_y = sum(h.height_mm for h in sized) / sum(h.height for h in sized)
    else:
        per_px_x = per_px_y = MM_PER_INCH / DEFAULT_DPI
    return max(1, round(width * per_px_x)), max(1, round(height * per_px_y))


def _rect(head: Head) -> tuple[int, int, int, int]:
    return (head.x, head.y, head.width, head.height)


def describe(heads: Iterable[Head]) -> str:
    """``1280x720+0+0, 800x600+1280+0`` (xrandr's way), for logs."""
    return ", ".join(f"{h.width}x{h.height}+{h.x}+{h.y}" for h in heads)


# ---------------------------------------------------------------------- reading X


def read_layout(display: Display) -> tuple[int, int, tuple[Head, ...]]:
    """The root's size and its heads (:func:`read_heads`), from one state of the X server.

    A layout change (made under a server grab) may land between two requests, so the size is
    read again after the monitors until it holds still.
    """
    root = display.screen().root
    geometry = root.get_geometry()
    for _ in range(10):
        heads = read_heads(display, geometry.width, geometry.height)
        again = root.get_geometry()
        if (again.width, again.height) == (geometry.width, geometry.height):
            break
        geometry = again
    return geometry.width, geometry.height, heads


def read_heads(display: Display, width: int, height: int) -> tuple[Head, ...]:
    """The RandR 1.5 monitors of ``display``'s screen as heads of a ``width`` × ``height``
    frame (cut to it), in output order; one head covering the frame without them."""
    whole = (Head(0, 0, width, height),)
    if not hasattr(display.screen().root, "xrandr_get_monitors"):
        return whole  # python-xlib adds it only when the server has RandR 1.5
    root = display.screen().root
    try:
        monitors = root.xrandr_get_monitors(True).monitors
    except Exception as exc:  # an X error: keep serving the whole screen
        logger.debug("RRGetMonitors failed: %s", exc)
        return whole
    try:
        order = {o: i for i, o in enumerate(root.xrandr_get_screen_resources_current().outputs)}
    except Exception:
        order = {}
    heads: list[tuple[int, Head]] = []
    for mon in monitors:
        x0, y0 = max(mon.x, 0), max(mon.y, 0)
        x1 = min(mon.x + mon.width_in_pixels, width)
        y1 = min(mon.y + mon.height_in_pixels, height)
        if x1 <= x0 or y1 <= y0:
            continue
        # python-xlib calls the monitor's outputs "crtcs" (MonitorInfo in Xlib/ext/randr.py).
        rank = min((order.get(o, len(order)) for o in mon.crtcs), default=len(order))
        head = Head(
            x0, y0, x1 - x0, y1 - y0, int(mon.width_in_millimeters), int(mon.height_in_millimeters)
        )
        heads.append((rank, head))
    heads.sort(key=lambda item: (item[0], item[1].x, item[1].y))
    return tuple(h for _rank, h in heads) or whole


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`RandrLayout.apply` did."""

    #: The heads as applied: zero-based, at most one per output, clamped to the screen.
    heads: tuple[Head, ...]
    #: The screen size they need (their bounding box, clamped to the screen's min/max).
    size: tuple[int, int]
    #: False when the screen had this layout already (nothing was sent to the X server).
    changed: bool


@dataclass(frozen=True, slots=True)
class _Crtc:
    x: int
    y: int
    mode: int
    rotation: int
    outputs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Saved:
    """A layout to go back to."""

    width: int
    height: int
    width_mm: int
    height_mm: int
    crtcs: dict[int, _Crtc]


class _State:
    """One read of the screen resources, with the outputs and CRTCs it lists."""

    def __init__(self, display: Display, root: Any, *, poll: bool = False) -> None:
        res = root.xrandr_get_screen_resources() if poll else None
        if res is None:
            res = root.xrandr_get_screen_resources_current()
        self.res = res
        self.config_timestamp: int = res.config_timestamp
        # python-xlib names the field "mode_names" in one reply and "names" in the other.
        names = res.mode_names if poll else res.names
        if isinstance(names, bytes):
            names = names.decode("latin-1")
        self.modes: dict[int, tuple[int, int, str]] = {}
        offset = 0
        for mode in res.modes:
            name = names[offset : offset + mode.name_length]
            offset += mode.name_length
            self.modes[mode.id] = (mode.width, mode.height, name)
        self.outputs = {
            o: display.xrandr_get_output_info(o, res.config_timestamp) for o in res.outputs
        }
        self.crtcs = {c: display.xrandr_get_crtc_info(c, res.config_timestamp) for c in res.crtcs}
        geometry = root.get_geometry()
        self.size = (geometry.width, geometry.height)

    def order(self) -> list[int]:
        """Outputs heads go to: connected ones first (spice-vdagent's display id i is output i
        of the resources), each able to drive a CRTC."""
        usable = [o for o in self.res.outputs if self.outputs[o].crtcs]
        return sorted(usable, key=lambda o: self.outputs[o].connection != _CONNECTED)

    def placement(self, output: int) -> Placement:
        crtc = self.outputs[output].crtc
        info = self.crtcs.get(crtc)
        if not crtc or info is None or not info.mode:
            return None
        return (info.x, info.y, info.width, info.height)

    def used_modes(self) -> set[int]:
        return {info.mode for info in self.crtcs.values() if info.mode}


class RandrLayout:
    """Applies monitor layouts to one X screen through its own connection (blocking calls).

    Args:
        display: A connection of its own (python-xlib is not thread-safe), which this object
            owns and closes.
        name: The display's name, for logs.

    Raises:
        RandrUnsupported: The server has no RandR 1.2, or a screen that cannot grow.
    """

    def __init__(self, display: Display, name: str = "") -> None:
        self.display_name = name or display.get_display_name()
        self.display = display
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        fix_xlib_errors(self.display)
        self._errors: list[Any] = []
        self.display.set_error_handler(lambda error, request: self._errors.append(error))
        self.root = self.display.screen().root
        self._saved: _Saved | None = None
        #: Modes we created (their ids), and (output, mode) pairs we added.
        self._created: set[int] = set()
        self._added: set[tuple[int, int]] = set()
        self._applied_once = False
        self._order: list[int] | None = None
        screen = self.display.screen()
        self._mm = (int(screen.width_in_mms), int(screen.height_in_mms))
        #: Counts the layouts that changed the X server (tests check that a repeat does not).
        self.changes = 0
        self._check_version()
        size_range = self.root.xrandr_get_screen_size_range()
        self.min_size = (size_range.min_width, size_range.min_height)
        self.max_size = (size_range.max_width, size_range.max_height)
        geometry = self.root.get_geometry()
        if self.max_size[0] <= geometry.width and self.max_size[1] <= geometry.height:
            # Xvfb: the framebuffer is allocated at the start size, which is also the
            # maximum.  It takes smaller modes, but cannot follow a client in general.
            raise RandrUnsupported(
                f"the screen cannot grow beyond its {geometry.width}x{geometry.height} "
                "(a fixed-size X server, such as Xvfb)"
            )

    def _check_version(self) -> None:
        if not self.display.has_extension("RANDR"):
            raise RandrUnsupported("the X server has no RandR extension")
        version = self.display.xrandr_query_version()
        have = (version.major_version, version.minor_version)
        if have < (1, 2):
            raise RandrUnsupported(f"RandR {have[0]}.{have[1]} cannot set modes (1.2 needed)")

    def close(self) -> None:
        try:
            self.display.close()
        except Exception:
            logger.debug("closing the RandR connection failed", exc_info=True)

    @property
    def changed(self) -> bool:
        """Whether a layout of ours is in place (:meth:`restore` has something to undo)."""
        return self._saved is not None

    # -- applying ----------------------------------------------------------------

    def apply(self, heads: tuple[Head, ...]) -> Applied:
        """Set ``heads`` as the screen's layout (unless the screen has it already).

        Raises:
            RandrUnsupported: this server cannot change modes (nothing was left changed).
            RandrError: this layout failed (the previous one was put back).
        """
        state = _State(self.display, self.root, poll=self._saved is None)
        if self._order is None or any(o not in state.outputs for o in self._order):
            # Kept from the first look: an output we enabled may turn "connected" (the
            # dummy driver's do), which must not move the heads to other outputs.
            self._order = state.order()
        order = self._order
        if not order:
            raise RandrUnsupported("no RandR output can drive a CRTC")
        plan, size = plan_layout(heads, len(order), self.min_size, self.max_size)
        wanted: list[Placement] = [None] * len(order)
        for i, head in enumerate(plan):
            wanted[i] = (head.x, head.y, head.width, head.height)
        current = [state.placement(o) for o in order]
        if current == wanted and state.size == size:
            return Applied(plan, size, changed=False)
        before = self._snapshot(state)
        if self._saved is None:
            self._saved = before
        mm = screen_mm(plan, *size)
        try:
            self._set(state, order, plan, size, mm)
            readback = _State(self.display, self.root)
            if [readback.placement(o) for o in order] != wanted or readback.size != size:
                raise RandrError(
                    f"the X server did not take the layout: {readback.size} "
                    f"{[readback.placement(o) for o in order]}"
                )
        except Exception as exc:
            self._put_back(before)
            self._drop_unused_modes()
            if not self._applied_once:
                self._saved = None
                raise RandrUnsupported(f"{type(exc).__name__}: {exc}") from exc
            if isinstance(exc, RandrError):
                raise
            raise RandrError(f"{type(exc).__name__}: {exc}") from exc
        self._applied_once = True
        self.changes += 1
        self._mm = mm
        self._drop_unused_modes()
        return Applied(plan, size, changed=True)

    def restore(self) -> bool:
        """Put back the layout from before the first change; False if there was none."""
        saved, self._saved = self._saved, None
        if saved is None:
            return False
        try:
            self._put_back(saved)
        finally:
            self._drop_unused_modes()
        self.changes += 1
        return True

    # -- steps ---------------------------------------------------------------------

    def _snapshot(self, state: _State) -> _Saved:
        crtcs = {
            c: _Crtc(info.x, info.y, info.mode, info.rotation, tuple(info.outputs))
            for c, info in state.crtcs.items()
        }
        return _Saved(*state.size, *self._mm, crtcs)

    def _set(
        self,
        state: _State,
        order: list[int],
        plan: tuple[Head, ...],
        size: tuple[int, int],
        mm: tuple[int, int],
    ) -> None:
        d = self.display
        modes = [self._mode_for(state, order[i], h.width, h.height) for i, h in enumerate(plan)]
        d.grab_server()
        try:
            self._errors.clear()
            cur_w, cur_h = state.size
            grow = (max(cur_w, size[0]), max(cur_h, size[1]))
            if grow != state.size:
                self._screen_size(grow, screen_mm(plan, *grow))
            taken: set[int] = set()
            for i, head in enumerate(plan):
                output = order[i]
                info = state.outputs[output]
                crtc = info.crtc if info.crtc and info.crtc not in taken else 0
                if not crtc:
                    free = [c for c in info.crtcs if c not in taken]
                    if not free:
                        raise RandrError(f"output {info.name} has no free CRTC")
                    crtc = free[0]
                taken.add(crtc)
                self._crtc(state, crtc, head.x, head.y, modes[i], _ROTATE_0, [output])
            for crtc, cinfo in state.crtcs.items():
                if crtc not in taken and cinfo.mode:
                    self._crtc(state, crtc, 0, 0, 0, _ROTATE_0, [])
            self._screen_size(size, mm)
        finally:
            d.ungrab_server()
            d.sync()
        self._raise_errors("setting the layout")

    def _put_back(self, saved: _Saved) -> None:
        """Back to ``saved`` (best effort: each step is tried, errors are logged)."""
        d = self.display
        try:
            state = _State(self.display, self.root)
        except Exception:
            logger.warning("%s: cannot read RandR state to put it back", self.display_name)
            return
        d.grab_server()
        try:
            self._errors.clear()
            cur_w, cur_h = state.size
            grow = (max(cur_w, saved.width), max(cur_h, saved.height))
            if grow != state.size:
                self._screen_size(grow, (saved.width_mm, saved.height_mm))
            for crtc in state.crtcs:
                old = saved.crtcs.get(crtc)
                if (old is None or not old.mode) and state.crtcs[crtc].mode:
                    self._try_crtc(state, crtc, 0, 0, 0, _ROTATE_0, [])
            for crtc, old in saved.crtcs.items():
                if old.mode and crtc in state.crtcs:
                    self._try_crtc(state, crtc, old.x, old.y, old.mode, old.rotation, old.outputs)
            self._screen_size((saved.width, saved.height), (saved.width_mm, saved.height_mm))
        finally:
            d.ungrab_server()
            d.sync()
        if self._errors:
            logger.warning(
                "%s: putting the RandR layout back: %s", self.display_name, self._errors[:3]
            )
            self._errors.clear()
        self._mm = (saved.width_mm, saved.height_mm)

    def _mode_for(self, state: _State, output: int, width: int, height: int) -> int:
        """A mode of ``width`` × ``height`` on ``output``: one it has, or ours added to it."""
        info = state.outputs[output]
        for mode in info.modes:
            w, h, _name = state.modes.get(mode, (0, 0, ""))
            if (w, h) == (width, height):
                return int(mode)
        name = f"{width}x{height}"
        found = [m for m, (w, h, n) in state.modes.items() if (w, h, n) == (width, height, name)]
        ours = [m for m in found if m in self._created]
        if ours or found:
            mode = (ours or found)[0]
        else:
            timing = cvt_reduced_blanking(width, height)
            fields = {k: getattr(timing, k) for k in ModeTiming.__slots__}
            fields.update(id=0, h_skew=0, name_length=len(name))
            mode = self.root.xrandr_create_mode(fields, name).mode
            self._created.add(mode)
            state.modes[mode] = (width, height, name)
            logger.debug("%s: created mode %s (%#x)", self.display_name, name, mode)
        self._errors.clear()
        self.display.xrandr_add_output_mode(output, mode)
        self.display.sync()
        self._raise_errors(f"adding mode {name} to output {info.name}")
        self._added.add((output, mode))
        return int(mode)

    def _screen_size(self, size: tuple[int, int], mm: tuple[int, int]) -> None:
        self.root.xrandr_set_screen_size(size[0], size[1], mm[0], mm[1])

    def _crtc(
        self,
        state: _State,
        crtc: int,
        x: int,
        y: int,
        mode: int,
        rotation: int,
        outputs: Iterable[int],
    ) -> None:
        d = self.display
        outs = list(outputs)
        reply = d.xrandr_set_crtc_config(crtc, state.config_timestamp, x, y, mode, rotation, outs)
        if reply.status == _SET_CONFIG_INVALID_CONFIG_TIME:  # outputs changed meanwhile
            state.config_timestamp = (
                self.root.xrandr_get_screen_resources_current().config_timestamp
            )
            reply = d.xrandr_set_crtc_config(
                crtc, state.config_timestamp, x, y, mode, rotation, outs
            )
        if reply.status != _SET_CONFIG_SUCCESS:
            raise RandrError(f"SetCrtcConfig {crtc:#x} to {x},{y} mode {mode:#x}: {reply.status}")

    def _try_crtc(self, state: _State, crtc: int, *args: Any) -> None:
        try:
            self._crtc(state, crtc, *args)
        except Exception as exc:
            logger.warning("%s: CRTC %#x not put back: %s", self.display_name, crtc, exc)

    def _raise_errors(self, what: str) -> None:
        if self._errors:
            errors, self._errors = self._errors, []
            raise RandrError(f"{what}: {', '.join(type(e).__name__ for e in errors)}")

    def _drop_unused_modes(self) -> None:
        """Take our modes off the outputs where no CRTC shows them, and delete the modes
        we created that nothing uses."""
        state = _State(self.display, self.root)
        used = {
            (o, state.crtcs[info.crtc].mode)
            for o, info in state.outputs.items()
            if info.crtc and info.crtc in state.crtcs
        }
        in_use = state.used_modes()
        self._errors.clear()
        for pair in sorted(self._added - used):
            self.display.xrandr_delete_output_mode(*pair)
            self._added.discard(pair)
        for mode in sorted(self._created - in_use):
            self.display.xrandr_destroy_mode(mode)
            self._created.discard(mode)
        self.display.sync()
        if self._errors:
            logger.debug("%s: deleting unused modes: %s", self.display_name, self._errors)
            self._errors.clear()


class RandrWorker:
    """A :class:`RandrLayout` for the event loop: its calls run on a thread of their own, made
    with the X connection on the first layout; failures are logged (not supported: once).

    Args:
        display_name: The X display.
        opener: Opens a python-xlib connection to it (``desktop.open_display``).
    """

    def __init__(self, display_name: str, opener: Callable[[str], Display]) -> None:
        self.display_name = display_name
        self._opener = opener
        self._layout: RandrLayout | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        #: Why this X server cannot follow layouts (None: not known to be unable).
        self.unsupported: str | None = None
        self._shown = asyncio.Event()
        self._generation = 0

    def shown(self) -> None:
        """The source handed over a new frame or new heads (loop thread)."""
        self._shown.set()

    async def apply(
        self,
        heads: tuple[Head, ...],
        current: Callable[[], tuple[tuple[int, int], tuple[Head, ...]]] | None = None,
    ) -> Applied | None:
        """Set ``heads`` (see :meth:`RandrLayout.apply`); None when not applied.

        With ``current`` (the source's frame size and heads), a layout that changed the X
        server is returned once the source shows it (each hand-over calls :meth:`shown`).
        """
        if self.unsupported is not None or not heads:
            return None
        self._generation += 1
        generation = self._generation
        try:
            applied = await self._run(lambda layout: layout.apply(heads))
        except RandrUnsupported as exc:
            self.unsupported = str(exc)
            logger.info(
                "%s: following the clients' monitor layouts is not supported: %s",
                self.display_name,
                exc,
            )
            return None
        except SpiceError as exc:  # RandrError, or ConfigError from the connection
            logger.warning("%s: monitor layout not applied: %s", self.display_name, exc)
            return None
        except Exception as exc:  # an X connection error: this layout fails, serving goes on
            logger.warning("%s: monitor layout failed: %r", self.display_name, exc)
            return None
        if applied.changed:
            logger.info("%s: monitor layout set to %s", self.display_name, describe(applied.heads))
            if current is not None:
                await self._wait_shown(applied, current, generation)
        return applied

    async def _wait_shown(
        self,
        applied: Applied,
        current: Callable[[], tuple[tuple[int, int], tuple[Head, ...]]],
        generation: int,
    ) -> None:
        wanted = sorted(_rect(h) for h in applied.heads)

        def shown() -> bool:
            size, heads = current()
            return size == applied.size and sorted(_rect(h) for h in heads) == wanted

        deadline = asyncio.get_running_loop().time() + SHOWN_TIMEOUT
        while not shown() and generation == self._generation:  # a newer layout: stop
            self._shown.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                size, heads = current()
                logger.warning(
                    "%s: layout %s was set but not seen within %.0f s (now %dx%d: %s)",
                    self.display_name, describe(applied.heads), SHOWN_TIMEOUT, *size,
                    describe(heads),
                )  # fmt: skip
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._shown.wait(), remaining)

    async def restore(self) -> None:
        """Put back the layout from before the first change, if there was one."""
        if self._layout is None or not self._layout.changed:
            return
        try:
            await self._run(lambda layout: layout.restore())
        except Exception as exc:
            logger.warning("%s: original monitor layout not restored: %r", self.display_name, exc)
            return
        logger.info("%s: original monitor layout restored", self.display_name)

    async def close(self) -> None:
        """Restore, then close the connection and the thread.  Idempotent."""
        if self._pool is None:
            return
        await self.restore()
        pool, self._pool = self._pool, None
        layout, self._layout = self._layout, None
        if layout is not None:
            await asyncio.get_running_loop().run_in_executor(pool, layout.close)
        pool.shutdown(wait=False)

    def _run(self, call: Callable[[RandrLayout], _T]) -> asyncio.Future[_T]:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="spice-randr"
            )

        def run() -> _T:
            if self._layout is None:
                self._layout = RandrLayout(self._opener(self.display_name), self.display_name)
            return call(self._layout)

        return asyncio.get_running_loop().run_in_executor(self._pool, run)
