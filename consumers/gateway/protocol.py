"""The gateway's client protocol, version 1: JSON text frames, one message each, validated both ways.

Every message carries `v` (the protocol version) and `type`. See README.md beside this file for the
conversation; the models here are the definition.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, model_validator

from ingest.contracts import ContractError, Nanos, Symbol, WireModel, decode
from signals.contracts import Signal

PROTOCOL_VERSION = 1

StreamId = Annotated[str, Field(pattern=r"^\d{1,20}-\d{1,20}$", description="a Redis stream entry id, ms-seq")]
Symbols = Annotated[tuple[Symbol, ...], Field(min_length=1, max_length=1024)]


class CloseCode(IntEnum):
    """WebSocket close codes the gateway uses; 4xxx mirror the HTTP status of the same meaning."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the gateway is shutting down: reconnect and resume
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # too many clients
    PROTOCOL_ERROR = 4400  # first message not a valid hello, or an unsupported version
    UNAUTHORIZED = 4401  # missing or invalid token
    AUTH_TIMEOUT = 4408  # no hello within auth_timeout_s
    SLOW_CONSUMER = 4429  # the client's queue overflowed: it reads slower than signals arrive


class _Message(WireModel):
    v: Literal[1] = PROTOCOL_VERSION


# -- client -> server ---------------------------------------------------------------------------------

class Hello(_Message):
    """First message of every connection. `token` may instead come as `Authorization: Bearer` at the handshake."""

    type: Literal["hello"] = "hello"
    token: str | None = Field(None, max_length=1024, repr=False)
    client: Annotated[str, Field(max_length=200)] | None = None


class Subscribe(_Message):
    """Start receiving signals of `symbols`; those in `resume_from` first replay what followed that entry id."""

    type: Literal["subscribe"] = "subscribe"
    symbols: Symbols
    resume_from: dict[Symbol, StreamId] = Field(default_factory=dict)
    snapshot: bool = Field(False, description="first send the latest signal of each symbol, marked snapshot")

    @model_validator(mode="after")
    def _resume_subscribed(self) -> Subscribe:
        extra = set(self.resume_from) - set(self.symbols)
        if extra:
            raise ValueError(f"resume_from names symbols not subscribed: {sorted(extra)}")
        return self


class Unsubscribe(_Message):
    type: Literal["unsubscribe"] = "unsubscribe"
    symbols: Symbols


class Ping(_Message):
    """Application-level ping (browsers cannot send WebSocket pings); answered by `pong`."""

    type: Literal["ping"] = "ping"
    nonce: Annotated[str, Field(max_length=64)] | None = None


ClientMessage = Annotated[Union[Hello, Subscribe, Unsubscribe, Ping], Field(discriminator="type")]
CLIENT_MESSAGE = TypeAdapter(ClientMessage)


# -- server -> client ---------------------------------------------------------------------------------

class Welcome(_Message):
    type: Literal["welcome"] = "welcome"
    client: str
    heartbeat_s: float
    max_queue: int


class Subscribed(_Message):
    """`positions`: per symbol, the entry id after which delivery starts; `truncated`: resume points older
    than the oldest retained entry (signals in between may have been trimmed)."""

    type: Literal["subscribed"] = "subscribed"
    symbols: tuple[Symbol, ...]
    positions: dict[Symbol, StreamId]
    truncated: tuple[Symbol, ...] = ()


class Unsubscribed(_Message):
    type: Literal["unsubscribed"] = "unsubscribed"
    symbols: tuple[Symbol, ...]


class SignalMessage(_Message):
    """A signal; `id` is its stream entry id (resume from it), absent on snapshot messages."""

    type: Literal["signal"] = "signal"
    symbol: Symbol
    id: StreamId | None
    snapshot: bool = False
    signal: Signal


class Heartbeat(_Message):
    type: Literal["heartbeat"] = "heartbeat"
    ts: Nanos


class Pong(_Message):
    type: Literal["pong"] = "pong"
    nonce: str | None = None


class ErrorMessage(_Message):
    """A request that could not be served; the connection stays open."""

    type: Literal["error"] = "error"
    code: Literal["invalid_message", "unexpected_hello", "too_many_symbols", "unavailable"]
    message: str


ServerMessage = Annotated[
    Union[Welcome, Subscribed, Unsubscribed, SignalMessage, Heartbeat, Pong, ErrorMessage],
    Field(discriminator="type"),
]
SERVER_MESSAGE = TypeAdapter(ServerMessage)


def decode_client(raw: str | bytes) -> Hello | Subscribe | Unsubscribe | Ping:
    """Validate a client message, raising `ContractError` with the reason."""
    return decode(CLIENT_MESSAGE, raw)


def decode_server(raw: str | bytes) -> Welcome | Subscribed | Unsubscribed | SignalMessage | Heartbeat | Pong | ErrorMessage:
    """Validate a server message (for clients), raising `ContractError` with the reason."""
    return decode(SERVER_MESSAGE, raw)


def signal_frame(symbol: str, entry_id: str | None, signal_json: str, snapshot: bool = False) -> str:
    """A `SignalMessage` frame around an already validated signal's JSON, built once per entry for all clients."""
    return (f'{{"v":{PROTOCOL_VERSION},"type":"signal","symbol":{json.dumps(symbol)},'
            f'"id":{json.dumps(entry_id)},"snapshot":{"true" if snapshot else "false"},"signal":{signal_json}}}')


__all__ = [
    "CLIENT_MESSAGE",
    "PROTOCOL_VERSION",
    "SERVER_MESSAGE",
    "CloseCode",
    "ContractError",
    "ErrorMessage",
    "Heartbeat",
    "Hello",
    "Ping",
    "Pong",
    "SignalMessage",
    "Subscribe",
    "Subscribed",
    "Unsubscribe",
    "Unsubscribed",
    "Welcome",
    "decode_client",
    "decode_server",
    "signal_frame",
]
