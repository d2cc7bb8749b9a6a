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
from tests.conftest import ROOT, python_output, run
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


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5901", ("127.0.0.1", 5901, None)),
        (":5902", ("127.0.0.1", 5902, None)),
        ("0.0.0.0:5903", ("0.0.0.0", 5903, None)),
        ("[::1]:5904", ("::1", 5904, None)),
        ("unix:/run/spice.sock", ("127.0.0.1", 0, "/run/spice.sock")),
    ],
)
def test_listen_forms(value: str, expected: tuple[str, int, str | None]) -> None:
    args = build_parser().parse_args(["serve", "--listen", value])
    assert args.listen == expected


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["serve", "--port", "5900"], "use --listen [HOST:]PORT"),
        (["serve", "--listen", "host:http"], "expected HOST:PORT, PORT or unix:PATH"),
        (["serve", "--listen", "unix:"], "expected unix:PATH"),
        (["serve", "--listen", "70000"], "port 70000 out of range"),
    ],
)
def test_common_slips_get_a_hint(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert hint in capsys.readouterr().err


def test_max_fps_help_shows_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    assert "(default 30)" in " ".join(capsys.readouterr().out.split())


def test_a_bad_pattern_size_says_what_a_size_looks_like() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spiceserver", "serve", "--source", "pattern:100x"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 2
    assert "expected pattern:WIDTHxHEIGHT, e.g. pattern:1280x800" in result.stderr
    assert "invalid literal" not in result.stderr


def test_connection_file_text_and_mode(tmp_path: Path) -> None:
    from spiceserver.connect_info import ConnectionFile

    path = tmp_path / "x.vv"
    path.write_text("old")
    path.chmod(0o644)
    ConnectionFile(
        "example.org",
        5900,
        "pw",
        title="t",
        tls_port=5901,
        ca_pem="-----A-----\nB\n",
        host_subject="CN=example.org",
    ).write(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().splitlines() == [
        "[virt-viewer]",
        "type=spice",
        "host=example.org",
        "port=5900",
        "title=t",
        "delete-this-file=0",
        "password=pw",
        "tls-port=5901",
        "ca=-----A-----\\nB",
        "host-subject=CN=example.org",
    ]


def test_a_wildcard_listen_is_announced_with_reachable_addresses() -> None:
    from spiceserver.connect_info import reachable_hosts

    hosts = reachable_hosts("0.0.0.0")
    assert hosts and "0.0.0.0" not in hosts
    assert reachable_hosts("192.0.2.7") == ["192.0.2.7"]
    assert reachable_hosts("spice.example") == ["spice.example"]


def test_audio_options() -> None:
    config, _ = config_from_args(parse())
    assert config.audio == "auto"
    config, _ = config_from_args(parse("--audio", "desktop", "--audio-source", "x.monitor"))
    assert (config.audio, config.audio_source, config.audio_opus) == ("desktop", "x.monitor", True)
    config, _ = config_from_args(parse("--audio", "tone", "--no-opus"))
    assert (config.audio, config.audio_opus) == ("tone", False)
    assert (config.record, config.record_sink) == (True, "spice_mic")
    config, _ = config_from_args(parse("--no-record", "--record-sink", "mic2"))
    assert (config.record, config.record_sink) == (False, "mic2")


def test_audio_clicks_is_the_pattern_clicking() -> None:
    config, _ = config_from_args(parse("--audio", "clicks"))
    assert config.audio == "off"  # the PatternClickSource brings its own sound


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


def test_input_backend_option() -> None:
    assert build_parser().parse_args(["serve"]).input == "auto"
    assert build_parser().parse_args(["serve", "--input", "pynput"]).input == "pynput"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--input", "uinput"])


def test_resize_options() -> None:
    config, _ = config_from_args(parse())
    assert (config.resize, config.resize_debounce) == ("follow", 0.25)
    config, _ = config_from_args(parse("--resize", "off", "--resize-debounce", "1.5"))
    assert (config.resize, config.resize_debounce) == ("off", 1.5)
    with pytest.raises(SystemExit):
        parse("--resize", "sometimes")
    with pytest.raises(ConfigError, match="resize_debounce"):
        config_from_args(parse("--resize-debounce", "-1"))


def test_the_port_opens_before_the_heavy_imports() -> None:
    """What `serve` imports before :func:`listen_early` opens the port is what a client waits
    for at start-up: asyncio alone doubled that (bench_startup), numpy and the protocol's
    message classes cost as much again."""
    probe = (
        "import sys\n"
        "import spiceserver.__main__ as cli\n"
        "args = cli.build_parser().parse_args(['serve', '--listen', '127.0.0.1:0'])\n"
        "cli.listen_early(args).close()\n"
        "heavy = ('asyncio', 'numpy', 'ssl', 'spiceserver.protocol.messages',"
        " 'spiceserver.server')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    assert python_output(probe) == "[]"
