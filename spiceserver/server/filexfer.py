"""Files a client drops into the session (agent FILE_XFER_*), saved in a directory.

As ``spice-vdagent:src/vdagent/file-xfers.c`` does: the default directory is the XDG download
directory (``xdg-user-dir DOWNLOAD``, else ``~/Downloads``), a name that exists gets
" (1)", " (2)" … before its extension (never overwritten), and the free space is checked
first (``statvfs``: NOT_ENOUGH_SPACE with the free bytes).  Beyond spice-vdagent: names are
reduced to a safe base name (:func:`safe_name`), a size cap (``file_transfer_max``, answered
NOT_ENOUGH_SPACE with what the cap allows), a bounded number of transfers at once per
session, an idle timeout, and partial files removed on any failure, cancellation or
disconnect.

Writes happen on one worker thread (FIFO, so each file's chunks land in order); bytes handed to
it but not yet written are bounded per session: above ``HOLD_BYTES`` the client's agent
tokens are held back (``AgentStream.hold``), so a fast client waits instead of filling memory.
An embedder may take files through ``on_file(name, data)`` instead (whole files in memory,
capped by the same size limit).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import shutil
import subprocess
import unicodedata
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spiceserver.logs import skip
from spiceserver.protocol.agent import AgentStream
from spiceserver.protocol.enums import FileXferStatus
from spiceserver.protocol.events import FileXferCancelled, FileXferData, FileXferStart
from spiceserver.record import file_transfer_record

__all__ = ["HOLD_BYTES", "FileTransfers", "OnFile", "default_download_dir", "safe_name"]

logger = logging.getLogger("spiceserver.files")

#: ``on_file(name, data)``: an embedder's sink for received files (may be a coroutine).
OnFile = Callable[[str, bytes], Awaitable[None] | None]

#: Unwritten bytes of one session above which its agent tokens are held back.
HOLD_BYTES = 1024 * 1024
#: GIOErrorEnum codes (``gio/gioenums.h``) for FILE_XFER_STATUS ERROR details.
G_IO_ERROR_FAILED = 0
G_IO_ERROR_INVALID_ARGUMENT = 13
G_IO_ERROR_PERMISSION_DENIED = 14
G_IO_ERROR_TIMED_OUT = 24
G_IO_ERROR_BUSY = 26
#: Most bytes of a name (Linux NAME_MAX).
_NAME_MAX = 255
#: Most " (n)" suffixes tried before giving up.
_MAX_SUFFIX = 1000

_UNEXPECTED = "%s: file transfer %d: %s"


def default_download_dir() -> Path:
    """``xdg-user-dir DOWNLOAD`` when it answers with a directory, else ``~/Downloads``."""
    tool = shutil.which("xdg-user-dir")
    if tool is not None:
        try:
            out = subprocess.run(
                [tool, "DOWNLOAD"], capture_output=True, text=True, timeout=5, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and Path(out) != Path.home():  # xdg-user-dir answers $HOME when unset
            return Path(out)
    return Path.home() / "Downloads"


def safe_name(name: str) -> str:
    """A base name that is safe in any directory: the last path component (``/`` and ``\\``
    both separate), without control characters or NUL, without leading dots or spaces (no
    hidden files, no ``..``), at most 255 bytes of UTF-8 (keeping the extension); "file"
    when nothing is left."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    base = base.lstrip(". \t").rstrip(" \t")
    if not base:
        return "file"
    if len(base.encode()) > _NAME_MAX:
        stem, dot, ext = base.rpartition(".")
        ext = dot + ext if dot and len(ext.encode()) < 32 else ""
        stem = base[: len(base) - len(ext)] if ext else base
        while len((stem + ext).encode()) > _NAME_MAX:
            stem = stem[:-1]
        base = stem + ext
    return base


def _candidates(name: str) -> Any:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    else:
        ext = "." + ext
    yield name
    for n in range(1, _MAX_SUFFIX):
        candidate = f"{stem} ({n}){ext}"
        while len(candidate.encode()) > _NAME_MAX:
            stem = stem[:-1]
            candidate = f"{stem} ({n}){ext}"
        yield candidate


@dataclass(slots=True)
class _Opened:
    path: Path
    fd: int


@dataclass(slots=True)
class _Refused:
    status: int
    free: int | None = None
    code: int | None = None
    reason: str = ""


