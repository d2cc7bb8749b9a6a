"""The built-in agent's server side: per session, the agent stream's events; per server, the
clipboard hub and the file-transfer worker.

:class:`AgentServices` lives in the server context (``context.agent``; None with
``agent=False``).  Each main channel gets an :class:`~spiceserver.protocol.agent.AgentStream`
(:meth:`AgentServices.stream`) and a :class:`SessionAgent`, which answers the stream's events:
clipboard through the :class:`~spiceserver.server.clipboard_hub.ClipboardHub`, monitors configs
to ``context.layout``, files to :class:`~spiceserver.server.filexfer.FileTransfers`.

Output is paced: the stream's pieces go to the connection while it has less than
:data:`HIGH_WATER` bytes unsent (a 5 MB clipboard must not cross the main channel's 1 MiB
write limit), the rest follows as the transport drains.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spiceserver.clipboard import ClipboardBackend, ClipboardType, Selection
from spiceserver.logs import skip
from spiceserver.protocol.agent import SERVER_CAPS, AgentStream
from spiceserver.protocol.enums import AgentCap, AgentMsg
from spiceserver.protocol.events import (
    AgentCapabilities,
    AgentDropped,
    ClipboardData,
    ClipboardGrab,
    ClipboardRelease,
    ClipboardRequest,
    FileXferCancelled,
    FileXferData,
    FileXferStart,
    MonitorsConfig,
)
from spiceserver.record import clipboard_grab_record, clipboard_transfer_record
from spiceserver.server.clipboard_hub import ClipboardHub, known_types
from spiceserver.server.filexfer import FileTransfers, OnFile, default_download_dir
from spiceserver.sources.base import Head

if TYPE_CHECKING:
    from spiceserver.config import ServerConfig
    from spiceserver.server.channels.main import MainHandler

__all__ = ["HIGH_WATER", "AgentServices", "SessionAgent", "heads_from_monitors"]

logger = logging.getLogger("spiceserver.agent")

#: Unsent bytes of the main connection below which more agent pieces are queued.
HIGH_WATER = 256 * 1024
#: Bytes of pieces queued per step.
_STEP = 64 * 1024
#: Seconds between steps while the connection is above HIGH_WATER.
_PACE = 0.005
#: Clipboard capabilities, announced only when there is a clipboard backend.
_CLIPBOARD_CAPS = frozenset(
    {
        AgentCap.CLIPBOARD_BY_DEMAND,
        AgentCap.CLIPBOARD_SELECTION,
        AgentCap.GUEST_LINEEND_LF,
        AgentCap.MAX_CLIPBOARD,
        AgentCap.CLIPBOARD_NO_RELEASE_ON_REGRAB,
        AgentCap.CLIPBOARD_GRAB_SERIAL,
    }
)
#: Agent message bytes beyond the clipboard data itself (header, selection, type).
_OVERHEAD = 64 * 1024

_DROPPED = "%s: agent message %s (%d bytes) dropped: %s"
_TIMEOUT = "%s: the client did not send its clipboard within %g s"


def heads_from_monitors(config: MonitorsConfig) -> tuple[Head, ...]:
    """The client's enabled monitors as heads, in client order (disabled: 0 width/height)."""
    return tuple(
        Head(mon.x, mon.y, mon.width, mon.height, mon.width_mm, mon.height_mm)
        for mon in config.monitors
        if mon.width and mon.height
    )


