"""GNOME's mutter over D-Bus: a RemoteDesktop session with a ScreenCast stream of one monitor.

This is the private API gnome-remote-desktop uses (no consent dialog, unlike the
xdg-desktop-portal route, which also needs a GPU on wlroots).  The interfaces are mutter's
``data/dbus-interfaces/org.gnome.Mutter.RemoteDesktop.xml``, ``….ScreenCast.xml`` and
``….DisplayConfig.xml`` (mutter 43: RemoteDesktop v1, ScreenCast v4).  The order is fixed by
mutter (``mutter:src/backends/meta-remote-desktop-session.c``):

1. ``RemoteDesktop.CreateSession()`` → a session object with a ``SessionId`` property;
2. ``ScreenCast.CreateSession({"remote-desktop-session-id": id})`` → a screen-cast session tied
   to it (its own ``Start`` is not called: the remote desktop session starts both);
3. ``RecordMonitor(connector, {"cursor-mode": …})`` → a stream object;
4. ``RemoteDesktop.Session.Start()`` → the stream emits ``PipeWireStreamAdded(node_id)``, the
   PipeWire node whose frames GStreamer's ``pipewiresrc`` reads.

Input goes to the remote desktop session (``NotifyKeyboardKeycode`` and friends), pointer
positions in the coordinates of the stream (``NotifyPointerMotionAbsolute(stream, x, y)``).

D-Bus is spoken through dbus-fast (asyncio, on the server's loop), with plain messages rather
than introspected proxies: no introspection round trips at start, and the fake bus in the unit
tests needs to implement only the methods called here.  Input calls are sent without waiting
for their replies (one write each, in order) but their number in flight is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spiceserver.errors import ConfigError

if TYPE_CHECKING:
    from dbus_fast import Message
    from dbus_fast.aio import MessageBus

__all__ = [
    "CURSOR_EMBEDDED",
    "CURSOR_HIDDEN",
    "CURSOR_METADATA",
    "MutterSession",
    "StreamInfo",
    "mutter_available",
    "primary_connector",
]

logger = logging.getLogger("spiceserver.gnome")

REMOTE_DESKTOP = "org.gnome.Mutter.RemoteDesktop"
SCREEN_CAST = "org.gnome.Mutter.ScreenCast"
DISPLAY_CONFIG = "org.gnome.Mutter.DisplayConfig"
_RD_PATH = "/org/gnome/Mutter/RemoteDesktop"
_SC_PATH = "/org/gnome/Mutter/ScreenCast"
_DC_PATH = "/org/gnome/Mutter/DisplayConfig"

#: ScreenCast ``cursor-mode`` values (``org.gnome.Mutter.ScreenCast.xml``): hidden, drawn into
#: the frames, or sent as SPA cursor metadata beside them.
CURSOR_HIDDEN = 0
CURSOR_EMBEDDED = 1
CURSOR_METADATA = 2

#: Seconds for one D-Bus call at start, and for the stream's PipeWire node to appear.
CALL_TIMEOUT = 10.0
#: mutter drops the input of a remote desktop session's first ~50 ms (its virtual devices
#: are still being set up; seen with mutter 43: the first keys never reached the focused
#: window).  :meth:`MutterSession.open` taps Shift, and input is taken this long after.
WARMUP_SECONDS = 0.15
#: KEY_LEFTSHIFT: a tap of it types nothing and triggers no shell action.
_WARMUP_KEY = 42
#: Input calls sent and not yet answered: past this, further input is dropped (a mutter that
#: stopped reading must not make the server buffer without bound).
MAX_IN_FLIGHT = 512


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What mutter says about the stream: its PipeWire node, and the monitor's place and size
    in the desktop (absent for some monitor kinds)."""

    node_id: int
    connector: str
    x: int = 0
    y: int = 0
    width: int = 0
    height: int = 0


def _message(
    destination: str, path: str, interface: str, member: str, signature: str = "", body: Any = ()
) -> Message:
    from dbus_fast import Message

    return Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=list(body),
    )


