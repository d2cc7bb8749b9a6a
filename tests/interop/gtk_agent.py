"""The agent's part of ``gtk_harness.py``: clipboard, file transfer and monitors configs
through ``SpiceClientGLib.MainChannel`` (GI names: SPICE-REFERENCE-2 1.5).  Run by Debian's
``/usr/bin/python3`` like the harness (stdlib + gi only)."""

from __future__ import annotations

import ctypes
import hashlib
import os
from typing import Any

import gi

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, SpiceClientGLib  # noqa: E402


class AgentCommands:
    """Mixed into the harness: it provides ``args``, ``main``, ``emit`` and ``gsignal``."""

    args: Any
    main: SpiceClientGLib.MainChannel | None
    offered: dict[tuple[int, int], bytes]
    clipboards: int

    @staticmethod
    def emit(event: str, **fields: Any) -> None:  # replaced by the harness's
        raise NotImplementedError

    @staticmethod
    def gsignal(obj: Any, name: str, handler: Any) -> int:  # replaced by the harness's
        raise NotImplementedError

    @staticmethod
    def guarded(func: Any) -> Any:  # replaced by the harness's
        raise NotImplementedError

    def connect_agent_signals(self, channel: SpiceClientGLib.MainChannel) -> None:
        self.gsignal(channel, "main-clipboard-selection", self.on_clipboard)
        self.gsignal(channel, "main-clipboard-selection-grab", self.on_clipboard_grab)
        self.gsignal(channel, "main-clipboard-selection-request", self.on_clipboard_request)
        self.gsignal(channel, "main-clipboard-selection-release", self.on_clipboard_release)
        self.gsignal(channel, "new-file-transfer", self.on_new_file_transfer)

    def on_clipboard(
        self,
        _channel: SpiceClientGLib.MainChannel,
        selection: int,
        type_: int,
        data: int,
        size: int,
    ) -> None:
        raw = ctypes.string_at(data, size) if size else b""
        self.clipboards += 1
        path = os.path.join(self.args.clipboard_dir or ".", f"clipboard-{self.clipboards}.bin")
        with open(path, "wb") as fh:
            fh.write(raw)
        digest = hashlib.sha256(raw).hexdigest()
        self.emit("clipboard", selection=selection, type=type_, size=size, sha256=digest, path=path)

    def on_clipboard_grab(
        self, _channel: SpiceClientGLib.MainChannel, selection: int, types: Any, ntypes: int
    ) -> bool:
        self.emit(
            "clipboard-grab", selection=selection, types=[int(t) for t in list(types)[:ntypes]]
        )
        return True

    def on_clipboard_request(
        self, channel: SpiceClientGLib.MainChannel, selection: int, type_: int
    ) -> bool:
        data = self.offered.get((selection, type_))
        self.emit("clipboard-request", selection=selection, type=type_, answered=data is not None)
        if data is None:
            return False
        channel.clipboard_selection_notify(selection, type_, data)
        return True

    def on_new_file_transfer(self, _channel: SpiceClientGLib.MainChannel, task: Any) -> None:
        def finished(task: Any, error: Any) -> None:
            message = None if error is None else getattr(error, "message", str(error))
            self.emit("file-transfer-finished", name=task.get_filename(), error=message)

        self.gsignal(task, "finished", finished)

    def on_clipboard_release(self, _channel: SpiceClientGLib.MainChannel, selection: int) -> None:
        self.emit("clipboard-release", selection=selection)

    # -- display -------------------------------------------------------------

    def require_main(self) -> SpiceClientGLib.MainChannel:
        if self.main is None:
            raise RuntimeError("no main channel")
        return self.main

    def cmd_clipboard_grab(self, cmd: dict[str, Any]) -> None:
        selection = int(cmd["selection"])
        types = []
        for type_, path in cmd["data"].items():
            with open(path, "rb") as fh:
                self.offered[(selection, int(type_))] = fh.read()
            types.append(int(type_))
        self.require_main().clipboard_selection_grab(selection, types)

    def cmd_clipboard_request(self, cmd: dict[str, Any]) -> None:
        self.require_main().clipboard_selection_request(int(cmd["selection"]), int(cmd["type"]))

    def cmd_clipboard_release(self, cmd: dict[str, Any]) -> None:
        selection = int(cmd["selection"])
        for key in [k for k in self.offered if k[0] == selection]:
            del self.offered[key]
        self.require_main().clipboard_selection_release(selection)

    def cmd_file_copy(self, cmd: dict[str, Any]) -> None:
        from gi.repository import Gio

        main = self.require_main()
        files = [Gio.File.new_for_path(str(p)) for p in cmd["paths"]]

        def done(channel: SpiceClientGLib.MainChannel, result: Gio.AsyncResult, _data: Any) -> None:
            try:
                ok = bool(channel.file_copy_finish(result))
                self.emit("file-copy-done", ok=ok, error=None)
            except GLib.Error as exc:
                self.emit("file-copy-done", ok=False, error=exc.message, code=exc.code)

        main.file_copy_async(
            files, Gio.FileCopyFlags.NONE, None, None, None, self.guarded(done), None
        )

    def cmd_monitors(self, cmd: dict[str, Any]) -> None:
        main = self.require_main()
        for display in cmd["displays"]:
            index = int(display["id"])
            enabled = bool(display.get("enabled", True))
            # A headless client must enable the display first, or it is left out (1.5).
            main.update_display_enabled(index, enabled, False)
            if enabled:
                main.update_display(
                    index,
                    int(display["x"]),
                    int(display["y"]),
                    int(display["width"]),
                    int(display["height"]),
                    False,
                )
        main.send_monitor_config()
