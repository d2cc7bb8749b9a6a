"""Command line: ``spiceserver serve`` (also ``python -m spiceserver serve``)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

from spiceserver.config import (
    AUDIO_MODES,
    COMPRESSION_NAMES,
    DEFAULT_ENCODE_CACHE_BYTES,
    DEFAULT_MAX_CLIENTS,
    INPUT_BACKENDS,
    JPEG_POLICIES,
    RESIZE_MODES,
    STREAMING_VIDEO_MODES,
    ServerConfig,
    is_loopback,
    parse_video_codecs,
)
from spiceserver.errors import ConfigError
from spiceserver.faults import Fault
from spiceserver.protocol.enums import MAX_PASSWORD_LENGTH

# The server, its sources, numpy and asyncio itself are imported once the port is open (see
# main()): asyncio alone doubled the time to listen (tests/interop/bench_startup).
if TYPE_CHECKING:
    from spiceserver.clipboard import ClipboardBackend
    from spiceserver.connect_info import ConnectionFile
    from spiceserver.input import InputBackend, InputHandler
    from spiceserver.protocol.enums import KeyModifiers
    from spiceserver.server import SpiceServer
    from spiceserver.sources import FramebufferSource

logger = logging.getLogger("spiceserver")

#: The environment variable a ticket may come from (``serve`` without a ticket option).
PASSWORD_ENV = "SPICESERVER_PASSWORD"


def parse_fault(value: str) -> Fault:
    """``--fault SPEC`` (grammar in :mod:`spiceserver.faults`)."""
    try:
        return Fault.parse(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: ``--listen``: (host, port, Unix socket path or None).
Listen = tuple[str, int, str | None]
DEFAULT_HOST = "127.0.0.1"


def parse_listen(value: str) -> Listen:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT``, ``PORT`` or ``unix:PATH``."""
    if value.startswith("unix:"):
        path = value[len("unix:") :]
        if not path:
            raise argparse.ArgumentTypeError("expected unix:PATH, got no path")
        return DEFAULT_HOST, 0, path
    host, sep, port = value.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT, PORT or unix:PATH, got {value!r}"
        ) from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port {number} out of range")
    return (host if sep else DEFAULT_HOST), number, None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spiceserver", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser("serve", help="serve a screen over SPICE")
    serve.add_argument(
        "--listen",
        type=parse_listen,
        default=(DEFAULT_HOST, 5900, None),
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:5900; PORT alone, or "
        "unix:PATH for a Unix socket); SPICE, WebSocket (spice-html5) and "
        "--web all share it",
    )
    serve.add_argument(
        "--web",
        nargs="?",
        const="",
        metavar="DIR",
        help="also serve a web client's files on the same port: DIR, or without "
        "DIR Debian's spice-html5 (open http://HOST:PORT/spice_auto.html)",
    )
    serve.add_argument(
        "--no-websocket",
        action="store_true",
        help="do not accept WebSocket connections on the SPICE port",
    )
    serve.add_argument(
        "--websocket-origin",
        action="append",
        metavar="ORIGIN",
        help="only accept WebSockets from pages of this origin, e.g. "
        "https://host:8443 (repeatable; default: any, the ticket is the gate)",
    )
    ticket = serve.add_mutually_exclusive_group()
    ticket.add_argument(
        "--password",
        metavar="TEXT",
        help="the ticket clients must give. Avoid it: every local user sees a command line "
        f"(ps, /proc/PID/cmdline); use --password-file or ${PASSWORD_ENV} instead",
    )
    ticket.add_argument(
        "--password-file",
        type=Path,
        metavar="PATH",
        help="read the ticket from the first line of a file only you may read (mode 600). "
        f"Without a ticket option the ticket comes from ${PASSWORD_ENV} if set (the "
        "environment, unlike the command line, is private to your user), else a one-time "
        "password is generated",
    )
    ticket.add_argument(
        "--disable-ticketing",
        action="store_true",
        help="accept any ticket (only on a loopback address)",
    )
    serve.add_argument(
        "--source",
        default="pattern",
        metavar="SPEC",
        help="pattern, pattern:WxH, pattern:WxH[+X+Y],WxH[+X+Y],... (several monitors: "
        "one window each in remote-viewer; without +X+Y side by side), image:PATH, "
        "scenario:FILE (a JSON script of "
        "images, fills, pattern frames, resizes, cursors and waits, image "
        "paths relative to FILE; see README 'Scenarios') or "
        "desktop[:DISPLAY] (the running desktop: GNOME Wayland when $WAYLAND_DISPLAY is set "
        "and mutter answers on the session bus, else X11 on $DISPLAY), "
        "gnome[:CONNECTOR] (a monitor of the GNOME Wayland session, the primary by default); "
        "default pattern",
    )
    serve.add_argument(
        "--view-only", action="store_true", help="ignore the clients' keyboard and mouse"
    )
    serve.add_argument(
        "--input",
        choices=INPUT_BACKENDS,
        default="auto",
        help="desktop source: how client input is injected: xtest (X's XTEST extension), "
        "pynput (pip install 'spiceserver[pynput]'; for macOS and Windows, where XTEST is "
        "missing) or auto (default: xtest where the X display has it, else pynput)",
    )
    serve.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="follow",
        help="follow (default): the source takes the size and monitors the client's windows "
        "ask for, if it can (pattern, Xorg desktops; Xvfb cannot); off: it keeps its own",
    )
    serve.add_argument(
        "--resize-debounce",
        type=float,
        default=0.25,
        metavar="SECONDS",
        help="apply a client's new layout this long after its last change (default 0.25)",
    )
    serve.add_argument(
        "--no-scroll-detect",
        action="store_true",
        help="desktop source: send scrolled areas as images, not as COPY_BITS "
        "moves plus the uncovered strip",
    )
    serve.add_argument(
        "--image-compression",
        choices=sorted(COMPRESSION_NAMES),
        default="auto-glz",
        help="image codec for screen updates: auto-glz (default: GLZ, QUIC for "
        "photographic regions), auto-lz, glz, lz, quic, or off (raw)",
    )
    serve.add_argument(
        "--jpeg-wan-compression",
        choices=JPEG_POLICIES,
        default="auto",
        help="lossy JPEG for smooth photographic areas (the auto image compressions, "
        "clients with a JPEG decoder): auto (default: while the link is below 10 Mbit/s), "
        "always, never; needs the jpeg extra (simplejpeg)",
    )
    serve.add_argument(
        "--zlib-glz-wan-compression",
        choices=JPEG_POLICIES,
        default="auto",
        help="GLZ images wrapped in zlib when smaller: auto (default: while the link is "
        "below 10 Mbit/s), always, never",
    )
    serve.add_argument(
        "--jpeg-quality",
        type=int,
        default=85,
        help="highest JPEG quality 1..100 (default 85); lower (down to 30) where the link "
        "could not carry an area's first paint within 0.5 s",
    )
    serve.add_argument(
        "--lossless-refresh",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="re-send an area sent as JPEG losslessly once it was still this long (default 0.5)",
    )
    serve.add_argument(
        "--streaming-video",
        choices=STREAMING_VIDEO_MODES,
        default="off",
        help="video streams for regions updated like a video (lossy: clients that may get "
        "JPEG): off (default), all, or filter (photographic regions only, libspice's default)",
    )
    serve.add_argument(
        "--video-codecs",
        default="h264,vp8,mjpeg",
        metavar="LIST",
        help="stream codecs in preference order among mjpeg, h264, vp8, vp9 (QEMU's "
        "spice:mjpeg;gstreamer:h264 works too; default h264,vp8,mjpeg; h264/vp8/vp9 need "
        "the video extra, PyAV)",
    )
    serve.add_argument(
        "--max-fps",
        type=float,
        default=30.0,
        help="most updates per second per client (default 30)",
    )
    serve.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close a connection that has not linked (sent its link message and ticket) "
        "within this time (default 10)",
    )
    serve.add_argument(
        "--vv-file",
        type=Path,
        metavar="PATH",
        help="write a virt-viewer connection file (mode 0600, password and TLS fields "
        "included) for 'remote-viewer PATH', instead of printing a password",
    )
    tls = serve.add_argument_group("TLS and tickets")
    tls.add_argument(
        "--tls-listen",
        type=parse_listen,
        metavar="HOST:PORT",
        help="also listen with TLS here; plain links are then told to switch",
    )
    tls.add_argument("--tls-cert", metavar="PEM", help="certificate chain (PEM)")
    tls.add_argument("--tls-key", metavar="PEM", help="private key (PEM, mode 600)")
    tls.add_argument(
        "--plaintext-channels",
        default="",
        metavar="LIST",
        help="channels allowed without TLS, e.g. main,inputs (default none)",
    )
    tls.add_argument(
        "--ticket-lifetime",
        type=float,
        metavar="SECONDS",
        help="the ticket expires this long after start",
    )
    tls.add_argument(
        "--one-shot-ticket", action="store_true", help="the ticket admits one session only"
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=4096,
        help="simultaneous connections, linked or not (default 4096)",
    )
    serve.add_argument(
        "--max-clients",
        type=int,
        default=DEFAULT_MAX_CLIENTS,
        help="simultaneous client sessions; more are refused at the link "
        f"(default {DEFAULT_MAX_CLIENTS})",
    )
    serve.add_argument(
        "--encode-cache-mib",
        type=float,
        default=DEFAULT_ENCODE_CACHE_BYTES / 2**20,
        metavar="MIB",
        help="memory for encoded updates shared between clients (raw, QUIC, "
        "LZ; never GLZ); 0 turns sharing off (default "
        f"{DEFAULT_ENCODE_CACHE_BYTES // 2**20})",
    )
    serve.add_argument(
        "--record",
        metavar="FILE.jsonl",
        default=None,
        help="append one JSON line per client event (links, keys, pointer, "
        "buttons, agent and unknown messages, disconnects) to FILE",
    )
    faults = serve.add_argument_group(
        "fault injection",
        "For client robustness tests: the server misbehaves on purpose (logged as WARNING). "
        "CHANNEL is main, display, inputs, cursor or * (all). See README 'Fault injection'.",
    )
    faults.add_argument(
        "--fault",
        action="append",
        default=[],
        type=parse_fault,
        metavar="SPEC",
        help="repeatable. delay:CHANNEL:SECONDS holds every message that long, in order "
        "(tests latency and timeout handling); close-after:CHANNEL:N closes the "
        "connection after N messages (a channel dying mid-session); "
        "unknown-message:CHANNEL[:COUNT[:INTERVAL]] sends message type 0xFFFF, which no "
        "spec defines (skipping unknown messages); corrupt-image[:EVERY_N] corrupts the "
        "coded data of every Nth display image, lengths kept valid (the image decoders); "
        "drop-frames[:EVERY_N] leaves out every Nth video stream frame (default 2); "
        "delay-frames:SECONDS stamps stream frames that much later (negative: late)",
    )
    serve.add_argument(
        "--capture",
        metavar="DIR",
        default=None,
        help="write one pcap per channel and display.mp4 per session into DIR",
    )
    sound = serve.add_argument_group('sound (README "Sound")')
    sound.add_argument(
        "--audio",
        choices=(*AUDIO_MODES, "clicks"),
        default="auto",
        help="what the playback channel plays: desktop = the sound server's default sink "
        "monitor (parec), tone = a 440 Hz sine, clicks = a click on every 15th frame of "
        "--source pattern (A/V sync), off = no playback channel; auto (default): "
        "desktop when a PulseAudio/PipeWire server answers, else off",
    )
    sound.add_argument(
        "--audio-source",
        metavar="NAME",
        default=None,
        help="PulseAudio source to capture for --audio desktop (default @DEFAULT_MONITOR@)",
    )
    sound.add_argument(
        "--no-opus",
        action="store_true",
        help="raw PCM both ways: no Opus to play, and record CAP_OPUS not advertised",
    )
    sound.add_argument(
        "--no-record",
        action="store_true",
        help="offer no record channel (the client's microphone); with --audio desktop it "
        "goes to a null sink whose monitor programs record from",
    )
    sound.add_argument(
        "--record-sink",
        metavar="NAME",
        default="spice_mic",
        help="the null sink the microphone plays into (created if missing; default spice_mic: "
        "record from spice_mic.monitor)",
    )
    agent = serve.add_argument_group('the built-in agent (README "Clipboard and files")')
    agent.add_argument(
        "--no-agent",
        action="store_true",
        help="no agent: no clipboard, no resize requests, no file transfer",
    )
    agent.add_argument(
        "--file-transfer",
        metavar="DIR|off",
        default="",
        help="where files dropped into a client go (default: the XDG download directory, "
        "xdg-user-dir DOWNLOAD or ~/Downloads); off: refuse them",
    )
    agent.add_argument(
        "--file-transfer-max",
        metavar="SIZE",
        type=parse_size,
        default="1G",
        help="largest file accepted, bytes or with K/M/G (default 1G)",
    )
    agent.add_argument(
        "--clipboard-max",
        metavar="SIZE",
        type=parse_size,
        default="32M",
        help="largest clipboard taken or given, bytes or with K/M/G (default 32M)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def parse_size(value: str) -> int:
    """``123``, ``64K``, ``32M``, ``1G`` (powers of 1024) as bytes."""
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(value[-1:].upper(), 1)
    number = value[:-1] if scale != 1 else value
    try:
        size = int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size (like 64K, 1G)") from None
    if size < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a size cannot be negative")
    return size


def _read_secret_file(path: Path) -> str:
    """The first line of a file only its owner may read (refused otherwise, as andris does)."""
    try:
        mode = path.stat().st_mode
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"{path} is accessible by group or others; run: chmod 600 {path}")
    if not lines or not lines[0]:
        raise ConfigError(f"{path}: no password on its first line")
    return lines[0]