async def _call(bus: MessageBus, message: Message, what: str) -> list[Any]:
    """One method call; a D-Bus error or a timeout becomes a ConfigError naming ``what``."""
    from dbus_fast import MessageType

    try:
        reply = await asyncio.wait_for(bus.call(message), CALL_TIMEOUT)
    except TimeoutError as exc:
        raise ConfigError(f"{what}: no answer from mutter within {CALL_TIMEOUT:.0f} s") from exc
    if reply is None:
        raise ConfigError(f"{what}: no reply")
    if reply.message_type == MessageType.ERROR:
        detail = reply.body[0] if reply.body else ""
        hint = ""
        if reply.error_name in (
            "org.freedesktop.DBus.Error.AccessDenied",
            "org.freedesktop.DBus.Error.ServiceUnknown",
        ):
            hint = " (is this a GNOME session, and does it allow remote desktop sessions?)"
        raise ConfigError(f"{what} failed: {reply.error_name}: {detail}{hint}")
    return list(reply.body)


async def connect_session_bus(address: str | None) -> MessageBus:
    """The desktop's session bus (``$DBUS_SESSION_BUS_ADDRESS`` by default), or a ConfigError
    that says why not."""
    try:
        from dbus_fast.aio import MessageBus
    except ImportError as exc:
        raise ConfigError(
            "the GNOME source needs dbus-fast and PyGObject: pip install 'spiceserver[gnome]'"
        ) from exc
    address = address or os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if not address:
        raise ConfigError(
            "no D-Bus session bus ($DBUS_SESSION_BUS_ADDRESS is unset): run the server inside "
            "the GNOME session, as its user"
        )
    try:
        # Unix fds: the clipboard's SelectionRead and SelectionWrite answer with a pipe.
        bus = MessageBus(bus_address=address, negotiate_unix_fd=True)
        return await asyncio.wait_for(bus.connect(), CALL_TIMEOUT)
    except (ConnectionResetError, BrokenPipeError, EOFError) as exc:
        # dbus-daemon closes the socket on a user its policy does not allow (EXTERNAL auth
        # with another uid): the usual case of a server started as root or as another user.
        raise ConfigError(
            f"the D-Bus session bus {address!r} refused the connection ({exc!r}): run the "
            "server as the user of the GNOME session"
        ) from exc
    except Exception as exc:  # socket missing, bad address, failed authentication
        raise ConfigError(f"cannot connect to the D-Bus session bus {address!r}: {exc}") from exc


async def _bus_method(bus: MessageBus, member: str, arg: str) -> list[Any]:
    """A method of the bus itself (``org.freedesktop.DBus``) taking one string."""
    message = _message(
        "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", member, "s", [arg]
    )
    return await _call(bus, message, f"{member}({arg})")


async def _has_owner(bus: MessageBus, name: str) -> bool:
    return bool((await _bus_method(bus, "NameHasOwner", name))[0])


async def mutter_available(address: str | None = None) -> bool:
    """True if a session bus answers and mutter's RemoteDesktop and ScreenCast are on it (what
    ``--source desktop`` checks to pick GNOME over X11)."""
    try:
        bus = await connect_session_bus(address)
    except ConfigError:
        return False
    try:
        return await _has_owner(bus, REMOTE_DESKTOP) and await _has_owner(bus, SCREEN_CAST)
    except ConfigError:
        return False
    finally:
        bus.disconnect()


def primary_connector(state: list[Any]) -> str:
    """The connector of the primary monitor in a ``DisplayConfig.GetCurrentState`` reply
    (``(u serial, a((ssss)a(siiddada{sv})a{sv}) monitors, a(iiduba(ssss)a{sv}) logical, …)``):
    the first monitor of the primary logical monitor, else the first monitor."""
    monitors, logical = state[1], state[2]
    for entry in logical:
        if entry[4] and entry[5]:  # primary, with monitors
            return str(entry[5][0][0])
    if not monitors:
        raise ConfigError("mutter reports no monitor to record (DisplayConfig.GetCurrentState)")
    return str(monitors[0][0][0])


