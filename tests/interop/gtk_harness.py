#!/usr/bin/python3
"""Headless spice-gtk client speaking line-delimited JSON, for interop tests.

Run with Debian's ``/usr/bin/python3`` (it needs ``python3-gi`` and
``gir1.2-spiceclientglib-2.0``; stdlib + gi only, no numpy)::

    /usr/bin/python3 gtk_harness.py spice://127.0.0.1:5900 [--password-env VAR]

Protocol
--------
stdout: one JSON object per line, always flushed.  Every object has an
``"event"`` key and a ``"t"`` key (``time.monotonic()`` of the harness).

* ``ready``            harness started, session connect requested
* ``channel-new``      {channel, type, id}
* ``channel-destroy``  {channel, type, id}
* ``channel-event``    {channel, type, id, channel_event (enum nick, e.g.
  ``opened``, ``error-auth``), name (``SPICE_CHANNEL_ERROR_AUTH``), error
  (GError text, when there is one)}
* ``primary-create``   {format, width, height, stride, shmid, serial}
* ``primary-destroy``  {serial}
* ``invalidate``       {x, y, w, h, serial}
* ``mark``             {mark, serial}
* ``monitors``         {display, monitors: [{id, surface_id, x, y, width, height}], max}:
  the display channel's ``monitors`` / ``monitors-max`` after each MONITORS_CONFIG
* ``cursor-set``       {width, height, hot_x, hot_y, sha256 (RGBA bytes, or
  null for the default cursor)}
* ``cursor-move``      {x, y}; ``cursor-hide``; ``cursor-reset``
* ``mouse-mode``       {mode (1 = server, 2 = client), name}
* ``inputs-modifiers`` {modifiers}
* ``agent-update``     {connected, caps0 (the agent's first caps word; 0 until they came)}
* ``clipboard``        {selection, type, size, sha256, path}: the agent's CLIPBOARD data
  (``main-clipboard-selection``), written to ``path`` in ``--clipboard-dir``
* ``clipboard-grab``   {selection, types}; ``clipboard-release`` {selection}
* ``clipboard-request`` {selection, type, answered}: the agent asked for data we offered
* ``file-copy-done``   {ok, error}: the end of a ``file_copy`` command's transfer;
  ``file-transfer-finished`` {name, error}: each file's own result (the agent's status)
* ``playback-start``   {format, channels, rate}; ``playback-stop``
* ``playback-data``    {size, total (PCM bytes so far)}: with ``--playback-pcm PATH`` the
  decoded PCM is appended to PATH (and flushed) before the event
* ``record-start``     {format, channels, rate}; ``record-stop``
* ``record-sent``      {total (PCM bytes handed to RecordChannel.send_data so far)}, every
  ~100 ms while ``--record-tone HZ`` plays that sine as the client's microphone
* ``log``              {domain, level, message} for GLib warnings/criticals
* ``disconnected``     the session is gone; the harness then exits
* ``error``            {message, traceback?}; also the reply to a failed command
* ``ok`` / ``dumped``  replies to commands

``serial`` counts display updates (primary-create, invalidate, mark) so a
client can wait for "anything newer than the frame I dumped".

stdin: one JSON command per line, e.g. ``{"cmd": "key_press", "scancode": 30,
"id": 7}``.  Every command gets exactly one reply (``ok``, ``dumped`` or
``error``) carrying ``cmd`` and the command's ``id`` when given.  Commands:
``dump`` {path}, ``key_press`` / ``key_release`` / ``key_press_and_release``
{scancode}, ``position`` {x, y, buttons, display}, ``motion`` {dx, dy,
buttons}, ``button_press`` / ``button_release`` {button, buttons},
``set_key_locks`` {locks}, ``request_mouse_mode`` {mode}, ``ping``, ``quit``;
the agent: ``clipboard_grab`` {selection, data: {type: path}} (offers the files' contents
by type), ``clipboard_request`` {selection, type}, ``clipboard_release`` {selection},
``file_copy`` {paths} (``file_copy_async``), ``monitors`` {displays: [{id, x, y, width,
height, enabled}]} (``update_display*`` + ``send_monitor_config``).

Scancodes are PC XT (set 1) make codes as spice-gtk expects them; for
``0xe0``-prefixed keys drop the prefix and OR with ``0x100`` (spice-gtk
builds the SPICE key codes, including the release bit, itself).

Exit codes: 0 after ``quit``, stdin EOF or SIGTERM/SIGINT; 2 when the main
channel reported an error (connect, TLS, link, auth, I/O); 3 when the server
disconnected without an error event; 1 on an internal failure.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import gi

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gtk_agent import AgentCommands  # noqa: E402  (run as a script, next to this file)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONNECT_ERROR = 2
EXIT_DISCONNECTED = 3

MOUSE_MODE_NAMES = {1: "server", 2: "client"}
ERROR_EVENTS = {
    SpiceClientGLib.ChannelEvent.ERROR_CONNECT,
    SpiceClientGLib.ChannelEvent.ERROR_TLS,
    SpiceClientGLib.ChannelEvent.ERROR_LINK,
    SpiceClientGLib.ChannelEvent.ERROR_AUTH,
    SpiceClientGLib.ChannelEvent.ERROR_IO,
}


def emit(event: str, **fields: Any) -> None:
    """Write one JSON event line to stdout and flush it."""
    obj: dict[str, Any] = {"event": event, "t": round(time.monotonic(), 6)}
    obj.update(fields)
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a GLib callback so that exceptions become ``error`` events.

    A Python exception escaping a GI callback is only printed to stderr by
    PyGObject, which would make a test wait silently until its timeout.
    """

    def wrapper(*args: Any) -> Any:
        try:
            return func(*args)
        except Exception as exc:
            emit(
                "error",
                where=func.__name__,
                message=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
            # keep GLib sources installed; signal handlers ignore the value
            return True

    wrapper.__name__ = func.__name__
    return wrapper


def channel_info(channel: SpiceClientGLib.Channel) -> dict[str, Any]:
    ctype = int(channel.get_property("channel-type"))
    return {
        "channel": SpiceClientGLib.Channel.type_to_string(ctype),
        "type": ctype,
        "id": int(channel.get_property("channel-id")),
    }


def gsignal(obj: GObject.Object, name: str, handler: Callable[..., Any]) -> int:
    """Connect a GObject signal.

    ``SpiceSession.connect`` and ``SpiceChannel.connect`` are the SPICE
    *network* connect methods and shadow ``GObject.Object.connect`` in
    PyGObject, so signal connections must go through the base class.
    """
    return GObject.Object.connect(obj, name, guarded(handler))


class _GArray(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_uint)]