def _open_target(directory: Path, name: str, size: int, cap: int) -> _Opened | _Refused:
    """On the worker thread: check space, create the file exclusively (never overwrite)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        stat = os.statvfs(directory)
    except OSError as exc:
        return _Refused(FileXferStatus.ERROR, code=G_IO_ERROR_FAILED, reason=str(exc))
    free = stat.f_bavail * stat.f_frsize
    if size > free:
        return _Refused(FileXferStatus.NOT_ENOUGH_SPACE, free=free, reason=f"{free} bytes free")
    if size > cap:
        return _Refused(FileXferStatus.NOT_ENOUGH_SPACE, free=cap, reason="over the size cap")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for candidate in _candidates(name):
        path = directory / candidate
        try:
            return _Opened(path, os.open(path, flags, 0o644))
        except FileExistsError:
            continue
        except OSError as exc:
            code = G_IO_ERROR_PERMISSION_DENIED
            return _Refused(FileXferStatus.ERROR, code=code, reason=str(exc))
    return _Refused(FileXferStatus.ERROR, code=G_IO_ERROR_FAILED, reason="no free name")


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _discard(fd: int | None, path: Path | None) -> None:
    if fd is not None:
        os.close(fd)
    if path is not None:
        path.unlink(missing_ok=True)


@dataclass(eq=False, slots=True)
class _Transfer:
    id: int
    name: str
    size: int
    received: int = 0
    #: Directory mode: where it goes and its descriptor (None until opened / in memory).
    path: Path | None = None
    fd: int | None = None
    #: Callback mode: the whole file.
    data: bytearray | None = None
    opening: bool = True
    ended: bool = False
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class FileTransfers:
    """One session's file transfers, over its :class:`AgentStream`."""

    def __init__(
        self,
        stream: AgentStream,
        *,
        name: str,
        executor: Executor,
        directory: Callable[[], Path],
        on_file: OnFile | None,
        max_size: int,
        max_active: int,
        idle_timeout: float,
        changed: Callable[[], None],
        record: Callable[[dict[str, Any]], None],
    ) -> None:
        self.stream = stream
        self.name = name
        self.executor = executor
        self.directory = directory
        self.on_file = on_file
        self.max_size = max_size
        self.max_active = max_active
        self.idle_timeout = idle_timeout
        #: Output was queued (status) or tokens may flow again: the owner sends.
        self.changed = changed
        self.record = record
        self.active: dict[int, _Transfer] = {}
        #: Bytes handed to the worker and not written yet.
        self.unwritten = 0
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Future[Any]] = set()

    # ------------------------------------------------------------------ client events

    def start(self, event: FileXferStart) -> None:
        if event.id in self.active:
            self._status(event.id, FileXferStatus.ERROR, code=G_IO_ERROR_INVALID_ARGUMENT)
            self._log("a second start of the same id")
            return
        if len(self.active) >= self.max_active:
            self._status(event.id, FileXferStatus.ERROR, code=G_IO_ERROR_BUSY)
            self._end_record(safe_name(event.name), event.size, "too_many")
            return
        if event.size > self.max_size:
            self._status(event.id, FileXferStatus.NOT_ENOUGH_SPACE, free=self.max_size)
            self._end_record(safe_name(event.name), event.size, "over_size_cap")
            logger.info(
                "%s: file %r refused: %d bytes, over file_transfer_max (%d)",
                self.name,
                safe_name(event.name),
                event.size,
                self.max_size,
            )
            return
        transfer = _Transfer(event.id, safe_name(event.name), event.size)
        self.active[event.id] = transfer
        self._arm(transfer)
        if self.on_file is not None:
            transfer.data = bytearray()
            self._opened(transfer)
            return
        future = self._loop.run_in_executor(
            self.executor,
            lambda: _open_target(self.directory(), transfer.name, event.size, self.max_size),
        )
        self._keep(future)
        future.add_done_callback(lambda f: self._after_open(transfer, f))

    def _after_open(self, transfer: _Transfer, future: asyncio.Future[_Opened | _Refused]) -> None:
        if future.cancelled():
            return
        result = future.result()
        if isinstance(result, _Opened):
            transfer.path, transfer.fd = result.path, result.fd
            if transfer.ended:  # cancelled or disconnected while opening
                self._cleanup(transfer)
                return
            self._opened(transfer)
            return
        self.active.pop(transfer.id, None)
        self._disarm(transfer)
        if transfer.ended:
            return
        transfer.ended = True
        self._status(transfer.id, result.status, free=result.free, code=result.code)
        result_name = FileXferStatus(result.status).name.lower()
        self._end_record(transfer.name, transfer.size, result_name)
        logger.info("%s: file %r refused: %s", self.name, transfer.name, result.reason)

    def _opened(self, transfer: _Transfer) -> None:
        transfer.opening = False
        self._status(transfer.id, FileXferStatus.CAN_SEND_DATA)
        if transfer.size == 0:
            self._finish(transfer)

    def data(self, event: FileXferData) -> None:
        transfer = self.active.get(event.id)
        if transfer is None or transfer.ended or transfer.opening:
            self._log("data for no open transfer")
            return
        if transfer.received + len(event.data) > transfer.size:
            self._fail(transfer, "more data than announced", G_IO_ERROR_INVALID_ARGUMENT)
            return
        transfer.received += len(event.data)
        self._arm(transfer)
        if transfer.data is not None:
            transfer.data += event.data
        else:
            self.unwritten += len(event.data)
            self.stream.hold(self.unwritten > HOLD_BYTES)
            fd, chunk = transfer.fd, event.data
            assert fd is not None
            future = self._loop.run_in_executor(self.executor, _write, fd, chunk)
            self._keep(future)
            future.add_done_callback(lambda f: self._written(transfer, len(chunk), f))
        if transfer.received == transfer.size:
            self._finish(transfer)

    def _written(self, transfer: _Transfer, size: int, future: asyncio.Future[None]) -> None:
        self.unwritten -= size
        held = self.unwritten > HOLD_BYTES
        self.stream.hold(held)
        if not held:
            self.changed()  # tokens held back may go now
        if future.cancelled() or transfer.ended:
            return
        exc = future.exception()
        if exc is not None:
            self._fail(transfer, f"write failed: {exc}", G_IO_ERROR_FAILED)

    def cancelled(self, event: FileXferCancelled) -> None:
        transfer = self.active.pop(event.id, None)
        if transfer is None:
            return
        transfer.ended = True
        self._disarm(transfer)
        self._cleanup(transfer)
        self._end_record(transfer.name, transfer.size, "cancelled")
        logger.info("%s: file %r cancelled by the client", self.name, transfer.name)

    def close(self) -> None:
        """The session ended: partial files are removed."""
        for transfer in list(self.active.values()):
            transfer.ended = True
            self._disarm(transfer)
            self._cleanup(transfer)
            self._end_record(transfer.name, transfer.size, "disconnected")
        self.active.clear()

    # ------------------------------------------------------------------ ends

    def _finish(self, transfer: _Transfer) -> None:
        self._disarm(transfer)
        if transfer.data is not None:
            task = self._loop.create_task(self._deliver(transfer))
            self._keep(task)
            return
        fd, transfer.fd = transfer.fd, None
        assert fd is not None
        future = self._loop.run_in_executor(self.executor, os.close, fd)
        self._keep(future)
        future.add_done_callback(lambda f: self._closed(transfer, f))

    def _closed(self, transfer: _Transfer, future: asyncio.Future[None]) -> None:
        if transfer.ended:
            return
        if not future.cancelled() and future.exception() is not None:
            self._fail(transfer, f"close failed: {future.exception()}", G_IO_ERROR_FAILED)
            return
        self._succeeded(transfer)

    async def _deliver(self, transfer: _Transfer) -> None:
        assert self.on_file is not None and transfer.data is not None
        try:
            result = self.on_file(transfer.name, bytes(transfer.data))
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("%s: on_file failed for %r", self.name, transfer.name)
            if not transfer.ended:
                self._fail(transfer, "on_file failed", G_IO_ERROR_FAILED)
            return
        if not transfer.ended:
            self._succeeded(transfer)

    def _succeeded(self, transfer: _Transfer) -> None:
        transfer.ended = True
        self.active.pop(transfer.id, None)
        self._status(transfer.id, FileXferStatus.SUCCESS)
        where = transfer.path if transfer.path is not None else "on_file"
        logger.info("%s: file received: %s (%d bytes)", self.name, where, transfer.size)
        self._end_record(
            transfer.path.name if transfer.path else transfer.name, transfer.size, "success"
        )

    def _fail(self, transfer: _Transfer, reason: str, code: int) -> None:
        transfer.ended = True
        self.active.pop(transfer.id, None)
        self._disarm(transfer)
        self._status(transfer.id, FileXferStatus.ERROR, code=code)
        self._cleanup(transfer)
        self._end_record(transfer.name, transfer.size, "error")
        logger.warning("%s: file %r failed: %s", self.name, transfer.name, reason)

    def _cleanup(self, transfer: _Transfer) -> None:
        transfer.data = None
        if transfer.opening and transfer.fd is None:
            return  # the open still runs: _after_open cleans up
        fd, transfer.fd = transfer.fd, None
        path, transfer.path = transfer.path, None
        if fd is not None or path is not None:
            self._keep(self._loop.run_in_executor(self.executor, _discard, fd, path))

    # ------------------------------------------------------------------ helpers

    def _arm(self, transfer: _Transfer) -> None:
        self._disarm(transfer)
        transfer.timer = self._loop.call_later(self.idle_timeout, self._idle, transfer)

    def _disarm(self, transfer: _Transfer) -> None:
        if transfer.timer is not None:
            transfer.timer.cancel()
            transfer.timer = None

    def _idle(self, transfer: _Transfer) -> None:
        transfer.timer = None
        if not transfer.ended:
            self._fail(transfer, f"no data for {self.idle_timeout:g} s", G_IO_ERROR_TIMED_OUT)
            self.changed()

    def _status(
        self, xfer_id: int, result: int, *, free: int | None = None, code: int | None = None
    ) -> None:
        self.stream.file_status(xfer_id, result, free=free, error_code=code)
        self.changed()

    def _end_record(self, name: str, size: int, result: str) -> None:
        self.record(file_transfer_record(name, size, result))

    def _log(self, what: str) -> None:
        if not skip(logger, logging.DEBUG, _UNEXPECTED):
            logger.debug(_UNEXPECTED, self.name, 0, what)

    def _keep(self, future: asyncio.Future[Any]) -> None:
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)