def config_from_args(args: argparse.Namespace) -> tuple[ServerConfig, bool]:
    """The server config, and whether the password was generated (to be printed)."""
    host, port, unix_path = args.listen
    generated = False
    password: str | None = args.password
    if password is not None:
        logger.warning(
            "--password is visible to every local user (ps, /proc/PID/cmdline): "
            "use --password-file or $%s instead",
            PASSWORD_ENV,
        )
    if args.password_file is not None:
        password = _read_secret_file(args.password_file)
    elif password is None and not args.disable_ticketing and PASSWORD_ENV in os.environ:
        # Taken out of the environment, so nothing the server starts inherits it.
        password = os.environ.pop(PASSWORD_ENV)
        if not password:
            raise ConfigError(f"${PASSWORD_ENV} is set but empty")
    if args.disable_ticketing:
        if unix_path is None and not is_loopback(host):
            raise ConfigError(
                f"refusing to listen on {host} without a ticket: anyone could connect"
            )
    elif password is None:
        import secrets

        password = secrets.token_urlsafe(18)[:MAX_PASSWORD_LENGTH]
        generated = True
    if args.tls_listen and args.tls_listen[2] is not None:
        raise ConfigError("--tls-listen takes HOST:PORT (TLS over a Unix socket is not offered)")
    web_root = args.web
    if web_root == "":
        from spiceserver.server.transports.web import default_web_root

        web_root = str(default_web_root())
    config = ServerConfig(
        host=host,
        port=port,
        unix_path=unix_path,
        websocket=not args.no_websocket,
        websocket_origins=tuple(args.websocket_origin) if args.websocket_origin else None,
        web_root=web_root,
        password=password,
        disable_ticketing=args.disable_ticketing,
        image_compression=COMPRESSION_NAMES[args.image_compression],
        jpeg_wan_compression=args.jpeg_wan_compression,
        jpeg_quality=args.jpeg_quality,
        zlib_glz_wan_compression=args.zlib_glz_wan_compression,
        lossless_refresh=args.lossless_refresh,
        streaming_video=args.streaming_video,
        video_codecs=parse_video_codecs(args.video_codecs),
        max_fps=args.max_fps,
        handshake_timeout=args.handshake_timeout,
        tls_host=args.tls_listen[0] if args.tls_listen else None,
        tls_port=args.tls_listen[1] if args.tls_listen else None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        plaintext_channels=frozenset(filter(None, args.plaintext_channels.split(","))),
        ticket_lifetime=args.ticket_lifetime,
        one_shot_ticket=args.one_shot_ticket,
        max_connections=args.max_connections,
        max_clients=args.max_clients,
        encode_cache_bytes=int(args.encode_cache_mib * 2**20),
        capture_dir=args.capture,
        faults=args.fault,
        record_path=args.record,
        audio="off" if args.audio == "clicks" else args.audio,  # the source's own sound
        audio_source=args.audio_source,
        audio_opus=not args.no_opus,
        record=not args.no_record,
        record_sink=args.record_sink,
        resize=args.resize,
        resize_debounce=args.resize_debounce,
        agent=not args.no_agent,
        file_transfer_dir=None if args.file_transfer == "off" else args.file_transfer,
        file_transfer_max=args.file_transfer_max,
        clipboard_max_bytes=args.clipboard_max,
    )
    return config, generated


