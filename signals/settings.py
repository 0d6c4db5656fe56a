"""Settings of the signal worker and of the Redis it publishes to."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from ingest.settings import ComponentSettings


class RedisSettings(ComponentSettings):
    """Redis connection (`FINSIGNAL_REDIS_*`). Use a `rediss://` URL for TLS."""

    section: ClassVar[str] = "redis"

    url: str | None = Field(None, description="redis:// or rediss:// URL; unset means `finsignal run` starts one")
    username: str | None = None
    password: SecretStr | None = None
    ssl_ca_certs: str | None = None
    socket_timeout_s: float = 5.0

    def client_options(self) -> dict:
        """Keyword arguments for `redis.Redis.from_url` (sync or asyncio)."""
        if not self.url:
            raise ValueError("FINSIGNAL_REDIS_URL is not set (or use `finsignal run` for an embedded Redis)")
        opts: dict = {"socket_timeout": self.socket_timeout_s, "socket_connect_timeout": self.socket_timeout_s}
        if self.username:
            opts["username"] = self.username
        if self.password:
            opts["password"] = self.password.get_secret_value()
        if self.ssl_ca_certs:
            opts["ssl_ca_certs"] = self.ssl_ca_certs
        return opts


class WorkerSettings(ComponentSettings):
    """The scoring worker (`FINSIGNAL_WORKER_*`)."""

    section: ClassVar[str] = "worker"

    model_dir: Path | None = Field(None, description="checkpoint directory; unset means the demo model")
    group_id: str = "finsignal-worker"
    max_batch: int = Field(32, ge=1, description="documents scored in one forward pass at most")
    poll_timeout_ms: int = Field(200, ge=0)
    no_symbol_policy: Literal["market", "skip"] = Field(
        "market", description="documents naming no symbol: a market-wide signal, or skip (counted and logged)"
    )
    market_symbol: str = "MARKET"
    stream_maxlen: int = Field(100_000, ge=1, description="approximate cap of each signals:{SYMBOL} stream")
    dedupe_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="how long a signal id is remembered as published")
    audit_topic: bool = Field(True, description="also publish each signal to the `signals` Kafka topic")
    metrics_port: int | None = Field(None, description="serve Prometheus metrics on this port")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; unset means torch's default")
