"""The main channel (type 1), sans I/O.

Order that makes spice-gtk open the other channels (SPICE-REFERENCE 3.3): INIT first, then
CHANNELS_LIST only after the client's ATTACH_CHANNELS (pitfall 7).  We start in CLIENT mouse
mode (absolute positions) and grant any supported MOUSE_MODE_REQUEST with a MOUSE_MODE reply.

A request that changes nothing gets no reply: the channel list is sent once (it never changes
here), and a MOUSE_MODE only when the mode changed, as ``spice:server/reds.cpp``
``reds_set_mouse_mode`` does.  So a client cannot make the server talk by repeating itself:
a flood of ATTACH_CHANNELS that is never read queues nothing.

With an :class:`~spiceserver.protocol.agent.AgentStream` (``agent=``) the server is the
client's VDAgent: MAIN_INIT says ``agent_connected=1`` with :data:`~spiceserver.protocol.agent.
WINDOW_SIZE` tokens, AGENT_DATA goes to the stream (its events come out with the channel's),
AGENT_TOKEN is returned as the stream says, and :meth:`MainChannel.send_agent` moves the
stream's queued pieces into AGENT_DATA messages.  Without one, the agent messages are only
noted (:class:`~spiceserver.protocol.events.AgentMessage`).
"""

from __future__ import annotations

from typing import ClassVar

from spiceserver.protocol import messages as m
from spiceserver.protocol.agent import WINDOW_SIZE, AgentStream
from spiceserver.protocol.channel import ChannelProtocol, Handler
from spiceserver.protocol.enums import ChannelType, MainCap, MainClientMsg, MouseMode, has_cap
from spiceserver.protocol.events import AgentMessage, MouseModeChanged, MouseModeRequested

__all__ = ["MainChannel"]


def mm_time(now: float) -> int:
    """The multimedia clock in ms (u32, wraps) from the owner's monotonic seconds."""
    return int(now * 1000) & 0xFFFF_FFFF


