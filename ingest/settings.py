"""Settings shared by every component: the base class, Kafka connection and topic names.

Each component has one settings model. Values come, highest priority first, from
keyword arguments, `FINSIGNAL_<SECTION>_<FIELD>` environment variables, the section
`[<section>]` of the TOML file named by `FINSIGNAL_CONFIG`, and the defaults here,
which run out of the box.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "FINSIGNAL_CONFIG"
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")


def redact_url(url: str) -> str:
    """The URL with any credentials replaced by `***`, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{path}"


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names the setting and how to fix it."""


class ComponentSettings(BaseSettings):
    """Base for one component's settings: frozen, unknown keys rejected, env + TOML file."""

    section: ClassVar[str] = ""
    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except SettingsError as exc:  # a complex field (dict, list) whose variable is not JSON
            raise ConfigError(_unparsable(type(self), exc)) from None

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets `field`."""
        return f"FINSIGNAL_{cls.section.upper()}_{field.upper()}" if cls.section else field

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.section:
            cls.model_config = SettingsConfigDict(
                extra="forbid", frozen=True, env_prefix=f"FINSIGNAL_{cls.section.upper()}_"
            )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_ENV)
        if path:
            if not Path(path).is_file():
                raise ConfigError(f"{CONFIG_ENV}={path!r}: no such file; point it at a TOML settings file "
                                  f"or unset it")
            sources.append(
                TomlConfigSettingsSource(settings_cls, toml_file=Path(path), toml_table_header=(cls.section,))
            )
        return tuple(sources)


def _unparsable(settings_cls: type[ComponentSettings], exc: SettingsError) -> str:
    """One line for a variable pydantic-settings could not parse; the value is not echoed (it may be a secret)."""
    found = re.search(r'field "([^"]+)"', str(exc))
    field = found.group(1) if found else "?"
    info = settings_cls.model_fields.get(field)
    annotation = str(info.annotation) if info else ""
    if info is not None and info.examples:
        example = f"'{json.dumps(info.examples[0])}'"
    else:
        example = '\'{"name": "value"}\'' if "dict" in annotation else '\'["value"]\'' if "list" in annotation else "JSON"
    return (f"{settings_cls.env_name(field)}: not valid JSON ({exc.__cause__ or exc}); "
            f"write it as JSON, e.g. {settings_cls.env_name(field)}={example}")


class KafkaSettings(ComponentSettings):
    """Connection to the Kafka cluster (`FINSIGNAL_KAFKA_*`)."""

    section: ClassVar[str] = "kafka"

    bootstrap: str | None = Field(
        None, description="host:port list; unset means `finsignal run` starts an embedded broker"
    )
    client_id: str = "finsignal"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    partitions: int = Field(3, ge=1, description="partitions for topics this app creates")
    replication_factor: int = Field(1, ge=1)
    session_timeout_ms: int = Field(10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    fetch_max_wait_ms: int = Field(
        50, ge=0, description="longest a fetch waits for data; brokers that do not wake a waiting fetch "
        "on new data (Tansu) add up to this much latency"
    )

    def client_options(self) -> dict[str, Any]:
        """Options common to producer, consumer and admin clients."""
        if not self.bootstrap:
            raise ValueError("FINSIGNAL_KAFKA_BOOTSTRAP is not set (or use `finsignal run` for an embedded broker)")
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.ssl_cafile:
            opts["ssl_cafile"] = self.ssl_cafile
        return opts


class RedisSettings(ComponentSettings):
    """Redis connection (`FINSIGNAL_REDIS_*`): one server, a Sentinel-managed master, or a Cluster.

    Build clients with `ingest.redis_client.sync_client` / `async_client`, never from the URL alone.
    """

    section: ClassVar[str] = "redis"

    url: str | None = Field(
        None, description="redis:// or rediss:// (TLS) URL of a server or of any Cluster node, or "
        "redis+sentinel://[user:password@]host[:port][,host[:port]...]/SERVICE[/DB] (rediss+sentinel:// for TLS) "
        "for the master Sentinel names SERVICE; unset means `finsignal run` starts one")
    cluster: bool | None = Field(
        None, description="the URL names a Redis Cluster node; unset asks the server (INFO cluster) when connecting")
    username: str | None = None
    password: SecretStr | None = None
    sentinel_username: str | None = Field(None, description="the Sentinels' own ACL user, if they require one")
    sentinel_password: SecretStr | None = Field(None, description="the Sentinels' own password, if they require one")
    ssl_ca_certs: str | None = None
    socket_timeout_s: float = 5.0

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if not url:  # FINSIGNAL_REDIS_URL= (empty) means unset, as for `finsignal run`'s embedded Redis
            return None
        if "://" not in url:
            shown = redact_url(f"redis://{url}")
            raise ValueError(f"no scheme; write {shown} (rediss:// for TLS): it must start with one of "
                             + ", ".join(f"{s}://" for s in REDIS_SCHEMES))
        scheme, sep, _ = url.partition("://")
        if not sep or scheme.lower() not in REDIS_SCHEMES:
            raise ValueError(f"Redis URL {redact_url(url)!r} must start with one of "
                             + ", ".join(f"{s}://" for s in REDIS_SCHEMES) + " (e.g. redis://localhost:6379/0)")
        if scheme.lower().endswith("+sentinel"):
            from ingest.redis_client import parse_sentinel_url  # here: that module imports this one

            parse_sentinel_url(url)
        return url

    @property
    def sentinel(self) -> bool:
        """The URL names Sentinels rather than a server."""
        return bool(self.url) and self.url.partition("://")[0].lower().endswith("+sentinel")

    def client_options(self) -> dict:
        """Connection keyword arguments common to every client kind: credentials, TLS CA, timeouts."""
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


class TopicSettings(ComponentSettings):
    """Kafka topic names (`FINSIGNAL_TOPICS_*`)."""

    section: ClassVar[str] = "topics"

    news: str = "news"
    filings: str = "filings"
    kline: str = "market.bybit.kline"
    trade: str = "market.bybit.trade"
    orderbook: str = "market.bybit.orderbook"
    ticker: str = "market.bybit.ticker"
    signals: str = "signals"
    signals_shadow: str = "signals.shadow"  # shadow model's signals (model lifecycle); no strategy reads them
    deadletter: str = "deadletter"

    def all(self) -> list[str]:
        """Every topic the pipeline uses, in a stable order."""
        return list(self.model_dump().values())

    def market(self) -> dict[str, str]:
        """Market event type -> topic."""
        return {"kline": self.kline, "trade": self.trade, "orderbook": self.orderbook, "ticker": self.ticker}
