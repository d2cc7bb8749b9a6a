"""The built-in VDAgent's side of the agent stream, sans I/O.

A shared desktop has no guest agent, so the server is the agent: the client's AGENT_DATA
messages carry a stream of ``VDAgentMessage {u32 protocol=1, u32 type, u64 opaque, u32
size}`` + payload (``spice-protocol:spice/vd_agent.h``), which :class:`AgentStream`
reassembles, checks and turns into events (``spiceserver.protocol.events``); what the server
says back is queued here and cut into AGENT_DATA pieces of at most 2048 bytes
(``VD_AGENT_MAX_DATA_SIZE``), every message starting a new piece, as
``spice-gtk:src/channel-main.c`` ``agent_msg_queue_many`` does.

Flow control, both ways (SPICE-REFERENCE-2 1.1):

* Client → server: the client may send :data:`WINDOW_SIZE` AGENT_DATA (MAIN_INIT
  ``agent_tokens``) before it needs an AGENT_TOKEN; we return tokens :data:`TOKENS_TO_SEND`
  at a time as pieces are consumed (libspice's ``REDS_TOKENS_TO_SEND``,
  ``spice:server/reds.cpp``).  The owner may hold them back (:meth:`AgentStream.hold`) while
  file data waits to be written: a fast client then stops, instead of making us buffer.  A
  client sending beyond its tokens is misbehaving: :class:`~spiceserver.errors.AgentProtocolError`
  (the connection closes).  (Tokens go back as soon as five pieces are in, so only while they
  are held can a client overrun them: a client that sends without waiting is otherwise
  indistinguishable from one whose tokens arrived at once.)
* Server → client: each piece costs one of the tokens the client gave in AGENT_START and
  AGENT_TOKEN (spice-gtk gives 0xFFFFFFFF once).  What waits is bounded in bytes; a newer grab,
  release or clipboard answer replaces an unsent older one of the same selection.

What breaks the stream and what only drops a message:

* a header whose ``protocol`` is not 1: the stream is out of step, nothing after it can be
  trusted: :class:`~spiceserver.errors.AgentProtocolError` (the connection closes);
* a message larger than ``max_message_size``: its bytes are skipped as they arrive (nothing is
  buffered) and :class:`~spiceserver.protocol.events.AgentDropped` says so; legal for spice-gtk,
  whose own limit (100 MiB) we cannot lower;
* a known type of the wrong size (``spice-common:common/agent.c`` ``agent_message_check_size``:
  minimum sizes, exact for fixed layouts, +4 for the selection, +4 for a grab serial) or with
  bad contents, an unknown type: dropped with :class:`AgentDropped`;
* a grab whose serial lost a race: discarded silently, as ``spice-vdagent:src/vdagentd/
  vdagentd.c`` ``do_client_clipboard`` does.

Capabilities: we announce exactly what we parse (:data:`SERVER_CAPS`), and a field that depends
on a capability (the selection byte, the grab serial) is read only when both sides announced
it: spice-gtk writes it when the agent announced it, spice-vdagentd reads it when the client did.
Clipboard messages go only to clients with CLIPBOARD_BY_DEMAND; spice-html5 announces only
MOUSE_STATE, MONITORS_CONFIG and REPLY and does not reassemble pieces (``spice-html5:src/main.js``),
and every other message we send is far below 2048 bytes, header included.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from spiceserver.errors import AgentProtocolError
from spiceserver.protocol.enums import (
    AgentCap,
    AgentMsg,
    AgentReplyError,
    FileXferStatus,
    MonitorsConfigFlags,
)
from spiceserver.protocol.events import (
    AgentCapabilities,
    AgentDropped,
    AgentMonitor,
    ClipboardData,
    ClipboardGrab,
    ClipboardRelease,
    ClipboardRequest,
    FileXferCancelled,
    FileXferData,
    FileXferStart,
    MaxClipboard,
    MonitorsConfig,
)

__all__ = [
    "HEADER",
    "MAX_DATA_SIZE",
    "MAX_MONITORS",
    "SERVER_CAPS",
    "TOKENS_TO_SEND",
    "WINDOW_SIZE",
    "AgentStream",
    "parse_file_xfer_start",
]

#: VDAgentMessage: u32 protocol, u32 type, u64 opaque, u32 size.
HEADER = struct.Struct("<IIQI")
VD_AGENT_PROTOCOL = 1
#: ``VD_AGENT_MAX_DATA_SIZE``: the largest AGENT_DATA piece.
MAX_DATA_SIZE = 2048
#: ``REDS_AGENT_WINDOW_SIZE`` (``spice:server/main-channel.h``): tokens in MAIN_INIT.
WINDOW_SIZE = 10
#: ``REDS_TOKENS_TO_SEND``: AGENT_TOKEN is sent once this many pieces were consumed.
TOKENS_TO_SEND = 5
#: ``reds.cpp reds_on_main_agent_monitors_config``: more monitors than this are refused.
MAX_MONITORS = 256
#: FILE_XFER_START's key file, at most (a file name is at most 255 bytes on Linux).
MAX_FILE_XFER_START = 8192
#: What we parse, so what we announce (see the module docstring).
SERVER_CAPS = frozenset(
    {
        AgentCap.MONITORS_CONFIG,
        AgentCap.REPLY,
        AgentCap.CLIPBOARD_BY_DEMAND,
        AgentCap.CLIPBOARD_SELECTION,
        AgentCap.SPARSE_MONITORS_CONFIG,
        # An X desktop's text ends lines with LF: spice-gtk converts to and from the client's
        # own convention (spice-gtk:src/spice-gtk-session.c), so we convert nothing.
        AgentCap.GUEST_LINEEND_LF,
        AgentCap.MAX_CLIPBOARD,
        AgentCap.MONITORS_CONFIG_POSITION,
        AgentCap.FILE_XFER_DETAILED_ERRORS,
        AgentCap.CLIPBOARD_NO_RELEASE_ON_REGRAB,
        AgentCap.CLIPBOARD_GRAB_SERIAL,
    }
)

#: ``spice-common:common/agent.c`` ``agent_message_min_size`` (packed struct sizes).
_MIN_SIZE = {
    AgentMsg.MOUSE_STATE: 13,
    AgentMsg.MONITORS_CONFIG: 8,
    AgentMsg.REPLY: 8,
    AgentMsg.CLIPBOARD: 4,
    AgentMsg.DISPLAY_CONFIG: 8,
    AgentMsg.ANNOUNCE_CAPABILITIES: 4,
    AgentMsg.CLIPBOARD_GRAB: 0,
    AgentMsg.CLIPBOARD_REQUEST: 4,
    AgentMsg.CLIPBOARD_RELEASE: 0,
    AgentMsg.FILE_XFER_START: 4,
    AgentMsg.FILE_XFER_STATUS: 8,
    AgentMsg.FILE_XFER_DATA: 12,
    AgentMsg.CLIENT_DISCONNECTED: 0,
    AgentMsg.MAX_CLIPBOARD: 4,
    AgentMsg.AUDIO_VOLUME_SYNC: 3,
    AgentMsg.GRAPHICS_DEVICE_INFO: 4,
}
#: Fixed layouts: the size must be exactly the minimum (``agent_message_check_size``).
_EXACT = frozenset(
    {
        AgentMsg.MOUSE_STATE,
        AgentMsg.DISPLAY_CONFIG,
        AgentMsg.REPLY,
        AgentMsg.CLIPBOARD_REQUEST,
        AgentMsg.CLIPBOARD_RELEASE,
        AgentMsg.MAX_CLIPBOARD,
        AgentMsg.CLIENT_DISCONNECTED,
    }
)
_CLIPBOARD_MESSAGES = frozenset(
    {
        AgentMsg.CLIPBOARD_GRAB,
        AgentMsg.CLIPBOARD_REQUEST,
        AgentMsg.CLIPBOARD,
        AgentMsg.CLIPBOARD_RELEASE,
    }
)
#: Messages a client may send that we read and drop on purpose, and why.
_IGNORED = {
    # Client mouse mode already carries absolute positions on the inputs channel; an agent
    # mouse only matters to guests without a tablet device.
    AgentMsg.MOUSE_STATE: "the inputs channel carries the pointer",
    # Wallpaper, effects and depth of the client's choice are not ours to change.
    AgentMsg.DISPLAY_CONFIG: "display settings are not applied",
    AgentMsg.REPLY: "replies from a client are not expected",
    AgentMsg.CLIENT_DISCONNECTED: "sent by libspice to guests only",
    AgentMsg.AUDIO_VOLUME_SYNC: "volume is not synchronised",
    AgentMsg.GRAPHICS_DEVICE_INFO: "sent by the host to guests only",
}
_SELECTIONS = 3  # CLIPBOARD, PRIMARY, SECONDARY
_U32 = 0xFFFF_FFFF


@dataclass(slots=True)
class _Outgoing:
    """One queued agent message: its pieces (the first may be in flight)."""

    pieces: collections.deque[bytes]
    size: int
    key: tuple[Any, ...] | None
    serial: int | None = None
    started: bool = False


@dataclass(slots=True)
class _Incoming:
    """The agent message being reassembled (``buffer`` None: skipping an oversized one)."""

    type: int
    size: int
    remaining: int
    buffer: bytearray | None
    head: bytearray = field(default_factory=bytearray)


class AgentStream:
    """One client's agent stream: reassembly, checks, caps, serials, tokens and the queue.

    Input: :meth:`start` (AGENT_START), :meth:`receive` (one AGENT_DATA body),
    :meth:`add_tokens` (AGENT_TOKEN); events come out of :meth:`events`.  Output: the
    clipboard and file-transfer methods queue messages; :meth:`pieces` hands out AGENT_DATA
    bodies within the client's tokens, :meth:`tokens_to_return` the AGENT_TOKEN count due.
    """

    def __init__(
        self,
        *,
        max_message_size: int = 64 * 1024 * 1024,
        max_queue_bytes: int = 64 * 1024 * 1024,
        caps: Iterable[int] = SERVER_CAPS,
        file_xfer: bool = True,
    ) -> None:
        self.max_message_size = max_message_size
        self.max_queue_bytes = max_queue_bytes
        caps = set(caps)
        if not file_xfer:
            caps.add(AgentCap.FILE_XFER_DISABLED)
        self.caps = frozenset(caps)
        self.client_caps: frozenset[int] = frozenset()
        #: The client's MAX_CLIPBOARD (-1: unlimited).
        self.client_max_clipboard = -1
        self._events: list[Any] = []
        self._header = bytearray()
        self._incoming: _Incoming | None = None
        # Client → server tokens: what the client holds, what we owe it.
        self._client_tokens = WINDOW_SIZE
        self._owed = 0
        self._held = False
        # Server → client.
        self._tokens = 0
        self._queue: collections.deque[_Outgoing] = collections.deque()
        self._queued_bytes = 0
        #: One grab counter per selection (vdagentd.c ``clipboard_serial``), for both ways.
        self._serial = [0] * _SELECTIONS
        self._we_own = [False] * _SELECTIONS

    # ------------------------------------------------------------------ capabilities

    def both(self, cap: int) -> bool:
        """Whether we and the client both announced ``cap``."""
        return cap in self.caps and cap in self.client_caps

    def client_has(self, cap: int) -> bool:
        return cap in self.client_caps

    @property
    def clipboard_capable(self) -> bool:
        """Whether clipboard messages may go to this client (spice-html5: no)."""
        return self.both(AgentCap.CLIPBOARD_BY_DEMAND)

    # ------------------------------------------------------------------ input

    def start(self, tokens: int) -> None:
        """AGENT_START: the client's tokens for our AGENT_DATA."""
        self._tokens = tokens

    def add_tokens(self, tokens: int) -> None:
        """AGENT_TOKEN from the client (bounded: a flood cannot make the count grow large)."""
        self._tokens = min(self._tokens + tokens, 2 * _U32)

    def reset_client_tokens(self) -> None:
        """The client was (re)told it has :data:`WINDOW_SIZE` tokens (AGENT_CONNECTED_TOKENS)."""
        self._client_tokens = WINDOW_SIZE
        self._owed = 0

    def receive(self, data: bytes) -> None:
        """One AGENT_DATA body; raises :class:`AgentProtocolError` when the stream breaks."""
        if self._client_tokens <= 0:
            raise AgentProtocolError(
                f"AGENT_DATA beyond the client's tokens ({WINDOW_SIZE} without AGENT_TOKEN)"
            )
        self._client_tokens -= 1
        self._owed += 1
        view = memoryview(data)
        while view:
            incoming = self._incoming
            if incoming is None:
                need = HEADER.size - len(self._header)
                self._header += view[:need]
                view = view[need:]
                if len(self._header) < HEADER.size:
                    return
                protocol, type_, _opaque, size = HEADER.unpack(self._header)
                self._header.clear()
                if protocol != VD_AGENT_PROTOCOL:
                    raise AgentProtocolError(f"agent message with protocol {protocol}, not 1")
                keep = size <= self.max_message_size
                incoming = self._incoming = _Incoming(
                    type_, size, size, bytearray() if keep else None
                )
                if not keep and type_ != AgentMsg.CLIPBOARD:  # clipboard: once complete
                    self._drop(type_, size, f"over the {self.max_message_size}-byte bound")
                if size == 0:
                    self._complete()
                    continue
            take = view[: incoming.remaining]
            view = view[len(take) :]
            incoming.remaining -= len(take)
            if incoming.buffer is not None:
                incoming.buffer += take
            elif len(incoming.head) < 8:
                incoming.head += take[: 8 - len(incoming.head)]
            if incoming.remaining == 0:
                self._complete()

    def _complete(self) -> None:
        incoming = self._incoming
        assert incoming is not None
        self._incoming = None
        if incoming.buffer is None:
            if incoming.type == AgentMsg.CLIPBOARD:
                self._dropped_clipboard(bytes(incoming.head), incoming.size)
            return
        self._message(incoming.type, bytes(incoming.buffer))

    def _dropped_clipboard(self, head: bytes, size: int) -> None:
        """Oversized clipboard data, skipped: say which selection's request failed."""
        selection = 0
        if self.both(AgentCap.CLIPBOARD_SELECTION) and head:
            selection = head[0]
        reason = f"clipboard data over the {self.max_message_size}-byte bound"
        self._events.append(AgentDropped(AgentMsg.CLIPBOARD, size, reason, selection=selection))

    def _drop(self, type_: int, size: int, reason: str) -> None:
        self._events.append(AgentDropped(type_, size, reason))

    def _message(self, type_: int, payload: bytes) -> None:
        size = len(payload)
        if type_ not in _MIN_SIZE:
            self._drop(type_, size, "unknown agent message type")
            return
        kind = AgentMsg(type_)
        minimum = _MIN_SIZE[kind]
        selection_field = kind in _CLIPBOARD_MESSAGES and self.both(AgentCap.CLIPBOARD_SELECTION)
        if selection_field:
            minimum += 4
        if kind == AgentMsg.CLIPBOARD_GRAB and self.both(AgentCap.CLIPBOARD_GRAB_SERIAL):
            minimum += 4
        if size < minimum or (kind in _EXACT and size != minimum):
            self._drop(type_, size, f"{kind.name} of {size} bytes (expected {minimum})")
            return
        if kind in _IGNORED:
            if kind == AgentMsg.DISPLAY_CONFIG:  # it expects a REPLY: not applied
                self.reply(AgentMsg.DISPLAY_CONFIG, AgentReplyError.ERROR)
            self._drop(type_, size, f"{kind.name} ignored: {_IGNORED[kind]}")
            return
        if kind in _CLIPBOARD_MESSAGES:
            selection = 0
            if selection_field:
                selection = payload[0]
                payload = payload[4:]
            if selection >= _SELECTIONS:
                self._drop(type_, size, f"{kind.name} for unknown selection {selection}")
                return
            _CLIPBOARD_HANDLERS[kind](self, selection, payload)
            return
        _HANDLERS[kind](self, payload)

    def _on_caps(self, payload: bytes) -> None:
        (request,) = struct.unpack_from("<I", payload)
        words = struct.unpack_from(f"<{(len(payload) - 4) // 4}I", payload, 4)
        self.client_caps = frozenset(
            i * 32 + bit for i, word in enumerate(words) for bit in range(32) if word >> bit & 1
        )
        if request:
            # The client's agent side (re)started: serials start over (vdagentd.c).
            self._serial = [0] * _SELECTIONS
            self._we_own = [False] * _SELECTIONS
            self.announce(request=False)
        self._events.append(AgentCapabilities(self.client_caps, bool(request)))

    def _on_max_clipboard(self, payload: bytes) -> None:
        (value,) = struct.unpack("<i", payload)
        self.client_max_clipboard = value
        self._events.append(MaxClipboard(value))

    def _on_monitors(self, payload: bytes) -> None:
        count, flags = struct.unpack_from("<II", payload)
        flags &= MonitorsConfigFlags.USE_POS | MonitorsConfigFlags.PHYSICAL_SIZE
        if count > MAX_MONITORS:
            self._drop(AgentMsg.MONITORS_CONFIG, len(payload), f"{count} monitors (max 256)")
            self.reply(AgentMsg.MONITORS_CONFIG, AgentReplyError.ERROR)
            return
        physical = bool(flags & MonitorsConfigFlags.PHYSICAL_SIZE)
        need = 8 + count * (20 + (4 if physical else 0))
        if len(payload) < need:
            self._drop(AgentMsg.MONITORS_CONFIG, len(payload), f"{count} monitors truncated")
            self.reply(AgentMsg.MONITORS_CONFIG, AgentReplyError.ERROR)
            return
        monitors = []
        mm_at = 8 + count * 20
        for index in range(count):
            # VDAgentMonConfig: height first (vd_agent.h).
            height, width, depth, x, y = struct.unpack_from("<IIIii", payload, 8 + index * 20)
            height_mm = width_mm = 0
            if physical:
                height_mm, width_mm = struct.unpack_from("<HH", payload, mm_at + index * 4)
            monitors.append(AgentMonitor(index, width, height, depth, x, y, width_mm, height_mm))
        self.reply(AgentMsg.MONITORS_CONFIG, AgentReplyError.SUCCESS)
        self._events.append(MonitorsConfig(tuple(monitors), int(flags)))

    def _on_file_start(self, payload: bytes) -> None:
        (xfer_id,) = struct.unpack_from("<I", payload)
        if AgentCap.FILE_XFER_DISABLED in self.caps:
            self.file_status(xfer_id, FileXferStatus.DISABLED)
            self._drop(AgentMsg.FILE_XFER_START, len(payload), "file transfer is off")
            return
        parsed = parse_file_xfer_start(payload[4:])
        if isinstance(parsed, str):
            self.file_status(xfer_id, FileXferStatus.ERROR, error_code=_G_IO_INVALID_ARGUMENT)
            self._drop(AgentMsg.FILE_XFER_START, len(payload), parsed)
            return
        self._events.append(FileXferStart(xfer_id, *parsed))

    def _on_file_data(self, payload: bytes) -> None:
        xfer_id, size = struct.unpack_from("<IQ", payload)
        if size != len(payload) - 12:
            self._drop(AgentMsg.FILE_XFER_DATA, len(payload), "data size field is wrong")
            self._events.append(FileXferCancelled(xfer_id, FileXferStatus.ERROR))
            self.file_status(xfer_id, FileXferStatus.ERROR, error_code=_G_IO_INVALID_ARGUMENT)
            return
        self._events.append(FileXferData(xfer_id, payload[12:]))

    def _on_file_status(self, payload: bytes) -> None:
        xfer_id, result = struct.unpack_from("<II", payload)
        self._events.append(FileXferCancelled(xfer_id, result))

    def _on_grab(self, selection: int, payload: bytes) -> None:
        if self.both(AgentCap.CLIPBOARD_GRAB_SERIAL):
            (serial,) = struct.unpack_from("<I", payload)
            payload = payload[4:]
            mine = self._serial[selection]
            if serial == mine:
                self._serial[selection] = (mine + 1) & _U32
            elif serial != (mine - 1) & _U32:  # mine - 1: our grab crossed it; client wins
                return  # a race it lost (vdagentd.c: "grab discard")
        if len(payload) % 4:
            self._drop(AgentMsg.CLIPBOARD_GRAB, len(payload), "types not a multiple of 4 bytes")
            return
        types = struct.unpack(f"<{len(payload) // 4}I", payload)
        self._we_own[selection] = False
        self._events.append(ClipboardGrab(selection, tuple(dict.fromkeys(types))))

    def _on_request(self, selection: int, payload: bytes) -> None:
        (type_,) = struct.unpack("<I", payload)
        self._events.append(ClipboardRequest(selection, type_))

    def _on_clipboard(self, selection: int, payload: bytes) -> None:
        (type_,) = struct.unpack_from("<I", payload)
        self._events.append(ClipboardData(selection, type_, payload[4:]))

    def _on_release(self, selection: int, payload: bytes) -> None:
        self._events.append(ClipboardRelease(selection))

    def events(self) -> list[Any]:
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------------ client tokens

    def hold(self, held: bool) -> None:
        """Hold back (True) or give back (False) the client's tokens: backpressure."""
        self._held = held

    def tokens_to_return(self) -> int:
        """The AGENT_TOKEN count due now (0: none); counted as given."""
        if self._held or self._owed < TOKENS_TO_SEND:
            return 0
        owed, self._owed = self._owed, 0
        self._client_tokens += owed
        return owed

    # ------------------------------------------------------------------ output

    def announce(self, *, request: bool) -> None:
        bits = 0
        for cap in self.caps:
            bits |= 1 << cap
        words = [(bits >> (32 * i)) & _U32 for i in range(max(1, (bits.bit_length() + 31) // 32))]
        self._queue_message(
            AgentMsg.ANNOUNCE_CAPABILITIES, struct.pack(f"<I{len(words)}I", request, *words)
        )

    def reply(self, type_: int, error: int) -> None:
        self._queue_message(AgentMsg.REPLY, struct.pack("<II", type_, error))

    def _selection_prefix(self, selection: int) -> bytes | None:
        """The selection field, or None when this selection cannot be named to the client."""
        if self.both(AgentCap.CLIPBOARD_SELECTION):
            return struct.pack("<B3x", selection)
        return b"" if selection == 0 else None

    def grab(self, selection: int, types: Iterable[int]) -> bool:
        """Offer our ``selection`` with ``types``; False if this client cannot take it."""
        prefix = self._selection_prefix(selection)
        if prefix is None or not self.clipboard_capable:
            return False
        key = ("owner", selection)
        dropped = self._supersede(key)
        if dropped is not None and dropped.serial is not None:
            self._serial[selection] = dropped.serial  # it never left: reuse its serial
        if self._we_own[selection] and not self.both(AgentCap.CLIPBOARD_NO_RELEASE_ON_REGRAB):
            self._queue_message(AgentMsg.CLIPBOARD_RELEASE, prefix)
        serial = None
        if self.both(AgentCap.CLIPBOARD_GRAB_SERIAL):
            serial = self._serial[selection]
            prefix += struct.pack("<I", serial)
            self._serial[selection] = (serial + 1) & _U32
        body = prefix + b"".join(struct.pack("<I", t) for t in types)
        if not self._queue_message(AgentMsg.CLIPBOARD_GRAB, body, key=key, serial=serial):
            return False
        self._we_own[selection] = True
        return True

    def release(self, selection: int) -> bool:
        """We no longer own ``selection`` (only sent if we told this client we did)."""
        prefix = self._selection_prefix(selection)
        if prefix is None or not self.clipboard_capable or not self._we_own[selection]:
            return False
        key = ("owner", selection)
        dropped = self._supersede(key)
        self._we_own[selection] = False
        if dropped is not None and dropped.serial is not None:
            self._serial[selection] = dropped.serial
            if not any(o.key == key for o in self._queue):
                return True  # the grab never left: nothing to release
        return self._queue_message(AgentMsg.CLIPBOARD_RELEASE, prefix, key=key)

    def request(self, selection: int, type_: int) -> bool:
        """Ask the client for its ``selection`` data of ``type_`` (answered by ClipboardData)."""
        prefix = self._selection_prefix(selection)
        if prefix is None or not self.clipboard_capable:
            return False
        return self._queue_message(
            AgentMsg.CLIPBOARD_REQUEST, prefix + struct.pack("<I", type_), key=None
        )

    def clipboard(self, selection: int, type_: int, data: bytes | None) -> bool:
        """Answer the client's request; ``data`` None (or over the client's MAX_CLIPBOARD)
        answers type NONE, so the client stops waiting (spice-vdagent does the same)."""
        prefix = self._selection_prefix(selection)
        if prefix is None or not self.clipboard_capable:
            return False
        limit = self.client_max_clipboard
        if data is None or (limit >= 0 and len(data) > limit):
            type_, data = 0, b""
        body = prefix + struct.pack("<I", type_) + data
        if self._queue_message(AgentMsg.CLIPBOARD, body, key=("data", selection, type_)):
            return True
        if data:  # over our queue bound: say "none" rather than leave the client waiting
            self._queue_message(AgentMsg.CLIPBOARD, prefix + struct.pack("<I", 0))
        return False

    def file_status(
        self,
        xfer_id: int,
        result: int,
        *,
        free: int | None = None,
        error_code: int | None = None,
    ) -> None:
        """FILE_XFER_STATUS; details only for clients with DETAILED_ERRORS, which others get
        as plain ERROR (``spice-common:common/agent.c`` ``agent_prepare_filexfer_status``)."""
        detailed = self.both(AgentCap.FILE_XFER_DETAILED_ERRORS)
        body = struct.pack("<II", xfer_id, result)
        if not detailed:
            if result >= FileXferStatus.NOT_ENOUGH_SPACE:
                body = struct.pack("<II", xfer_id, FileXferStatus.ERROR)
        elif result == FileXferStatus.NOT_ENOUGH_SPACE:
            body += struct.pack("<Q", free or 0)
        elif result == FileXferStatus.ERROR and error_code is not None:
            body += struct.pack("<BI", _ERROR_GLIB_IO, error_code)
        self._queue_message(AgentMsg.FILE_XFER_STATUS, body)

    def _supersede(self, key: tuple[Any, ...]) -> _Outgoing | None:
        """Drop the unsent queued message with ``key`` (latest wins); the one dropped."""
        for item in self._queue:
            if item.key == key and not item.started:
                self._queue.remove(item)
                self._queued_bytes -= item.size
                return item
        return None

    def _queue_message(
        self,
        type_: int,
        payload: bytes,
        *,
        key: tuple[Any, ...] | None = None,
        serial: int | None = None,
    ) -> bool:
        if key is not None:
            self._supersede(key)
        message = HEADER.pack(VD_AGENT_PROTOCOL, type_, 0, len(payload)) + payload
        if self._queued_bytes + len(message) > self.max_queue_bytes:
            return False
        pieces = collections.deque(
            message[i : i + MAX_DATA_SIZE] for i in range(0, len(message), MAX_DATA_SIZE)
        )
        self._queue.append(_Outgoing(pieces, len(message), key, serial))
        self._queued_bytes += len(message)
        return True

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def pieces(self, budget: int) -> list[bytes]:
        """AGENT_DATA bodies to send now: within the client's tokens and about ``budget``
        bytes (at least one piece if any token is left)."""
        out: list[bytes] = []
        sent = 0
        queue = self._queue
        while queue and self._tokens > 0 and (not out or sent < budget):
            item = queue[0]
            piece = item.pieces.popleft()
            item.started = True
            out.append(piece)
            sent += len(piece)
            self._tokens -= 1
            if not item.pieces:
                queue.popleft()
                self._queued_bytes -= item.size
        return out

    @property
    def pending(self) -> bool:
        """Whether pieces are waiting (for tokens or for room in the connection)."""
        return bool(self._queue)


#: VDAgentFileXferStatusError ``error_type``: a GLib GIOErrorEnum code follows.
_ERROR_GLIB_IO = 0
#: GIOErrorEnum G_IO_ERROR_INVALID_ARGUMENT (gio/gioenums.h).
_G_IO_INVALID_ARGUMENT = 13

_HANDLERS = {
    AgentMsg.ANNOUNCE_CAPABILITIES: AgentStream._on_caps,
    AgentMsg.MAX_CLIPBOARD: AgentStream._on_max_clipboard,
    AgentMsg.MONITORS_CONFIG: AgentStream._on_monitors,
    AgentMsg.FILE_XFER_START: AgentStream._on_file_start,
    AgentMsg.FILE_XFER_DATA: AgentStream._on_file_data,
    AgentMsg.FILE_XFER_STATUS: AgentStream._on_file_status,
}
_CLIPBOARD_HANDLERS = {
    AgentMsg.CLIPBOARD_GRAB: AgentStream._on_grab,
    AgentMsg.CLIPBOARD_REQUEST: AgentStream._on_request,
    AgentMsg.CLIPBOARD: AgentStream._on_clipboard,
    AgentMsg.CLIPBOARD_RELEASE: AgentStream._on_release,
}

_KEYFILE_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _unescape(value: str) -> str | None:
    """A GKeyFile string value (glib's ``g_key_file_parse_value_as_string``); None if bad."""
    out = []
    chars = iter(value)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, None)
        if escaped not in _KEYFILE_ESCAPES:
            return None
        out.append(_KEYFILE_ESCAPES[escaped])
    return "".join(out)


def parse_file_xfer_start(data: bytes) -> tuple[str, int] | str:
    """(name, size) from FILE_XFER_START's NUL-terminated key file
    (``[vdagent-file-xfer]`` with ``name=`` and ``size=``, ``spice-gtk:src/
    spice-file-transfer-task.c``), or why it is refused.  The name is returned as sent:
    making it safe for a directory is the file sink's job."""
    if len(data) > MAX_FILE_XFER_START:
        return f"file transfer header of {len(data)} bytes"
    end = data.find(b"\0")
    if end >= 0:
        data = data[:end]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "file transfer header is not UTF-8"
    group = None
    values: dict[str, str] = {}
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1]
            continue
        key, sep, value = raw.lstrip().partition("=")
        if not sep:
            return "malformed line in the file transfer header"
        if group == "vdagent-file-xfer":
            values[key.strip()] = value.lstrip(" \t")
    name = _unescape(values.get("name", ""))
    size_text = values.get("size", "").strip()
    if not name:
        return "file transfer without a name"
    if not size_text.isdigit() or not size_text.isascii() or len(size_text) > 19:
        return "file transfer without a valid size"
    return name, int(size_text)
