"""The command line: options, refusals, and a real `python -m spiceserver serve` process."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from spiceserver.__main__ import PASSWORD_ENV, build_parser, config_from_args
from spiceserver.errors import ConfigError
from spiceserver.protocol.enums import ChannelType, ImageCompression, LinkError
from tests.conftest import ROOT, run
from tests.fakeclient import LoopbackClient


def parse(*argv: str) -> object:
    return build_parser().parse_args(["serve", *argv])


def test_defaults_generate_a_password() -> None:
    config, generated = config_from_args(parse())
    assert generated and config.password and len(config.password) >= 16
    assert (config.host, config.port) == ("127.0.0.1", 5900)
    assert config.image_compression == ImageCompression.AUTO_GLZ


def test_password_file_and_listen(tmp_path: Path) -> None:
    secret = tmp_path / "ticket"
    secret.write_text("from-file\n")
    with pytest.raises(ConfigError, match="chmod 600"):
        config_from_args(parse("--password-file", str(secret)))
    secret.chmod(0o600)
    config, generated = config_from_args(
        parse("--password-file", str(secret), "--listen", "[::1]:6000")
    )
    assert (config.password, generated, config.host, config.port) == (
        "from-file",
        False,
        "::1",
        6000,
    )


def test_no_ticket_on_a_public_address_is_refused() -> None:
    with pytest.raises(ConfigError, match="without a ticket"):
        config_from_args(parse("--listen", "0.0.0.0:5900", "--disable-ticketing"))
    config, _ = config_from_args(parse("--listen", "127.0.0.1:5900", "--disable-ticketing"))
    assert config.disable_ticketing and config.password is None


def test_password_over_60_bytes_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"1\.\.60 bytes"):
        config_from_args(parse("--password", "x" * 61))


def test_serve_prints_a_working_remote_viewer_line() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spiceserver",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--source",
            "pattern:320x240",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = ""
        while "remote-viewer" not in line:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
        match = re.search(r"spice://127\.0\.0\.1:(\d+)\?password=([^']+)'", line)
        assert match, line
        port, password = int(match.group(1)), unquote(match.group(2))

        async def link() -> None:
            client = await LoopbackClient.open(port)
            assert await client.link(ChannelType.MAIN, password) == LinkError.OK
            await client.receive(103)
            await client.close()

        run(link(), timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_password_from_the_environment_is_taken_out_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    config, generated = config_from_args(parse())
    assert (config.password, generated) == ("from-env", False)
    assert PASSWORD_ENV not in os.environ  # nothing the server starts inherits it
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    secret_option, _ = config_from_args(parse("--disable-ticketing"))
    assert secret_option.password is None  # an explicit ticket option wins
    monkeypatch.setenv(PASSWORD_ENV, "")
    with pytest.raises(ConfigError, match="empty"):
        config_from_args(parse())


def test_password_on_the_command_line_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="spiceserver"):
        config, _ = config_from_args(parse("--password", "typed-in-argv"))
    assert config.password == "typed-in-argv"
    assert "--password is visible to every local user" in caplog.text
    assert "typed-in-argv" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spiceserver"):
        config_from_args(parse())
    assert not caplog.text


def test_help_says_why_and_a_server_keeps_its_password_off_the_command_line() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    shown = subprocess.run(
        [sys.executable, "-m", "spiceserver", "serve", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    assert "/proc/PID/cmdline" in shown and f"${PASSWORD_ENV}" in " ".join(shown.split())
    env[PASSWORD_ENV] = "env-ticket-42"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spiceserver", "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = ""
        while "remote-viewer" not in line:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
        assert "password=" not in line  # not generated: nothing to print
        port = int(re.search(r"spice://127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        assert b"env-ticket-42" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()

        async def link() -> None:
            client = await LoopbackClient.open(port)
            assert await client.link(ChannelType.MAIN, "env-ticket-42") == LinkError.OK
            await client.close()

        run(link(), timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0