async def serve(args: argparse.Namespace, listening: socket.socket | None = None) -> int:
    """Serve until SIGINT/SIGTERM; ``listening``: the port, opened early by :func:`main`."""
    import asyncio

    from spiceserver.input import choose_desktop_input, ignore_input
    from spiceserver.sources import PatternSource, source_from_spec
    from spiceserver.sources.pattern import PatternClickSource

    config, generated = config_from_args(args)
    source = source_from_spec(await _desktop_kind(args.source), max_fps=args.max_fps)
    if args.audio == "clicks":
        if not isinstance(source, PatternSource):
            raise ConfigError("--audio clicks goes with --source pattern (the frames it clicks)")
        source = PatternClickSource(*source.size, fps=source.fps)
    desktop_input = None
    on_input: InputHandler | None = ignore_input if args.view_only else None
    # HOOK (issue 14, the X selection bridge): for --source desktop, set this to
    # spiceserver.x11_clipboard's backend on the desktop's display (source.display_name);
    # SpiceServer(clipboard=...) shares it with every client.  None: no clipboard.
    clipboard: ClipboardBackend | None = None
    if source.kind == "desktop":  # python-xlib and mss are imported only for the desktop
        from spiceserver.sources.desktop import DesktopSource

        assert isinstance(source, DesktopSource)
        source.scroll_detect = not args.no_scroll_detect
        desktop_input = choose_desktop_input(
            args.input, source.display_name, view_only=args.view_only
        ).start()
        on_input = desktop_input
    elif source.kind == "gnome":
        from spiceserver.gnome_input import GnomeInput
        from spiceserver.sources.gnome import GnomeSource

        assert isinstance(source, GnomeSource)
        on_input = GnomeInput(source, view_only=args.view_only)
    try:
        await _serve(args, config, generated, source, on_input, desktop_input, clipboard, listening)
    finally:
        if desktop_input is not None:
            await asyncio.to_thread(desktop_input.close)
    return 0