class AgentServices:
    """What every session's agent shares: the clipboard hub, the file worker, the options."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        clipboard: ClipboardBackend | None = None,
        on_file: OnFile | None = None,
    ) -> None:
        self.config = config
        self.hub = (
            None
            if clipboard is None
            else ClipboardHub(clipboard, max_bytes=config.clipboard_max_bytes)
        )
        self.on_file = on_file
        self.file_transfer = on_file is not None or config.file_transfer_dir is not None
        self._directory: Path | None = None
        # One worker: a file's chunks are written in order (FIFO).
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self.hub is not None:
            self.hub.start()

    async def close(self) -> None:
        if self.hub is not None:
            await self.hub.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spice-files")
        return self._executor

    def directory(self) -> Path:
        """Where files go (resolved once, on the worker thread: ``xdg-user-dir`` runs)."""
        if self._directory is None:
            configured = self.config.file_transfer_dir
            self._directory = Path(configured) if configured else default_download_dir()
        return self._directory

    def stream(self) -> AgentStream:
        """A new client's agent stream, announcing what this server handles."""
        caps = set(SERVER_CAPS)
        if self.hub is None:
            caps -= _CLIPBOARD_CAPS
        limit = self.config.clipboard_max_bytes + _OVERHEAD
        return AgentStream(
            max_message_size=limit,
            max_queue_bytes=limit,
            caps=caps,
            file_xfer=self.file_transfer,
        )


