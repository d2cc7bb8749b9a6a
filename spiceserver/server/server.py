"""The embeddable asyncio SPICE server: a small facade over the connection core."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from spiceserver.capture import CaptureManager
from spiceserver.clipboard import ClipboardBackend
from spiceserver.config import ServerConfig
from spiceserver.crypto import KeyPool
from spiceserver.errors import ConfigError
from spiceserver.faults import ALL_CHANNELS, Fault
from spiceserver.input import InputHandler, log_input
from spiceserver.logs import install_limiter
from spiceserver.protocol.enums import MAX_PASSWORD_LENGTH, KeyModifiers
from spiceserver.record import JsonlRecorder, Recorder
from spiceserver.server.agent import AgentServices
from spiceserver.server.audio import AudioHub
from spiceserver.server.channels.inputs import InputsHandler
from spiceserver.server.codecs import CODECS, jpeg_available, warm_order
from spiceserver.server.context import ServerContext
from spiceserver.server.encode_cache import EncodeCache
from spiceserver.server.fault_injection import FaultInjector
from spiceserver.server.filexfer import OnFile
from spiceserver.server.microphone import MicrophoneHub
from spiceserver.server.registry import CHANNELS, offered_channels
from spiceserver.server.security import FailureTracker, Ticket, tls_context
from spiceserver.server.transports.stream import StreamProtocol
from spiceserver.server.transports.web import WebRoot
from spiceserver.server.warmup import EncoderWarmup
from spiceserver.session import SessionMetrics, SessionRegistry
from spiceserver.sinks.audio import PulseAudioRecordSink, RecordSink
from spiceserver.sources.audio import (
    AudioSource,
    PulseAudioSource,
    ToneSource,
    sound_server_reachable,
)
from spiceserver.sources.base import FramebufferSource

__all__ = ["SessionInfo", "SpiceServer"]

logger = logging.getLogger("spiceserver")


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One client session, as :meth:`SpiceServer.sessions` lists it."""

    id: int
    #: The main channel's peer (``host:port``, or ``unix``).
    peer: str
    #: Linked channels by name (``main``, ``display``, …).
    channels: tuple[str, ...]
    #: Live counters (the one-line summary logged at the end: ``metrics.summary()``).
    metrics: SessionMetrics


def _raise_open_files_limit(connections: int) -> None:
    """Let the process hold ``max_connections`` sockets (plus files), up to the hard limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            logger.warning("only %d open files allowed: max_connections is effectively lower", new)


def _check_config(config: ServerConfig) -> None:
    """What the config cannot check alone: names of the channels this server serves."""
    served = {spec.name for spec in CHANNELS.values()}
    named = {
        fault.channel
        for fault in config.faults
        if isinstance(fault, Fault) and fault.channel != ALL_CHANNELS
    }
    unknown = (set(config.plaintext_channels) | set(config.max_message_sizes) | named) - served
    if unknown:
        raise ConfigError(
            f"unknown channels: {', '.join(sorted(unknown))} (served: {', '.join(sorted(served))})"
        )


def audio_from_config(config: ServerConfig) -> AudioSource | None:
    """``config.audio`` as a source: None for off (and for auto without a sound server)."""
    if config.audio == "tone":
        return ToneSource()
    if config.audio == "auto":
        if not sound_server_reachable():
            logger.info("audio: no sound server answers (pactl info): audio off")
            return None
    elif config.audio != "desktop":
        return None
    elif not sound_server_reachable():
        raise ConfigError(
            "audio desktop: no PulseAudio/PipeWire server answers `pactl info` "
            "(pulseaudio-utils installed? XDG_RUNTIME_DIR or PULSE_SERVER set?)"
        )
    return PulseAudioSource(config.audio_source)


def microphone_from_config(config: ServerConfig, audio: AudioSource | None) -> RecordSink | None:
    """The desktop's record sink when the desktop plays (``audio`` desktop/auto), else None."""
    if config.record and isinstance(audio, PulseAudioSource):
        return PulseAudioRecordSink(config.record_sink)
    return None