async def _desktop_kind(spec: str) -> str:
    """``desktop`` without a display becomes ``gnome`` in a GNOME Wayland session (mutter on
    the session bus), else stays X11; logged either way."""
    if spec != "desktop":
        return spec
    if os.environ.get("WAYLAND_DISPLAY"):
        from spiceserver.sources.mutter import mutter_available

        if await mutter_available():
            logger.info("desktop: GNOME Wayland session ($WAYLAND_DISPLAY, mutter on D-Bus)")
            return "gnome"
        logger.info("desktop: $WAYLAND_DISPLAY is set but mutter does not answer: using X11")
    logger.info("desktop: X11 display %s", os.environ.get("DISPLAY") or "(none set)")
    return spec


async def _serve(
    args: argparse.Namespace,
    config: ServerConfig,
    generated: bool,
    source: FramebufferSource,
    on_input: InputHandler | None,
    desktop_input: InputBackend | None,
    clipboard: ClipboardBackend | None = None,
    listening: socket.socket | None = None,
) -> None:
    import asyncio

    from spiceserver.server import SpiceServer

    loop = asyncio.get_running_loop()
    server = SpiceServer(
        source, config, on_input=on_input, clipboard=clipboard, listen_socket=listening
    )
    async with server:
        if desktop_input is not None:
            # The X lock LEDs, read on the input thread, reach the clients on the loop.
            def send_locks(mods: KeyModifiers) -> None:
                loop.call_soon_threadsafe(server.set_key_modifiers, mods)

            desktop_input.on_locks = send_locks
        print_connect_lines(server, config, generated, args.vv_file)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger.info("shutting down")


