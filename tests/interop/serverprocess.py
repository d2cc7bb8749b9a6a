"""``spiceserver serve`` in a subprocess, for tests and benchmarks that judge it from outside."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.conftest import ROOT


class ServerProcess:
    """``with ServerProcess(["--source", "image:x.png"], password="pw") as srv: srv.port``."""

    def __init__(
        self,
        args: list[str],
        password: str,
        *,
        timeout: float = 60.0,
        wait_ready: bool = True,
        env_password: bool = False,
    ) -> None:
        #: Return from ``with`` once the codecs are compiled, not as soon as the port is open
        #: (the server listens first and compiles meanwhile; RSS and timings settle after).
        self.wait_ready = wait_ready
        self.args = args
        self.password = password
        #: Give the ticket in $SPICESERVER_PASSWORD instead of a --password-file.
        self.env_password = env_password
        self.timeout = timeout
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log: list[str] = []
        #: Lines and bytes the server printed, in all (``log`` keeps the newest 10,000+).
        self.lines = 0
        self.log_bytes = 0
        self._reader: threading.Thread | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="spiceserver-proc-")

    def __enter__(self) -> ServerProcess:
        secret = Path(self._dir.name) / "ticket"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.password + "\n")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        args = list(self.args)
        if self.wait_ready and "--log-level" in args:
            # "image encoders ready" is an INFO line: a quieter level would hide it.
            level = args.index("--log-level") + 1
            if args[level] in ("warning", "error"):
                args[level] = "info"
        ticket = ["--password-file", str(secret)]
        if self.env_password:
            env["SPICESERVER_PASSWORD"] = self.password
            ticket = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spiceserver",
                "serve",
                "--listen",
                "127.0.0.1:0",
                *ticket,
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # bounded: the process prints or exits
            self.log.append(line)
            match = re.search(r"spice://127\.0\.0\.1:(\d+)", line)
            if "remote-viewer" in line and match:
                self.port = int(match.group(1))
            if self.port and (not self.wait_ready or "image encoders ready" in line):
                break  # listening (and, unless told otherwise, every codec compiled)
        # Keep draining the output: a full pipe would block the server's logging.
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        if not self.port:
            self.__exit__(None, None, None)
            raise RuntimeError("server did not start:\n" + "".join(self.log))
        return self

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines += 1
            self.log_bytes += len(line)
            self.log.append(line)
            if len(self.log) > 20000:
                del self.log[:10000]

    @property
    def uri(self) -> str:
        return f"spice://127.0.0.1:{self.port}"

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def open_fds(self) -> int:
        """File descriptors the server holds now (sockets, files, pipes)."""
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def sockets_from(self, address: str) -> int:
        """TCP sockets the server holds (as file descriptors) whose peer is ``address``."""
        assert self.proc is not None
        inodes = set()
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                link = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
        # /proc/net/tcp: "rem_address" as the IPv4 address in host byte order, in hex.
        want = socket.inet_aton(address)[::-1].hex().upper()
        count = 0
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[2].split(":")[0] == want and fields[9] in inodes:
                count += 1
        return count

    def cmdline(self) -> bytes:
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/cmdline").read_bytes()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """Everything the server printed (read after it stopped)."""
        return "".join(self.log)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            if self._reader is not None:
                self._reader.join(timeout=5)
        self._dir.cleanup()
