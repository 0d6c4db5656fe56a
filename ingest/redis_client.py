"""Redis clients built from `RedisSettings`: one server, a Sentinel-managed master, or a Cluster; sync or asyncio.

Every component (worker, ingest dedupe store, strategy SDK, `finsignal watch`, `finsignal run`, the gateway)
gets its client here, so a deployment switches topology by changing `FINSIGNAL_REDIS_URL` (and
`FINSIGNAL_REDIS_CLUSTER`) alone.

- `redis://host:6379/0`, `rediss://...`, `unix://...`: one server, or with `cluster=true` any node of a
  Cluster (the client discovers the others and follows MOVED/ASK redirections). Left unset, `cluster`
  is asked of the server (`INFO cluster`) once, when the client is built.
- `redis+sentinel://[user:password@]host[:port][,host[:port]...]/SERVICE[/DB]`: the master the
  Sentinels name SERVICE, re-resolved on failover; `rediss+sentinel://` talks TLS to the master.
  Credentials in the URL or `FINSIGNAL_REDIS_USERNAME/PASSWORD` are the master's;
  `FINSIGNAL_REDIS_SENTINEL_USERNAME/PASSWORD` are the Sentinels' own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import structlog

from ingest.settings import RedisSettings, redact_url

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

log = structlog.get_logger(__name__)

SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a `redis+sentinel://` URL names."""

    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Split a `redis+sentinel://` URL; raises ValueError saying what is wrong."""
    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    credentials, _, hostlist = netloc.rpartition("@")
    username = password = None
    if credentials:
        user, has_password, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    hosts = []
    for item in filter(None, hostlist.split(",")):
        if item.startswith("["):  # [IPv6]:port
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        try:
            hosts.append((host, int(port) if port else SENTINEL_PORT))
        except ValueError:
            raise ValueError(f"bad Sentinel address {item!r} in {redact_url(url)}") from None
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts:
        raise ValueError(f"{redact_url(url)}: expected {scheme}://host[:port][,host[:port]...]/SERVICE[/DB]")
    try:
        db = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ValueError(f"{redact_url(url)}: the database after the service name must be a number") from None
    return SentinelTarget(tuple(hosts), unquote(parts[0]), db, scheme.lower().startswith("rediss"), username,
                          password)


def _sentinel_kwargs(settings: RedisSettings) -> dict[str, Any]:
    opts: dict[str, Any] = {"socket_timeout": settings.socket_timeout_s,
                            "socket_connect_timeout": settings.socket_timeout_s}
    if settings.sentinel_username:
        opts["username"] = settings.sentinel_username
    if settings.sentinel_password:
        opts["password"] = settings.sentinel_password.get_secret_value()
    return opts


def _master_kwargs(settings: RedisSettings, target: SentinelTarget) -> dict[str, Any]:
    opts = settings.client_options()
    if target.username and "username" not in opts:
        opts["username"] = target.username
    if target.password and "password" not in opts:
        opts["password"] = target.password
    if target.tls:
        opts["ssl"] = True
    elif "ssl_ca_certs" in opts:
        del opts["ssl_ca_certs"]  # only meaningful with TLS
    return opts


def wants_cluster(settings: RedisSettings) -> bool:
    """Whether `settings.url` names a Cluster: the setting, else the server's answer to `INFO cluster`."""
    if settings.sentinel:
        return False
    if settings.cluster is not None:
        return settings.cluster
    import redis
    from redis.exceptions import RedisError

    probe = redis.Redis.from_url(settings.url, **settings.client_options())
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    except (RedisError, OSError) as exc:
        # Unreachable now: build a standalone client, whose first command reports the same error.
        log.debug("redis.cluster_probe_failed", error=repr(exc))
        return False
    finally:
        probe.close()


def sync_client(settings: RedisSettings) -> redis.Redis | redis.cluster.RedisCluster:
    """A blocking client for whatever `settings.url` names."""
    import redis
    import redis.cluster
    import redis.sentinel

    opts = settings.client_options()
    if settings.sentinel:
        target = parse_sentinel_url(settings.url or "")
        sentinel = redis.sentinel.Sentinel(list(target.hosts), sentinel_kwargs=_sentinel_kwargs(settings))
        return sentinel.master_for(target.service, db=target.db, **_master_kwargs(settings, target))
    if wants_cluster(settings):
        return redis.cluster.RedisCluster.from_url(settings.url, **opts)
    return redis.Redis.from_url(settings.url, **opts)


def async_client(settings: RedisSettings) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
    """An asyncio client for whatever `settings.url` names (close it with `await client.aclose()`)."""
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.sentinel

    opts = settings.client_options()
    if settings.sentinel:
        target = parse_sentinel_url(settings.url or "")
        sentinel = redis.asyncio.sentinel.Sentinel(list(target.hosts), sentinel_kwargs=_sentinel_kwargs(settings))
        return sentinel.master_for(target.service, db=target.db, **_master_kwargs(settings, target))
    if wants_cluster(settings):
        return redis.asyncio.cluster.RedisCluster.from_url(settings.url, **opts)
    return redis.asyncio.Redis.from_url(settings.url, **opts)


def is_cluster(client: Any) -> bool:
    """True for a Cluster client (sync or asyncio), whose multi-key commands must stay within one slot."""
    import redis.asyncio.cluster
    import redis.cluster

    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def key_slot(key: str) -> int:
    """The Cluster hash slot of a key (honours `{hash tags}`)."""
    from redis.crc import key_slot as _slot

    return _slot(key.encode())