def web_client_url(host: str, port: int, password: str | None) -> str:
    """spice-html5's page on our own port, told to connect back to it."""
    netloc = f"[{host}]" if ":" in host else host
    query = f"host={quote(host)}&port={port}"
    if password is not None:
        query += f"&password={quote(password, safe='')}"
    return f"http://{netloc}:{port}/spice_auto.html?{query}"


def print_connect_lines(
    server: SpiceServer, config: ServerConfig, generated: bool, vv_file: Path | None
) -> None:
    """What to run to connect: remote-viewer lines for addresses a client can use (the host's
    name and addresses when listening on a wildcard), or the .vv file written instead."""
    if config.unix_path is not None:
        password = config.password if generated else None
        uri = server.uri + (f"?password={quote(password, safe='')}" if password else "")
        print(f"remote-viewer '{uri}'", flush=True)
        return
    from spiceserver.connect_info import reachable_hosts, spice_uri

    hosts = reachable_hosts(config.host)
    if vv_file is not None:
        connection_file(server, config, hosts[0]).write(vv_file)
        print(f"connection file written (mode 0600): remote-viewer {vv_file}", flush=True)
        return
    password = config.password if generated else None
    if generated:
        print("one-time password generated; connect with:", flush=True)
    for host in hosts:
        uri = spice_uri(host, server.port, server.tls_port, password)
        print(f"remote-viewer '{uri}'", flush=True)
    if config.web_root is not None:
        print(
            f"or open in a browser: {web_client_url(hosts[0], server.port, password)}", flush=True
        )