class MutterSession:
    """A started remote desktop session with one monitor stream; build with :meth:`open`.

    ``on_closed`` is called (on the loop) if mutter ends the session: the monitor went away,
    the session was stopped by the desktop, or mutter quit.
    """

    def __init__(
        self, bus: MessageBus, session_path: str, stream_path: str, stream: StreamInfo
    ) -> None:
        self.bus = bus
        self.session_path = session_path
        self.stream_path = stream_path
        self.stream = stream
        self.on_closed: Callable[[], None] | None = None
        self.ready_at = 0.0
        self.closed = False
        self.in_flight = 0
        self._dropped = 0
        self._error_logged = False

    # ------------------------------------------------------------------ start

    @classmethod
    async def open(
        cls,
        bus_address: str | None = None,
        *,
        connector: str | None = None,
        cursor_mode: int = CURSOR_EMBEDDED,
    ) -> MutterSession:
        """Connect, create and start the sessions, and wait for the PipeWire node.

        Raises:
            ConfigError: No session bus, access refused, no mutter on it, or mutter refused
                a step (each message names which); nothing is left running then.
        """
        bus = await connect_session_bus(bus_address)
        session_path: str | None = None
        try:
            for name in (REMOTE_DESKTOP, SCREEN_CAST):
                if not await _has_owner(bus, name):
                    raise ConfigError(
                        f"{name} is not on the session bus: the GNOME source needs a GNOME "
                        "Shell or mutter Wayland session (and runs as its user)"
                    )
            if connector is None:
                state = await _call(
                    bus,
                    _message(DISPLAY_CONFIG, _DC_PATH, DISPLAY_CONFIG, "GetCurrentState"),
                    "DisplayConfig.GetCurrentState",
                )
                connector = primary_connector(state)
            (session_path,) = await _call(
                bus,
                _message(REMOTE_DESKTOP, _RD_PATH, REMOTE_DESKTOP, "CreateSession"),
                "RemoteDesktop.CreateSession",
            )
            session_id = await _get_property(
                bus, REMOTE_DESKTOP, session_path, f"{REMOTE_DESKTOP}.Session", "SessionId"
            )
            from dbus_fast import Variant

            (cast_path,) = await _call(
                bus,
                _message(
                    SCREEN_CAST,
                    _SC_PATH,
                    SCREEN_CAST,
                    "CreateSession",
                    "a{sv}",
                    [{"remote-desktop-session-id": Variant("s", session_id)}],
                ),
                "ScreenCast.CreateSession",
            )
            (stream_path,) = await _call(
                bus,
                _message(
                    SCREEN_CAST,
                    cast_path,
                    f"{SCREEN_CAST}.Session",
                    "RecordMonitor",
                    "sa{sv}",
                    [connector, {"cursor-mode": Variant("u", cursor_mode)}],
                ),
                f"ScreenCast.RecordMonitor({connector!r})",
            )
            node = await _start_and_wait_node(bus, session_path, stream_path)
            for pressed in (True, False):  # see WARMUP_SECONDS
                await _call(
                    bus,
                    _message(
                        REMOTE_DESKTOP,
                        session_path,
                        f"{REMOTE_DESKTOP}.Session",
                        "NotifyKeyboardKeycode",
                        "ub",
                        [_WARMUP_KEY, pressed],
                    ),
                    "RemoteDesktop.Session.NotifyKeyboardKeycode",
                )
            warm_at = asyncio.get_running_loop().time() + WARMUP_SECONDS
            params = await _get_property(
                bus, SCREEN_CAST, stream_path, f"{SCREEN_CAST}.Stream", "Parameters"
            )
            stream = _stream_info(node, connector, params)
        except BaseException:
            if session_path is not None:
                with contextlib.suppress(Exception):
                    await _call(
                        bus,
                        _message(REMOTE_DESKTOP, session_path, f"{REMOTE_DESKTOP}.Session", "Stop"),
                        "RemoteDesktop.Session.Stop",
                    )
            bus.disconnect()
            raise
        session = cls(bus, session_path, stream_path, stream)
        #: When input is taken (see WARMUP_SECONDS), on the loop's clock.
        session.ready_at = warm_at
        bus.add_message_handler(session._on_message)
        logger.info(
            "GNOME remote desktop session %s: monitor %s %dx%d+%d+%d, PipeWire node %d",
            session_path.rsplit("/", 1)[-1],
            connector,
            stream.width,
            stream.height,
            stream.x,
            stream.y,
            node,
        )
        return session

    # ------------------------------------------------------------------ input

    def notify(self, member: str, signature: str, body: list[Any]) -> bool:
        """Send one ``Notify…`` input call on the loop without waiting; False if dropped."""
        if self.closed:
            return False
        if self.in_flight >= MAX_IN_FLIGHT:
            self._dropped += 1
            if self._dropped == 1:
                logger.warning("mutter does not keep up with input: dropping events")
            return False
        self.in_flight += 1
        message = _message(
            REMOTE_DESKTOP, self.session_path, f"{REMOTE_DESKTOP}.Session", member, signature, body
        )
        try:
            future = asyncio.ensure_future(self.bus.call(message))
        except Exception:
            self.in_flight -= 1
            raise
        future.add_done_callback(lambda f: self._answered(f, member))
        return True

    def _answered(self, future: asyncio.Future[Any], member: str) -> None:
        from dbus_fast import MessageType

        self.in_flight -= 1
        self._dropped = 0
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            detail = repr(exc)
        else:
            reply = future.result()
            if reply is None or reply.message_type != MessageType.ERROR:
                return
            detail = f"{reply.error_name}: {reply.body}"
        if not self._error_logged:  # once: a broken session would log every keystroke
            self._error_logged = True
            logger.warning("mutter refused %s: %s", member, detail)

    # ------------------------------------------------------------------ end

    def _on_message(self, message: Message) -> None:
        from dbus_fast import MessageType

        if message.message_type != MessageType.SIGNAL or message.member != "Closed":
            return
        if message.path == self.session_path and not self.closed:
            self.closed = True
            logger.warning("mutter closed the remote desktop session")
            if self.on_closed is not None:
                self.on_closed()

    async def close(self) -> None:
        """Stop the session (mutter removes its stream) and disconnect.  Idempotent."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                await _call(
                    self.bus,
                    _message(
                        REMOTE_DESKTOP, self.session_path, f"{REMOTE_DESKTOP}.Session", "Stop"
                    ),
                    "RemoteDesktop.Session.Stop",
                )
        self.bus.disconnect()


async def _get_property(bus: MessageBus, dest: str, path: str, iface: str, name: str) -> Any:
    (variant,) = await _call(
        bus,
        _message(dest, path, "org.freedesktop.DBus.Properties", "Get", "ss", [iface, name]),
        f"{iface}.{name}",
    )
    return variant.value


async def _start_and_wait_node(bus: MessageBus, session_path: str, stream_path: str) -> int:
    """Start the session and wait for the stream's ``PipeWireStreamAdded(u node_id)``."""
    from dbus_fast import MessageType

    loop = asyncio.get_running_loop()
    node: asyncio.Future[int] = loop.create_future()

    def on_message(message: Message) -> None:
        if message.message_type != MessageType.SIGNAL or node.done():
            return
        if message.path == stream_path and message.member == "PipeWireStreamAdded":
            node.set_result(int(message.body[0]))
        elif message.member == "Closed":
            node.set_exception(ConfigError("mutter closed the session while starting it"))

    for name in (SCREEN_CAST, REMOTE_DESKTOP):
        await _bus_method(bus, "AddMatch", f"type='signal',sender='{name}'")
    bus.add_message_handler(on_message)
    try:
        await _call(
            bus,
            _message(REMOTE_DESKTOP, session_path, f"{REMOTE_DESKTOP}.Session", "Start"),
            "RemoteDesktop.Session.Start (mutter needs a running PipeWire daemon for it)",
        )
        try:
            return await asyncio.wait_for(node, CALL_TIMEOUT)
        except TimeoutError as exc:
            raise ConfigError(
                f"mutter announced no PipeWire stream within {CALL_TIMEOUT:.0f} s: is PipeWire "
                "running in this session?"
            ) from exc
    finally:
        bus.remove_message_handler(on_message)


def _stream_info(node: int, connector: str, params: dict[str, Any]) -> StreamInfo:
    def pair(key: str) -> tuple[int, int]:
        variant = params.get(key)
        if variant is None:
            return 0, 0
        a, b = variant.value
        return int(a), int(b)

    x, y = pair("position")
    width, height = pair("size")
    return StreamInfo(node, connector, x, y, width, height)
