"""Settings of the WebSocket signal gateway (`FINSIGNAL_GATEWAY_*`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from ingest.settings import ComponentSettings


class GatewaySettings(ComponentSettings):
    """The WebSocket gateway. Tokens: `FINSIGNAL_GATEWAY_TOKENS='{"desk-a": "secret"}'` (client name -> token)."""

    section: ClassVar[str] = "gateway"

    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 to serve other hosts")
    port: int = Field(8765, ge=0, le=65535, description="0 picks a free port")
    path: str = Field("/ws", description="WebSocket endpoint; /healthz and /metrics are served beside it")
    tokens: dict[str, SecretStr] = Field(default_factory=dict, description="client name -> token",
                                         examples=[{"client-name": "token"}])
    allow_anonymous: bool = Field(False, description="accept clients without a token (trusted networks only)")
    allowed_origins: list[str] = Field(
        default_factory=list, description="browser Origins allowed to connect; ['*'] allows any"
    )
    allow_missing_origin: bool = Field(True, description="accept clients that send no Origin (non-browser)")
    heartbeat_s: float = Field(15.0, gt=0, description="interval of heartbeat messages to every client")
    ping_interval_s: float | None = Field(20.0, gt=0, description="WebSocket pings to detect dead peers")
    ping_timeout_s: float | None = Field(20.0, gt=0)
    auth_timeout_s: float = Field(5.0, gt=0, description="time a client has to send its hello")
    close_timeout_s: float = Field(5.0, gt=0, description="time a closing handshake may take before aborting")
    max_queue: int = Field(1000, ge=1, description="messages queued per client; a client that overflows it is "
                                                   "disconnected with close code 4429")
    max_symbols: int = Field(256, ge=1, description="symbols one client may subscribe to")
    max_clients: int = Field(10_000, ge=1)
    max_message_bytes: int = Field(64 * 1024, ge=1024, description="largest client message accepted")
    write_limit: int = Field(64 * 1024, ge=1024, description="per-connection socket write buffer high-water mark")
    send_buffer_bytes: int | None = Field(256 * 1024, ge=4096, description=(
        "kernel send buffer per client (SO_SNDBUF); bounds what a stalled client holds in memory and how long it "
        "takes to be detected; unset: the kernel's autotuning (up to net.ipv4.tcp_wmem max)"))
    compression: bool = Field(False, description="permessage-deflate; costs CPU per client per message")
    read_count: int = Field(500, ge=1, description="entries per Redis read")
    read_block_ms: int = Field(1000, ge=1, description="longest Redis blocking read")