def connection_file(server: SpiceServer, config: ServerConfig, host: str) -> ConnectionFile:
    from spiceserver.connect_info import ConnectionFile, certificate_subject

    ca_pem = subject = None
    if config.tls_cert is not None:
        pem = Path(config.tls_cert).read_bytes()
        ca_pem, subject = pem.decode(), certificate_subject(pem)
    return ConnectionFile(
        host=host,
        port=server.port,
        password=config.password,
        title=f"spiceserver {server.source.kind}",
        tls_port=server.tls_port,
        ca_pem=ca_pem,
        host_subject=subject,
    )


#: Options people try first, and what they are called here.
_HINTS = {
    "--port": "--listen [HOST:]PORT",
    "--host": "--listen HOST:PORT",
    "--addr": "--listen HOST:PORT",
    "--ticket": "--password-file PATH",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        for option, instead in _HINTS.items():
            if f"unrecognized arguments: {option}" in message or f" {option}" in message:
                message += f" (use {instead})"
                break
        super().error(message)


#: glibc mallopt parameter: allocations from this size up get their own mmap.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 256 * 1024


def _return_big_buffers_to_the_os() -> None:
    """Frame-sized buffers (bands, snapshots, encoder output) go straight back to the OS when
    freed.  glibc otherwise raises its mmap threshold after the first such free and serves
    later ones from the heap, which keeps their high-water mark: one client of a 1920x1080
    desktop measured 264 -> 243 MiB RSS with this, for 1-3 % more CPU at 10 clients (README
    "Memory").  The CLI only: an embedding program owns its process's allocator settings."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None or sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def listen_early(args: argparse.Namespace) -> socket.socket | None:
    """The TCP port, opened before the server's imports (numpy, the protocol, the codecs:
    most of a start's 0.3-0.8 s): a client started along with the server (``spiceserver
    serve & remote-viewer ...``) is queued by the kernel and answered once the server runs,
    instead of refused.  None for a Unix socket or a host name (the server binds those as
    asyncio does, to every address a name has)."""
    host, port, unix_path = args.listen
    if unix_path is not None:
        return None
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As asyncio's create_server binds: address reuse, and IPv6 only on an IPv6 socket.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(100)
    except BaseException:
        sock.close()
        raise
    return sock


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        listening = listen_early(args)
    except OSError as exc:
        print(f"spiceserver: {exc}", file=sys.stderr)
        return 2
    _return_big_buffers_to_the_os()
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import asyncio

    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable without
        pass
    try:
        return runner(serve(args, listening))
    except (ConfigError, ValueError, OSError) as exc:
        print(f"spiceserver: {exc}", file=sys.stderr)
        return 2
    finally:
        if listening is not None:
            listening.close()  # the server's own close shut it already, unless it failed first


if __name__ == "__main__":
    sys.exit(main())