class _MonitorConfig(ctypes.Structure):
    """SpiceDisplayMonitorConfig (spice-gtk:src/channel-display.h)."""

    _fields_ = [(name, ctypes.c_uint) for name in ("id", "surface_id", "x", "y", "width", "height")]


def _monitor_configs(channel: SpiceClientGLib.DisplayChannel) -> list[_MonitorConfig]:
    """The display channel's ``monitors`` property.  PyGObject cannot unpack a GArray of
    structs from a property (it gives nothing), so it is read with g_object_get."""
    gobject = ctypes.CDLL("libgobject-2.0.so.0")
    glib = ctypes.CDLL("libglib-2.0.so.0")
    gobject.g_object_get.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_void_p,
    ]
    glib.g_array_unref.argtypes = [ctypes.c_void_p]
    capsule = ctypes.pythonapi.PyCapsule_GetPointer
    capsule.restype = ctypes.c_void_p
    capsule.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = capsule(channel.__gpointer__, None)
    array = ctypes.c_void_p()
    gobject.g_object_get(address, b"monitors", ctypes.byref(array), None)
    if not array.value:
        return []
    try:
        garray = _GArray.from_address(array.value)
        items = (_MonitorConfig * garray.len).from_address(garray.data or 0)
        return [_MonitorConfig.from_buffer_copy(item) for item in items]
    finally:
        glib.g_array_unref(array)