class SpiceServer:
    """Serves one framebuffer source to any number of SPICE clients.

    Example::

        source = NumpySource(640, 480)
        async with SpiceServer(source, password="secret", port=5900) as server:
            print(server.uri)
            await server.serve()

    Options are :class:`~spiceserver.config.ServerConfig` fields, given either as a config or as
    keyword arguments.  ``on_input`` receives every client's input events on the event loop
    thread (default: they are logged).  ``recorders`` receive the session record (see
    :mod:`spiceserver.record`), besides the ``record_path`` file if configured.

    One port serves SPICE, WebSocket (spice-html5) and, with ``web_root``, the web client's
    files; ``unix_path`` listens on a Unix socket instead of TCP; ``tls_port`` adds TLS.
    ``sound`` is what the playback channel plays (default: the source's own,
    ``source.audio_source()``, like a scenario's tone steps, else per ``config.audio``; README
    "Sound"); ``microphone`` is where the record channel's audio goes (default: the desktop's
    sound server with ``audio`` desktop; ignored with ``record=False``).

    The built-in agent (``agent=True``, the default) shares ``clipboard`` (a
    :class:`~spiceserver.clipboard.ClipboardBackend`, such as
    :class:`~spiceserver.clipboard.MemoryClipboard`; None: no clipboard) with every client,
    and saves files clients drop in ``file_transfer_dir``, or hands them to ``on_file(name,
    data)`` (a function or coroutine function) when given; README "Clipboard and files".
    """

    def __init__(
        self,
        source: FramebufferSource,
        config: ServerConfig | None = None,
        *,
        on_input: InputHandler | None = None,
        recorders: Iterable[Recorder] = (),
        sound: AudioSource | None = None,
        microphone: RecordSink | None = None,
        clipboard: ClipboardBackend | None = None,
        on_file: OnFile | None = None,
        listen_socket: socket.socket | None = None,
        **options: Any,
    ) -> None:
        """``listen_socket``: a TCP socket already bound and listening (the CLI opens the port
        before its imports), served instead of binding ``config.host``/``port``."""
        if config is None:
            config = ServerConfig(**options)
        elif options:
            config = dataclasses.replace(config, **options)
        _check_config(config)
        self.config = config
        if config.jpeg_wan_compression != "never" and not jpeg_available():
            if config.jpeg_wan_compression == "always":
                raise ConfigError(
                    "jpeg_wan_compression='always' needs simplejpeg: "
                    "pip install 'spiceserver[jpeg]'"
                )
            logger.info("no JPEG on slow links: simplejpeg is missing (the jpeg extra)")
        self.source = source
        self._tls = (
            None
            if config.tls_port is None
            else tls_context(config.tls_cert or "", config.tls_key or "")
        )
        self._web = None if config.web_root is None else WebRoot(config.web_root)
        recorder_list = list(recorders)
        if config.record_path is not None:
            try:
                recorder_list.append(
                    JsonlRecorder(config.record_path, max_bytes=config.record_max_bytes)
                )
            except OSError as exc:
                raise ConfigError(f"cannot write the session record: {exc}") from exc
        if sound is None and (sound := source.audio_source()) is not None:
            if config.audio in ("tone", "desktop"):
                raise ConfigError(
                    f"the {source.kind} source plays its own sound (tone steps): "
                    f"drop audio={config.audio!r}"
                )
            logger.info("audio: the %s source's own sound", source.kind)
        audio_source = sound if sound is not None else audio_from_config(config)
        self._audio = (
            None
            if audio_source is None
            else AudioHub(audio_source, lambda: self.context.clock(), opus=config.audio_opus)
        )
        if not config.record:
            microphone = None
        elif microphone is None:
            microphone = microphone_from_config(config, audio_source)
        self._microphone = (
            None if microphone is None else MicrophoneHub(microphone, opus=config.audio_opus)
        )
        if clipboard is None and config.agent:
            # The X selections of a desktop, a scenario's clipboard steps.
            clipboard = source.clipboard_backend(
                config.clipboard_max_bytes, config.clipboard_timeout
            )
        self._log_limiter = install_limiter(config.log_rate, config.log_burst)
        executor = ThreadPoolExecutor(
            max_workers=config.encoder_threads, thread_name_prefix="spice-encode"
        )
        # RSA keys on threads of their own: links, however many, never queue image encodes
        # behind key generation.  Two, as many as shared the encoders' pool before: a burst
        # of links (five spice-gtk clients at once) gets its keys as fast as it did.
        self._key_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="spice-rsa")
        #: What connections and channels use of the server (internals: for tools and tests).
        self.context = ServerContext(
            config=config,
            source=source,
            sessions=SessionRegistry(
                offered_channels(
                    audio=self._audio is not None, microphone=self._microphone is not None
                ),
                max_sessions=config.max_clients,
            ),
            keys=KeyPool(self._key_executor, config.rsa_key_pool),
            failures=FailureTracker(
                base_delay=config.ticket_check_spacing,
                max_delay=config.ticket_check_max_spacing,
                window=config.ticket_failure_window,
            ),
            ticket=self._make_ticket(
                config.password, config.ticket_lifetime, config.one_shot_ticket
            ),
            executor=executor,
            encode_cache=EncodeCache(config.encode_cache_bytes),
            on_input=on_input or log_input,
            tls_enabled=self._tls is not None,
            recorders=recorder_list,
            captures=None if config.capture_dir is None else CaptureManager(config.capture_dir),
            faults=FaultInjector(config.faults) if config.faults else None,
            audio=self._audio,
            microphone=self._microphone,
            agent=AgentServices(config, clipboard=clipboard, on_file=on_file)
            if config.agent
            else None,
        )
        self._listen_socket = listen_socket
        self._listeners: list[asyncio.Server] = []
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._closed = asyncio.Event()
        self._warmup: EncoderWarmup | None = None
        if config.warmup_encoders:
            context = self.context
            # Codecs without numba kernels (raw, jpeg) are ready at once.
            context.codecs_ready = {name for name, codec in CODECS.items() if not codec.kernels}
            first = warm_order(config.image_compression)
            self._warmup = context.warmup = EncoderWarmup(context.codecs_ready, first)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen, and start the source; if either fails, what was started is stopped."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        context = self.context
        context.keys.fill()
        _raise_open_files_limit(self.config.max_connections)
        self.source.on_disconnect_request = self.disconnect_clients
        await self.source.start()
        if context.agent is not None:
            context.agent.start()
        if self._audio is not None:
            self._audio.start()
            logger.info(
                "audio: %s source, %s",
                self._audio.source.name,
                "Opus or raw" if self._audio.opus_available else "raw PCM only",
            )
        if self._microphone is not None:
            self._microphone.start()
            logger.info(
                "record: microphone to the %s sink, %s",
                self._microphone.sink.name,
                "Opus or raw" if self._microphone.opus_available else "raw PCM only",
            )
        config = self.config
        if config.unix_path is not None:
            self._server = await loop.create_unix_server(self._protocol_factory(), config.unix_path)
        elif self._listen_socket is not None:
            self._server = await loop.create_server(
                self._protocol_factory(), sock=self._listen_socket
            )
        else:
            self._server = await loop.create_server(
                self._protocol_factory(), config.host, config.port
            )
        self._listeners.append(self._server)
        if self._tls is not None:
            self._tls_server = await loop.create_server(
                self._protocol_factory(secure=True),
                config.tls_host or config.host,
                config.tls_port,
                ssl=self._tls,
                ssl_handshake_timeout=config.handshake_timeout,
            )
            self._listeners.append(self._tls_server)
            logger.info(
                "TLS listening on port %d; plain links must switch to it (%s)",
                self.tls_port,
                "except " + ",".join(sorted(config.plaintext_channels))
                if config.plaintext_channels
                else "all channels",
            )
        logger.info(
            "listening on %s (source %s %dx%d)%s",
            self.uri,
            self.source.kind,
            *self.source.size,
            self._web_note(),
        )
        if self._warmup is not None:
            # Listening already: clients are served while the kernels compile (warmup.py).
            self._warmup.start()
        if context.faults is not None:
            context.faults.log_active()
        if context.captures is not None:
            captures = context.captures
            logger.log(
                logging.INFO if captures.video_unavailable is None else logging.WARNING,
                "%s",
                captures.describe(),
            )

    def _web_note(self) -> str:
        if not self.config.websocket:
            return ""
        web = f"; web client from {self._web.root}" if self._web is not None else ""
        return f"; WebSocket on the same port{web}"

    def _protocol_factory(self, *, secure: bool = False) -> Any:
        context, web = self.context, self._web
        return lambda: StreamProtocol(context, secure=secure, web=web)

    async def close(self) -> None:
        """Stop listening, disconnect every client, stop the source."""
        context = self.context
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        for connection in list(context.connections):
            connection.abort("server closing")
        for listener in listeners:
            await listener.wait_closed()
        self._server = self._tls_server = None
        if self.config.unix_path is not None and listeners:
            _remove_socket(self.config.unix_path)
        if context.recorders:
            # The aborted connections' disconnects reach the record first (a TLS transport
            # needs more than one loop turn to report its connection lost).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await context.wait_no_connections()
            for recorder in context.recorders:
                recorder.close()
        await context.layout.aclose()  # a layout clients changed is put back first
        await self.source.stop()
        if context.agent is not None:
            await context.agent.close()
        if self._audio is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._audio.close)
        if self._microphone is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._microphone.close)
        if context.captures is not None:
            await context.captures.aclose()
        context.cancel_tasks()
        context.gate.close()
        context.executor.shutdown(wait=False, cancel_futures=True)
        self._key_executor.shutdown(wait=False, cancel_futures=True)
        self._log_limiter.flush()
        context.encode_cache.clear()
        self._closed.set()

    async def encoders_ready(self) -> None:
        """Until every codec's kernels are compiled (at once without ``warmup_encoders``:
        they then compile on first use, in the encode workers)."""
        if self._warmup is not None:
            await self._warmup.wait()

    async def serve(self) -> None:
        """Start (unless started), serve until cancelled or closed, then close."""
        if self._server is None:
            await self.start()
        try:
            await self._closed.wait()
        finally:
            await self.close()

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` (the server must be started)."""
        await self._closed.wait()

    async def __aenter__(self) -> SpiceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        """The port actually listened on (useful with ``port=0``)."""
        if self._server is None or not self._server.sockets or self.config.unix_path:
            return self.config.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int | None:
        """The TLS port actually listened on, if TLS is configured."""
        if self._tls_server is None or not self._tls_server.sockets:
            return self.config.tls_port
        return int(self._tls_server.sockets[0].getsockname()[1])

    @property
    def uri(self) -> str:
        """``spice://host:port`` (with ``?tls-port=`` when TLS is on), or ``spice+unix://PATH``,
        as remote-viewer takes them."""
        if self.config.unix_path is not None:
            return f"spice+unix://{os.path.abspath(self.config.unix_path)}"
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        uri = f"spice://{host}:{self.port}"
        if self.config.tls_port is not None:
            uri += f"?tls-port={self.tls_port}"
        return uri

    # ------------------------------------------------------------------ control

    @staticmethod
    def _make_ticket(
        password: str | None, lifetime: float | None, one_shot: bool = False, now: float = -1.0
    ) -> Ticket:
        return Ticket(
            password=None if password is None else password.encode(),
            lifetime=lifetime,
            one_shot=one_shot,
            set_at=now,
        )

    def set_ticket(self, password: str | None, lifetime: float | None = None) -> None:
        """Replace the ticket (None: any ticket); linked clients stay connected."""
        if password is not None:
            raw = password.encode()
            if not 0 < len(raw) <= MAX_PASSWORD_LENGTH or b"\0" in raw:
                raise ConfigError(
                    f"the password must be 1..{MAX_PASSWORD_LENGTH} bytes without NUL"
                )
        self.context.ticket = self._make_ticket(
            password, lifetime, self.config.one_shot_ticket, self.context.clock()
        )

    def sessions(self) -> list[SessionInfo]:
        """The live client sessions."""
        return [
            SessionInfo(
                id=session.id,
                peer=session.main.peer,
                channels=("main", *sorted(CHANNELS[t].name for t, _ in session.channels)),
                metrics=session.metrics,
            )
            for session in self.context.sessions.sessions.values()
        ]

    def disconnect_clients(self) -> None:
        """End every client session (the source asked: ``FramebufferSource.request_disconnect``).
        Call on the loop thread."""
        sessions = list(self.context.sessions.sessions.values())
        logger.info(
            "source %s asked to disconnect every client: ending %d session(s)",
            self.source.kind,
            len(sessions),
        )
        for session in sessions:
            session.main.close()  # flushes what is queued, then the client sees EOF
            self.context.end_session(session)

    def set_key_modifiers(self, modifiers: KeyModifiers) -> None:
        """The host's lock keys (Caps/Num/Scroll): KEY_MODIFIERS to every inputs channel whose
        client was told otherwise.  Call on the loop thread; cheap to call repeatedly."""
        for connection in list(self.context.connections):
            handler = connection.handler
            if isinstance(handler, InputsHandler):
                handler.set_modifiers(modifiers)


def _remove_socket(path: str) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