class MainChannel(ChannelProtocol):
    channel_type = ChannelType.MAIN

    def __init__(
        self,
        *,
        session_id: int,
        channels: tuple[tuple[int, int], ...],
        name: str = "spiceserver",
        uuid: bytes = bytes(16),
        mouse_modes: MouseMode = MouseMode.SERVER | MouseMode.CLIENT,
        ram_hint: int = 0,
        agent: AgentStream | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.session_id = session_id
        self.channels = channels
        self.name = name
        self.uuid = uuid
        self.supported_modes = mouse_modes
        self.mouse_mode = MouseMode.CLIENT if MouseMode.CLIENT in mouse_modes else MouseMode.SERVER
        # spice-gtk sizes its GLZ window as clamp(ram_hint / 2, 12 MiB, 64 MiB)
        # (spice-gtk:src/spice-session.c spice_session_set_caches_hints).  0, what
        # libspice-server sends without a QXL device, gives the smallest, 3,145,728 pixels:
        # our dictionary for that session keeps no more (one client of a 1920x1080 desktop:
        # -17 MiB RSS; session bytes +0.1 %).
        self.ram_hint = ram_hint
        self.attached = False
        self.agent = agent
        self._agent_connected = agent is not None

    def start(self, now: float) -> None:
        """Queue INIT (and NAME/UUID if the client has NAME_AND_UUID) right after the link."""
        self.set_time(now)
        self.send(
            m.MainInit(
                session_id=self.session_id,
                display_channels_hint=1,
                supported_mouse_modes=int(self.supported_modes),
                current_mouse_mode=int(self.mouse_mode),
                agent_connected=int(self._agent_connected),  # 0: pitfall 11
                agent_tokens=WINDOW_SIZE if self._agent_connected else 0,
                multi_media_time=mm_time(now),
                ram_hint=self.ram_hint,
            )
        )
        if has_cap(self.client_channel_caps, MainCap.NAME_AND_UUID):
            self.send(m.Name(name=self.name))
            self.send(m.Uuid(uuid=self.uuid))
        self.send(m.MultiMediaTime(time=mm_time(now)))
        self.ping(now)

    def _on_attach_channels(self, message: m.AttachChannels, now: float) -> None:
        if self.attached:
            return  # the list has not changed: a repeat gets no second copy
        self.attached = True
        self.send(m.ChannelsList(channels=self.channels))

    def _on_mouse_mode_request(self, message: m.MouseModeRequest, now: float) -> None:
        requested = message.mode
        valid = requested in (MouseMode.SERVER, MouseMode.CLIENT)
        granted = bool(valid and requested & self.supported_modes)
        self._events.append(MouseModeRequested(mode=requested, granted=granted))
        if not granted or requested == self.mouse_mode:
            return  # nothing changed: no reply (spice-server reds_set_mouse_mode)
        self.mouse_mode = MouseMode(requested)
        self._events.append(MouseModeChanged(mode=requested))
        self.send(
            m.MouseModeMsg(supported_modes=int(self.supported_modes), current_mode=self.mouse_mode)
        )

    def set_agent_connected(self, connected: bool) -> None:
        """The agent appears (AGENT_CONNECTED_TOKENS if the client has the main cap, else
        AGENT_CONNECTED) or goes away (AGENT_DISCONNECTED); the client resets its agent
        state either way (``spice-gtk:src/channel-main.c`` ``spice_main_channel_reset_agent``)."""
        if self.agent is None or connected == self._agent_connected:
            return
        self._agent_connected = connected
        if not connected:
            self.send(m.AgentDisconnected(error_code=0))
            return
        self.agent.reset_client_tokens()
        if has_cap(self.client_channel_caps, MainCap.AGENT_CONNECTED_TOKENS):
            self.send(m.AgentConnectedTokens(num_tokens=WINDOW_SIZE))
        else:
            self.send(m.AgentConnected())

    def send_agent(self, budget: int) -> int:
        """Queue AGENT_DATA for about ``budget`` bytes of the agent's pieces (and any
        AGENT_TOKEN due); returns the bytes queued."""
        agent = self.agent
        if agent is None:
            return 0
        self.return_agent_tokens()
        if not self._agent_connected:
            return 0
        sent = 0
        for piece in agent.pieces(budget):
            self.send(m.ServerAgentData(data=piece))
            sent += len(piece)
        return sent

    def return_agent_tokens(self) -> None:
        if self.agent is not None and (tokens := self.agent.tokens_to_return()):
            self.send(m.ServerAgentToken(num_tokens=tokens))

    def _on_agent_start(self, message: m.AgentStart, now: float) -> None:
        if self.agent is None:
            self._on_agent(message, now)
        else:
            self.agent.start(message.num_tokens)

    def _on_agent_data(self, message: m.AgentData, now: float) -> None:
        agent = self.agent
        if agent is None or not self._agent_connected:
            self._on_agent(message, now)
            return
        agent.receive(message.data)
        self._events.extend(agent.events())
        self.return_agent_tokens()

    def _on_agent_token(self, message: m.AgentToken, now: float) -> None:
        if self.agent is None:
            self._on_agent(message, now)
        else:
            self.agent.add_tokens(message.num_tokens)

    def _on_agent(self, message: m.Message, now: float) -> None:
        size = len(message.data) if isinstance(message, m.AgentData) else 4
        self._events.append(
            AgentMessage(
                name=MainClientMsg(message.TYPE).name.lower(), type=message.TYPE, size=size
            )
        )

    _handlers: ClassVar[dict[type[m.Message], Handler]] = {
        m.AttachChannels: _on_attach_channels,
        m.MouseModeRequest: _on_mouse_mode_request,
        m.ClientInfo: ChannelProtocol._ignore,  # obsolete (pitfall 10)
        m.AgentStart: _on_agent_start,
        m.AgentData: _on_agent_data,
        m.AgentToken: _on_agent_token,
        m.MigrateConnected: ChannelProtocol._ignore,
        m.MigrateConnectError: ChannelProtocol._ignore,
        m.MigrateEnd: ChannelProtocol._ignore,
        m.MigrateDstDoSeamless: ChannelProtocol._ignore,
        m.MigrateConnectedSeamless: ChannelProtocol._ignore,
        m.QualityIndicator: ChannelProtocol._ignore,
    }