class Harness(AgentCommands):
    emit = staticmethod(emit)
    gsignal = staticmethod(gsignal)
    guarded = staticmethod(guarded)

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = GLib.MainLoop()
        self.exit_code = EXIT_OK
        self.session = SpiceClientGLib.Session()
        self.channels: dict[tuple[int, int], SpiceClientGLib.Channel] = {}
        self.open_channels: set[tuple[int, int]] = set()
        self.main_error: str | None = None
        self.stdin_buf = b""
        self.serial = 0
        # primary surface of display channel id -> (format, w, h, stride, address)
        self.primaries: dict[int, tuple[int, int, int, int, int]] = {}
        self.inputs: SpiceClientGLib.InputsChannel | None = None
        self.main: SpiceClientGLib.MainChannel | None = None
        self.quitting = False
        self.pcm = None if args.playback_pcm is None else open(args.playback_pcm, "wb")  # noqa: SIM115
        self.pcm_total = 0
        # --record-tone: the client's microphone is a sine fed through send_data.
        self.record: SpiceClientGLib.RecordChannel | None = None
        self.record_timer = 0
        self.record_started = 0.0
        self.record_frames = 0
        # The agent: what we offer by (selection, type), and received clipboards so far.
        self.offered: dict[tuple[int, int], bytes] = {}
        self.clipboards = 0

    # -- setup -------------------------------------------------------------

    def configure_session(self) -> None:
        args = self.args
        session = self.session
        session.set_property("uri", args.uri)
        password = args.password
        if args.password_env:
            password = os.environ.get(args.password_env, "")
        if password is not None:
            session.set_property("password", password)
        # Do not try to open audio devices or grab USB devices on a test box.
        session.set_property("enable-audio", False)
        session.set_property("enable-usbredir", False)
        session.set_property("enable-smartcard", False)
        # TLS hook: a tls-port (or ?tls-port= in the URI) makes spice-gtk
        # use TLS for the channels listed in secure-channels (or all, if the
        # server demands it).
        if args.tls_port is not None:
            session.set_property("tls-port", str(args.tls_port))
        if args.ca_file:
            session.set_property("ca-file", args.ca_file)
        if args.cert_subject:
            session.set_property("cert-subject", args.cert_subject)
        if args.secure_channels:
            session.set_property("secure-channels", args.secure_channels.split(","))
        if args.verify:
            flags = 0
            for name in args.verify.split(","):
                flags |= int(getattr(SpiceClientGLib.SessionVerify, name.strip().upper()))
            session.set_property("verify", flags)
        for item in args.session_prop:
            name, _, raw = item.partition("=")
            self.set_typed_property(session, name, raw)

    @staticmethod
    def set_typed_property(obj: GObject.Object, name: str, raw: str) -> None:
        pspec = obj.find_property(name)
        if pspec is None:
            raise ValueError(f"unknown session property {name!r}")
        vtype = pspec.value_type
        value: Any
        if vtype == GObject.TYPE_BOOLEAN:
            value = raw.lower() in ("1", "true", "yes", "on")
        elif vtype.fundamental in (
            GObject.TYPE_INT,
            GObject.TYPE_UINT,
            GObject.TYPE_INT64,
            GObject.TYPE_UINT64,
            GObject.TYPE_LONG,
            GObject.TYPE_ULONG,
            GObject.TYPE_ENUM,
            GObject.TYPE_FLAGS,
        ):
            value = int(raw, 0)
        elif vtype == GObject.TYPE_STRV:
            value = raw.split(",") if raw else []
        else:
            value = raw
        obj.set_property(name, value)

    def install(self) -> None:
        levels = (
            GLib.LogLevelFlags.LEVEL_WARNING
            | GLib.LogLevelFlags.LEVEL_CRITICAL
            | GLib.LogLevelFlags.LEVEL_ERROR
            | GLib.LogLevelFlags.FLAG_FATAL
            | GLib.LogLevelFlags.FLAG_RECURSION
        )
        for domain in ("GSpice", "Spice", "GLib", "GLib-GObject", "GLib-GIO"):
            GLib.log_set_handler(domain, levels, self.on_log, None)
        gsignal(self.session, "channel-new", self.on_channel_new)
        gsignal(self.session, "channel-destroy", self.on_channel_destroy)
        gsignal(self.session, "disconnected", self.on_disconnected)
        GLib.io_add_watch(
            GLib.IOChannel.unix_new(sys.stdin.fileno()),
            GLib.PRIORITY_DEFAULT,
            GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
            guarded(self.on_stdin),
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, guarded(self.on_signal), signum)

    def run(self) -> int:
        self.configure_session()
        self.install()
        if not self.session.connect():  # spice_session_connect()
            emit("error", message="spice_session_connect() returned FALSE")
            return EXIT_CONNECT_ERROR
        emit("ready", uri=self.args.uri, version=SpiceClientGLib.util_get_version_string())
        self.loop.run()
        return self.exit_code

    def finish(self, code: int) -> None:
        if self.quitting:
            return
        self.quitting = True
        self.exit_code = code
        self.loop.quit()

    # -- session / channel signals ------------------------------------------

    def on_log(
        self, domain: str | None, level: GLib.LogLevelFlags, message: str, *_user: Any
    ) -> None:
        lvl = int(level)
        if lvl & GLib.LogLevelFlags.LEVEL_ERROR:
            name = "error"
        elif lvl & GLib.LogLevelFlags.LEVEL_CRITICAL:
            name = "critical"
        else:
            name = "warning"
        sys.stderr.write(f"{domain}-{name.upper()}: {message}\n")
        sys.stderr.flush()
        emit("log", domain=domain, level=name, message=message)

    def on_channel_new(
        self, _session: SpiceClientGLib.Session, channel: SpiceClientGLib.Channel
    ) -> None:
        info = channel_info(channel)
        key = (info["type"], info["id"])
        self.channels[key] = channel
        emit("channel-new", **info)
        gsignal(channel, "channel-event", self.on_channel_event)
        if isinstance(channel, SpiceClientGLib.MainChannel):
            self.main = channel
            gsignal(channel, "notify::mouse-mode", self.on_mouse_mode)
            gsignal(channel, "main-agent-update", self.on_agent_update)
            self.connect_agent_signals(channel)
            # spice_session_connect() already connects the main channel
            return
        if isinstance(channel, SpiceClientGLib.DisplayChannel):
            cid = info["id"]
            gsignal(
                channel, "display-primary-create", lambda ch, *a: self.on_primary_create(cid, *a)
            )
            gsignal(channel, "display-primary-destroy", lambda ch: self.on_primary_destroy(cid))
            gsignal(
                channel,
                "display-invalidate",
                lambda ch, x, y, w, h: self.on_invalidate(cid, x, y, w, h),
            )
            gsignal(channel, "display-mark", lambda ch, mark: self.on_mark(cid, mark))
            gsignal(channel, "notify::monitors", lambda ch, _pspec: self.on_monitors(cid, ch))
        elif isinstance(channel, SpiceClientGLib.CursorChannel):
            gsignal(channel, "cursor-set", self.on_cursor_set)
            gsignal(
                channel, "cursor-move", lambda ch, x, y: emit("cursor-move", x=int(x), y=int(y))
            )
            gsignal(channel, "cursor-hide", lambda ch: emit("cursor-hide"))
            gsignal(channel, "cursor-reset", lambda ch: emit("cursor-reset"))
        elif isinstance(channel, SpiceClientGLib.PlaybackChannel):
            gsignal(channel, "playback-start", self.on_playback_start)
            gsignal(channel, "playback-data", self.on_playback_data)
            gsignal(channel, "playback-stop", lambda ch: emit("playback-stop"))
        elif isinstance(channel, SpiceClientGLib.RecordChannel):
            gsignal(channel, "record-start", self.on_record_start)
            gsignal(channel, "record-stop", self.on_record_stop)
        elif isinstance(channel, SpiceClientGLib.InputsChannel):
            self.inputs = channel
            gsignal(
                channel,
                "inputs-modifiers",
                lambda ch: emit(
                    "inputs-modifiers", modifiers=int(ch.get_property("key-modifiers"))
                ),
            )
        wanted = self.args.channels
        if wanted and info["channel"] not in wanted.split(","):
            emit("channel-skipped", **info)
            return
        # Unlike the main channel, the others must be connected by the app.
        if not channel.connect():  # spice_channel_connect()
            emit("error", message=f"spice_channel_connect failed for {info['channel']}")

    def on_channel_destroy(
        self, _session: SpiceClientGLib.Session, channel: SpiceClientGLib.Channel
    ) -> None:
        info = channel_info(channel)
        key = (info["type"], info["id"])
        self.channels.pop(key, None)
        self.open_channels.discard(key)
        if channel is self.inputs:
            self.inputs = None
        if channel is self.main:
            self.main = None
        emit("channel-destroy", **info)

    def on_channel_event(
        self, channel: SpiceClientGLib.Channel, event: SpiceClientGLib.ChannelEvent
    ) -> None:
        info = channel_info(channel)
        key = (info["type"], info["id"])
        fields: dict[str, Any] = dict(info)
        # the JSON line's own "event" key is taken, so the nick goes here
        fields["channel_event"] = event.value_nick
        fields["name"] = event.value_name
        if event == SpiceClientGLib.ChannelEvent.OPENED:
            self.open_channels.add(key)
        elif event in ERROR_EVENTS or event == SpiceClientGLib.ChannelEvent.CLOSED:
            self.open_channels.discard(key)
        err = channel.get_error()
        if err is not None:
            fields["error"] = err.message
        emit("channel-event", **fields)
        if not isinstance(channel, SpiceClientGLib.MainChannel):
            return
        if event in ERROR_EVENTS:
            self.main_error = event.value_nick
            emit(
                "error",
                message=f"main channel {event.value_nick}"
                + (f": {err.message}" if err is not None else ""),
                channel_event=event.value_nick,
            )
        if event in ERROR_EVENTS or event == SpiceClientGLib.ChannelEvent.CLOSED:
            # Like virt-viewer: the session is over once the main channel is.
            # spice_session_disconnect() leads to "disconnected", where we
            # exit; do not hang should that never come.
            self.session.disconnect()
            GLib.timeout_add(3000, guarded(self.force_exit))

    def force_exit(self) -> bool:
        emit("error", message="no 'disconnected' signal 3 s after the main channel ended")
        self.finish(EXIT_CONNECT_ERROR if self.main_error else EXIT_DISCONNECTED)
        return False

    def on_disconnected(self, _session: SpiceClientGLib.Session) -> None:
        emit("disconnected", main_error=self.main_error)
        if self.main_error is not None:
            self.finish(EXIT_CONNECT_ERROR)
        elif self.quitting:
            pass
        else:
            self.finish(EXIT_DISCONNECTED)

    def on_mouse_mode(self, channel: SpiceClientGLib.MainChannel, _pspec: Any) -> None:
        mode = int(channel.get_property("mouse-mode"))
        emit("mouse-mode", mode=mode, name=MOUSE_MODE_NAMES.get(mode, str(mode)))

    def on_agent_update(self, channel: SpiceClientGLib.MainChannel) -> None:
        # spice-gtk emits it again once the agent's capabilities arrived (caps0 then nonzero);
        # before that it drops clipboard grabs.
        emit(
            "agent-update",
            connected=bool(channel.get_property("agent-connected")),
            caps0=int(channel.get_property("agent-caps-0")),
        )

    def on_primary_create(
        self,
        cid: int,
        fmt: int,
        width: int,
        height: int,
        stride: int,
        shmid: int,
        imgdata: int | None,
    ) -> None:
        # imgdata arrives as a plain int (gpointer); it stays valid until
        # display-primary-destroy, and spice-gtk updates it in place.
        self.serial += 1
        self.primaries[cid] = (int(fmt), int(width), int(height), int(stride), int(imgdata or 0))
        emit(
            "primary-create",
            display=cid,
            format=int(fmt),
            width=int(width),
            height=int(height),
            stride=int(stride),
            shmid=int(shmid),
            serial=self.serial,
        )

    def on_primary_destroy(self, cid: int) -> None:
        self.serial += 1
        self.primaries.pop(cid, None)
        emit("primary-destroy", display=cid, serial=self.serial)

    def on_invalidate(self, cid: int, x: int, y: int, w: int, h: int) -> None:
        self.serial += 1
        emit("invalidate", display=cid, x=int(x), y=int(y), w=int(w), h=int(h), serial=self.serial)

    def on_mark(self, cid: int, mark: int) -> None:
        self.serial += 1
        emit("mark", display=cid, mark=int(mark), serial=self.serial)

    def on_monitors(self, cid: int, channel: SpiceClientGLib.DisplayChannel) -> None:
        # The display MONITORS_CONFIG as spice-gtk stored it (channel-display.c
        # display_handle_monitors_config): a GArray of SpiceDisplayMonitorConfig.
        heads = [
            {
                "id": int(mc.id),
                "surface_id": int(mc.surface_id),
                "x": int(mc.x),
                "y": int(mc.y),
                "width": int(mc.width),
                "height": int(mc.height),
            }
            for mc in _monitor_configs(channel)
        ]
        emit(
            "monitors",
            display=cid,
            monitors=heads,
            max=int(channel.get_property("monitors-max")),
        )

    # -- cursor --------------------------------------------------------------

    def on_cursor_set(
        self,
        _channel: SpiceClientGLib.CursorChannel,
        width: int,
        height: int,
        hot_x: int,
        hot_y: int,
        rgba: int | None,
    ) -> None:
        digest = None
        if rgba:
            # spice-gtk hands a width*height*4 byte buffer, R,G,B,A byte order,
            # which is freed after the signal returns: hash it right now.
            digest = hashlib.sha256(ctypes.string_at(rgba, 4 * width * height)).hexdigest()
        emit(
            "cursor-set",
            width=int(width),
            height=int(height),
            hot_x=int(hot_x),
            hot_y=int(hot_y),
            sha256=digest,
        )

    # -- stdin commands ------------------------------------------------------

    def on_playback_start(
        self, _channel: SpiceClientGLib.PlaybackChannel, fmt: int, channels: int, rate: int
    ) -> None:
        emit("playback-start", format=int(fmt), channels=int(channels), rate=int(rate))

    def on_playback_data(
        self, _channel: SpiceClientGLib.PlaybackChannel, data: int, size: int
    ) -> None:
        # The gpointer arrives as an int: copy the PCM out before returning.
        if self.pcm is not None:
            self.pcm.write(ctypes.string_at(data, size))
            self.pcm.flush()
        self.pcm_total += int(size)
        emit("playback-data", size=int(size), total=self.pcm_total)

    def on_record_start(
        self, channel: SpiceClientGLib.RecordChannel, fmt: int, channels: int, rate: int
    ) -> None:
        emit("record-start", format=int(fmt), channels=int(channels), rate=int(rate))
        if self.args.record_tone is None or self.record_timer:
            return
        self.record = channel
        self.record_started = time.monotonic()
        self.record_frames = 0
        self.record_timer = GLib.timeout_add(10, guarded(self.send_record_tone))

    def on_record_stop(self, _channel: SpiceClientGLib.RecordChannel) -> None:
        emit("record-stop")
        if self.record_timer:
            GLib.source_remove(self.record_timer)
            self.record_timer = 0

    def send_record_tone(self) -> bool:
        """Hand spice-gtk the sine's frames due by now (paced on the clock, not the timer:
        spice-gtk cuts them into 480-frame packets itself, spice-gtk:src/channel-record.c)."""
        channel = self.record
        assert channel is not None
        due = int((time.monotonic() - self.record_started) * 48000)
        count = due - self.record_frames
        if count <= 0:
            return True
        omega = 2 * math.pi * float(self.args.record_tone) / 48000
        start = self.record_frames
        pcm = bytearray()
        for i in range(start, start + count):
            value = int(0.3 * 32767 * math.sin(omega * i))
            pcm += value.to_bytes(2, "little", signed=True) * 2  # left, right
        buffer = ctypes.create_string_buffer(bytes(pcm), len(pcm))
        mm_time = int(time.monotonic() * 1000) & 0xFFFFFFFF
        channel.send_data(ctypes.addressof(buffer), len(pcm), mm_time)
        before = self.record_frames * 4 // 19200
        self.record_frames = start + count
        if self.record_frames * 4 // 19200 != before:  # every 100 ms
            emit("record-sent", total=self.record_frames * 4)
        return True

    def on_signal(self, signum: int) -> bool:
        emit("signal", signum=int(signum))
        self.finish(EXIT_OK)
        return False

    def on_stdin(self, _source: GLib.IOChannel, condition: GLib.IOCondition) -> bool:
        data = b""
        if condition & GLib.IOCondition.IN:
            data = os.read(sys.stdin.fileno(), 65536)
        if not data:
            if self.stdin_buf.strip():
                self.handle_line(self.stdin_buf)
            self.stdin_buf = b""
            emit("stdin-eof")
            self.finish(EXIT_OK)
            return False
        self.stdin_buf += data
        while b"\n" in self.stdin_buf:
            line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
            if line.strip():
                self.handle_line(line)
        return True

    def handle_line(self, line: bytes) -> None:
        cmd_id: Any = None
        name = "?"
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
                raise ValueError("command must be a JSON object with a string 'cmd'")
            cmd_id = cmd.get("id")
            name = cmd["cmd"]
            handler = getattr(self, "cmd_" + name, None)
            if handler is None:
                raise ValueError(f"unknown command {name!r}")
            reply = handler(cmd) or {}
        except Exception as exc:
            fields: dict[str, Any] = {"cmd": name, "message": f"{type(exc).__name__}: {exc}"}
            if not isinstance(exc, (ValueError, KeyError, TypeError, RuntimeError)):
                fields["traceback"] = traceback.format_exc()
            if cmd_id is not None:
                fields["id"] = cmd_id
            emit("error", **fields)
            return
        event = reply.pop("event", "ok")
        reply["cmd"] = name
        if cmd_id is not None:
            reply["id"] = cmd_id
        emit(event, **reply)

    def require_inputs(self) -> SpiceClientGLib.InputsChannel:
        ch = self.inputs
        if ch is None:
            raise RuntimeError("no inputs channel")
        key = (int(ch.get_property("channel-type")), int(ch.get_property("channel-id")))
        if key not in self.open_channels:
            # spice-gtk silently drops input on a channel that is not ready
            raise RuntimeError("inputs channel is not open")
        return ch

    def cmd_ping(self, _cmd: dict[str, Any]) -> dict[str, Any]:
        return {"serial": self.serial}

    def cmd_quit(self, _cmd: dict[str, Any]) -> dict[str, Any]:
        self.finish(EXIT_OK)
        return {}

    def cmd_dump(self, cmd: dict[str, Any]) -> dict[str, Any]:
        path = str(cmd["path"])
        cid = int(cmd.get("display", 0))
        prim = self.primaries.get(cid)
        if prim is None or not prim[4]:
            raise RuntimeError(f"no primary surface on display {cid}")
        fmt, width, height, stride, addr = prim
        data = ctypes.string_at(addr, stride * height)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return {
            "event": "dumped",
            "path": path,
            "display": cid,
            "format": fmt,
            "width": width,
            "height": height,
            "stride": stride,
            "sha256": hashlib.sha256(data).hexdigest(),
            "serial": self.serial,
        }

    def cmd_key_press(self, cmd: dict[str, Any]) -> None:
        self.require_inputs().key_press(int(cmd["scancode"]))

    def cmd_key_release(self, cmd: dict[str, Any]) -> None:
        self.require_inputs().key_release(int(cmd["scancode"]))

    def cmd_key_press_and_release(self, cmd: dict[str, Any]) -> None:
        self.require_inputs().key_press_and_release(int(cmd["scancode"]))

    def cmd_position(self, cmd: dict[str, Any]) -> None:
        self.require_inputs().position(
            int(cmd["x"]), int(cmd["y"]), int(cmd.get("display", 0)), int(cmd.get("buttons", 0))
        )

    def cmd_motion(self, cmd: dict[str, Any]) -> None:
        self.require_inputs().motion(int(cmd["dx"]), int(cmd["dy"]), int(cmd.get("buttons", 0)))

    def cmd_button_press(self, cmd: dict[str, Any]) -> None:
        self.require_inputs().button_press(int(cmd["button"]), int(cmd.get("buttons", 0)))

    def cmd_button_release(self, cmd: dict[str, Any]) -> None:
        self.require_inputs().button_release(int(cmd["button"]), int(cmd.get("buttons", 0)))

    def cmd_set_key_locks(self, cmd: dict[str, Any]) -> None:
        self.require_inputs().set_key_locks(int(cmd["locks"]))

    def cmd_request_mouse_mode(self, cmd: dict[str, Any]) -> None:
        if self.main is None:
            raise RuntimeError("no main channel")
        self.main.request_mouse_mode(int(cmd["mode"]))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("uri", help="spice://HOST:PORT (may carry ?password=&tls-port=)")
    p.add_argument("--password", default=None, help="ticket password (visible in ps)")
    p.add_argument(
        "--password-env", default=None, help="name of an environment variable holding the password"
    )
    p.add_argument(
        "--channels",
        default="",
        help="comma list of channel names to connect besides main (default: all the server offers)",
    )
    p.add_argument("--tls-port", type=int, default=None)
    p.add_argument("--ca-file", default=None)
    p.add_argument("--cert-subject", default=None)
    p.add_argument("--secure-channels", default=None, help="comma list, e.g. main,display")
    p.add_argument(
        "--verify",
        default=None,
        help="comma list of SpiceSessionVerify names: pubkey,hostname,subject",
    )
    p.add_argument(
        "--session-prop",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set any SpiceSession property (repeatable)",
    )
    p.add_argument(
        "--playback-pcm", default=None, help="append the playback channel's PCM to this file"
    )
    p.add_argument(
        "--record-tone",
        type=float,
        default=None,
        metavar="HZ",
        help="once the record channel starts, feed a sine of HZ as the microphone (send_data)",
    )
    p.add_argument("--clipboard-dir", default=None, help="where received clipboard data is written")
    p.add_argument("--debug", action="store_true", help="spice-gtk debug output on stderr")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.debug:
        SpiceClientGLib.util_set_debug(True)
    try:
        return Harness(args).run()
    except Exception as exc:
        emit("error", message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
