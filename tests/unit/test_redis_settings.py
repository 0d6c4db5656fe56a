"""Redis settings: URL schemes, Sentinel URLs, cluster detection, one factory for every client kind."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ingest.redis_client import async_client, parse_sentinel_url, sync_client, wants_cluster
from ingest.settings import RedisSettings


def test_sentinel_url_names_hosts_service_db_and_credentials():
    target = parse_sentinel_url("redis+sentinel://app:p%40ss@s1:26380,s2,[::1]:26381/signals-master/2")
    assert target.hosts == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert (target.service, target.db, target.tls) == ("signals-master", 2, False)
    assert (target.username, target.password) == ("app", "p@ss")
    assert parse_sentinel_url("rediss+sentinel://s1/m").tls


@pytest.mark.parametrize("url, problem", [
    ("redis+sentinel://s1:26379", "SERVICE"),
    ("redis+sentinel:///mymaster", "SERVICE"),
    ("redis+sentinel://s1:port/mymaster", "bad Sentinel address"),
    ("redis+sentinel://s1/mymaster/zero", "must be a number"),
])
def test_a_bad_sentinel_url_is_refused_when_settings_load(url, problem):
    with pytest.raises(ValidationError, match=problem):
        RedisSettings(url=url)


def test_a_url_without_scheme_is_refused_with_an_example_and_no_password():
    with pytest.raises(ValidationError, match="must start with one of redis://") as info:
        RedisSettings(url="user:hunter2@localhost:6379")
    assert "hunter2" not in str(info.value).split("input_value")[0]


def test_an_empty_url_means_unset(monkeypatch):
    monkeypatch.setenv("FINSIGNAL_REDIS_URL", "")
    assert RedisSettings().url is None


def test_environment_selects_cluster_and_sentinel_credentials(monkeypatch):
    monkeypatch.setenv("FINSIGNAL_REDIS_URL", "redis://node1:7000")
    monkeypatch.setenv("FINSIGNAL_REDIS_CLUSTER", "true")
    monkeypatch.setenv("FINSIGNAL_REDIS_SENTINEL_PASSWORD", "s3cret")
    settings = RedisSettings()
    assert settings.cluster is True and not settings.sentinel
    assert wants_cluster(settings)  # the setting wins; nothing is asked of the server
    assert "s3cret" not in repr(settings)


def test_the_factory_builds_each_kind_without_connecting():
    import redis
    import redis.asyncio
    import redis.asyncio.cluster

    sentinel = sync_client(RedisSettings(url="redis+sentinel://127.0.0.1:1/mymaster/3"))
    assert isinstance(sentinel, redis.Redis)
    assert sentinel.connection_pool.service_name == "mymaster"
    plain = async_client(RedisSettings(url="redis://127.0.0.1:1/0", cluster=False))
    assert isinstance(plain, redis.asyncio.Redis)


def test_cluster_detection_falls_back_to_one_server_when_nothing_answers():
    # The standalone client's first command then reports the connection error itself.
    assert not wants_cluster(RedisSettings(url="redis://127.0.0.1:1/0", socket_timeout_s=0.2))
