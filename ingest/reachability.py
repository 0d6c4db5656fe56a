"""Is the configured Kafka or Redis there? A bounded check before a command starts any work.

Client libraries retry a refused connection for half a minute, logging each attempt, and then raise
from deep inside; an operator who mistyped a port deserves one line at once. These checks open a
plain TCP connection first (refused, unresolvable and silent hosts are told apart), then ask the
service one question (Kafka: metadata; Redis: PING) with a short timeout.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from ingest.settings import KafkaSettings, RedisSettings


class Unreachable(ConnectionError):
    """A configured service does not answer; the message says where, why, and what to change."""


def check_kafka(kafka: KafkaSettings, *, timeout_s: float = 5.0, hint: str = "") -> None:
    """Raise `Unreachable` unless a bootstrap server answers a metadata request within `timeout_s`."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    where = f"Kafka at {kafka.bootstrap} (FINSIGNAL_KAFKA_BOOTSTRAP)"
    fix = f"start the broker or correct FINSIGNAL_KAFKA_BOOTSTRAP{hint}"
    reason = _first_open([s.strip() for s in (kafka.bootstrap or "").split(",")], 9092, timeout_s)
    if reason is not None:
        raise Unreachable(f"cannot reach {where}: {reason}; {fix}")
    timeout_ms = int(timeout_s * 1000)
    try:
        with _quiet("kafka"):
            admin = KafkaAdminClient(**kafka.client_options(), bootstrap_timeout_ms=timeout_ms,
                                     request_timeout_ms=timeout_ms, reconnect_backoff_max_ms=500)
            try:
                admin.list_topics()
            finally:
                admin.close()
    except (KafkaError, OSError) as exc:
        raise Unreachable(f"{where} accepts connections but did not answer as a Kafka broker within "
                          f"{timeout_s:g}s ({type(exc).__name__}); check the port and "
                          f"FINSIGNAL_KAFKA_SECURITY_PROTOCOL") from None


def check_redis(redis_settings: RedisSettings, *, timeout_s: float = 3.0, hint: str = "") -> None:
    """Raise `Unreachable` unless Redis answers PING within `timeout_s`."""
    import redis
    from redis.exceptions import AuthenticationError, RedisError, ResponseError

    url = redis_settings.url or ""
    where = f"Redis at {redact(url)} (FINSIGNAL_REDIS_URL)"
    parts = urlsplit(url)
    if parts.scheme != "unix":
        servers = [s.rpartition("@")[2] for s in parts.netloc.split(",") if s]
        reason = _first_open(servers, 6379, timeout_s)
        if reason is not None:
            raise Unreachable(f"cannot reach {where}: {reason}; start Redis or correct FINSIGNAL_REDIS_URL{hint}")
    if parts.scheme not in ("redis", "rediss", "unix"):
        return  # cluster and sentinel URLs: their clients discover the nodes; a node answering TCP will do here
    options = {**redis_settings.client_options(), "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    try:
        client = redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise Unreachable(f"FINSIGNAL_REDIS_URL={redact(url)!r}: {exc}") from None
    try:
        client.ping()
    except AuthenticationError as exc:
        raise Unreachable(f"{where} refused the credentials ({exc}); set FINSIGNAL_REDIS_USERNAME and "
                          "FINSIGNAL_REDIS_PASSWORD (or put them in the URL)") from None
    except ResponseError as exc:
        raise Unreachable(f"{where} answered PING with an error ({exc}); check the URL's database and "
                          "credentials") from None
    except (RedisError, OSError) as exc:
        raise Unreachable(f"cannot reach {where}: {exc}; start Redis or correct FINSIGNAL_REDIS_URL{hint}") from None
    finally:
        client.close()


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _first_open(servers: list[str], default_port: int, timeout_s: float) -> str | None:
    """None once one server accepts a TCP connection, else why none did."""
    reasons = []
    for server in servers:
        reason = _tcp(server, default_port=default_port, timeout_s=timeout_s)
        if reason is None:
            return None
        reasons.append(f"{server}: {reason}" if len(servers) > 1 else reason)
    return "; ".join(reasons) or "no host:port given"


def _tcp(server: str, *, default_port: int, timeout_s: float) -> str | None:
    """Why a TCP connection to `host:port` fails, or None when it opens."""
    host, _, port = server.rpartition(":") if ":" in server else (server, "", str(default_port))
    host = host.strip("[]")  # [::1]:9092
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except socket.gaierror:
        return "unknown host"
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except ValueError:
        return "not host:port"
    except OSError as exc:
        return str(exc.strerror or exc)


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a library's own logging (retries, back-off) while we ask it one bounded question."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)