class SessionAgent:
    """One client's agent: answers its stream's events, paces its output."""

    def __init__(self, handler: MainHandler, services: AgentServices, stream: AgentStream):
        self.handler = handler
        self.services = services
        self.stream = stream
        self.name = handler.connection.name
        self.hub = services.hub
        self._loop = asyncio.get_running_loop()
        self._fetches: dict[tuple[int, int], asyncio.Future[bytes | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pacing: asyncio.TimerHandle | None = None
        self._joined = False
        self._closed = False
        config = services.config
        self.files = (
            None
            if not services.file_transfer
            else FileTransfers(
                stream,
                name=self.name,
                executor=services.executor,
                directory=services.directory,
                on_file=services.on_file,
                max_size=config.file_transfer_max,
                max_active=config.file_transfer_max_active,
                idle_timeout=config.file_transfer_timeout,
                changed=self.pump,
                record=self.record,
            )
        )

    # ------------------------------------------------------------------ events

    def on_event(self, event: Any) -> bool:
        """Handle one event if it is the agent's; False if it is not."""
        handler = _EVENTS.get(type(event))
        if handler is None:
            return False
        handler(self, event)
        return True

    def _on_caps(self, event: AgentCapabilities) -> None:
        # request=1: the client's agent side (re)started and forgot our grabs: offer again.
        if (
            self.hub is not None
            and self.stream.clipboard_capable
            and (event.request or not self._joined)
        ):
            self._joined = True
            self.hub.joined(self)

    def _on_grab(self, event: ClipboardGrab) -> None:
        if self.hub is None:
            return
        self.record(clipboard_grab_record("client", event.selection, event.types))
        self._fail_fetches(event.selection)  # what we asked of the old grab is void
        self.hub.client_grabbed(self, Selection(event.selection), event.types)

    def _on_release(self, event: ClipboardRelease) -> None:
        if self.hub is not None:
            self._fail_fetches(event.selection)
            self.hub.client_released(self, Selection(event.selection))

    def _on_request(self, event: ClipboardRequest) -> None:
        if self.hub is None or event.type not in known_types((event.type,)):
            self.stream.clipboard(event.selection, event.type, None)
            self.pump()
            return
        self._spawn(self._answer(event.selection, ClipboardType(event.type)))

    async def _answer(self, selection: int, type_: ClipboardType) -> None:
        assert self.hub is not None
        data = await self.hub.read(self, Selection(selection), type_)
        if self._closed:
            return
        if data is not None:
            self.record(clipboard_transfer_record("to_client", selection, type_, len(data)))
        if not self.stream.clipboard(selection, type_, data) and data is not None:
            logger.warning("%s: clipboard of %d bytes not sent: queue full", self.name, len(data))
        self.pump()

    def _on_data(self, event: ClipboardData) -> None:
        if event.data:
            self.record(
                clipboard_transfer_record(
                    "from_client", event.selection, event.type, len(event.data)
                )
            )
        future = self._fetches.pop((event.selection, event.type), None)
        if future is not None and not future.done():
            future.set_result(event.data)
        if event.type == 0 or future is None:  # NONE, or an answer of another type: void
            self._fail_fetches(event.selection)

    def _on_monitors(self, event: MonitorsConfig) -> None:
        heads = heads_from_monitors(event)
        self.record(
            {
                "event": "monitors_config",
                "heads": [[h.x, h.y, h.width, h.height] for h in heads],
            }
        )
        if heads:
            self.handler.context.layout.request(self.handler.session, heads)

    def _on_file_start(self, event: FileXferStart) -> None:
        if self.files is not None:
            self.files.start(event)

    def _on_file_data(self, event: FileXferData) -> None:
        if self.files is not None:
            self.files.data(event)

    def _on_file_cancel(self, event: FileXferCancelled) -> None:
        if self.files is not None:
            self.files.cancelled(event)

    def _on_dropped(self, event: AgentDropped) -> None:
        if event.selection is not None:
            self._fail_fetches(event.selection)
        if not skip(logger, logging.INFO, _DROPPED):
            try:
                kind = AgentMsg(event.type).name
            except ValueError:
                kind = str(event.type)
            level = logging.DEBUG if "ignored" in event.reason else logging.INFO
            logger.log(level, _DROPPED, self.name, kind, event.size, event.reason)

    # ------------------------------------------------------------------ the hub's calls

    def offer(self, selection: Selection, types: tuple[ClipboardType, ...]) -> None:
        if self.stream.grab(selection, types):
            self.record(clipboard_grab_record("desktop", selection, types))
        self.pump()

    def withdraw(self, selection: Selection) -> None:
        if self.stream.release(selection):
            self.pump()

    async def fetch(self, selection: Selection, type: ClipboardType) -> bytes | None:
        """The client's data of ``type`` for ``selection`` (None after the timeout)."""
        if self._closed:
            return None
        key = (int(selection), int(type))
        future = self._fetches.get(key)
        if future is None:
            if not self.stream.request(selection, type):
                return None
            future = self._fetches[key] = self._loop.create_future()
            self.pump()
        timeout = self.services.config.clipboard_timeout
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            if self._fetches.get(key) is future:
                del self._fetches[key]
            if not skip(logger, logging.INFO, _TIMEOUT):
                logger.info(_TIMEOUT, self.name, timeout)
            return None

    def _fail_fetches(self, selection: int) -> None:
        for key in [k for k in self._fetches if k[0] == selection]:
            future = self._fetches.pop(key)
            if not future.done():
                future.set_result(None)

    def record(self, event: dict[str, Any]) -> None:
        if self.handler.context.recorders:
            self.handler.record(event)

    # ------------------------------------------------------------------ output

    def pump(self) -> None:
        """Move queued pieces to the connection while it has room; tokens due go too."""
        if self._closed:
            return
        connection = self.handler.connection
        channel = self.handler.channel
        if connection.closed:
            return
        while self.stream.pending and connection.buffered() < HIGH_WATER:
            if not channel.send_agent(_STEP):
                break  # out of the client's tokens: its AGENT_TOKEN calls pump again
            connection.flush()
        channel.return_agent_tokens()
        connection.flush()
        if self.stream.pending and connection.buffered() >= HIGH_WATER and self._pacing is None:
            self._pacing = self._loop.call_later(_PACE, self._paced)

    def _paced(self) -> None:
        self._pacing = None
        self.pump()

    def _spawn(self, coroutine: Any) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        self._closed = True
        if self._pacing is not None:
            self._pacing.cancel()
        for future in self._fetches.values():
            if not future.done():
                future.set_result(None)
        self._fetches.clear()
        for task in self._tasks:
            task.cancel()
        if self.hub is not None:
            self.hub.left(self)
        if self.files is not None:
            self.files.close()


_EVENTS: dict[type, Callable[[SessionAgent, Any], None]] = {
    AgentCapabilities: SessionAgent._on_caps,
    ClipboardGrab: SessionAgent._on_grab,
    ClipboardRelease: SessionAgent._on_release,
    ClipboardRequest: SessionAgent._on_request,
    ClipboardData: SessionAgent._on_data,
    MonitorsConfig: SessionAgent._on_monitors,
    FileXferStart: SessionAgent._on_file_start,
    FileXferData: SessionAgent._on_file_data,
    FileXferCancelled: SessionAgent._on_file_cancel,
    AgentDropped: SessionAgent._on_dropped,
}
