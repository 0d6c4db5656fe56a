"""Redis with AUTH and an ACL user: the worker publishes with the configured credentials, is refused without, and
never writes the password to its logs (DEBUG level, JSON and the start-up of every client included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from finsignal.embedded import EmbeddedRedis
from ingest.kafka import ensure_topics, make_producer
from ingest.settings import KafkaSettings
from signals.settings import RedisSettings
from tests.conftest import FAST_GROUP, eventually
from tests.faults.helpers import signal_document_ids
from tests.integration.test_pipeline import committed_total, make_docs

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-Zq81-never-logged"
WORKER_USER = "finsignal-worker"
WORKER_PASSWORD = "worker-Xv27-never-logged"
KAFKA_PASSWORD = "kafka-Pm55-never-logged"


class SecuredRedis(EmbeddedRedis):
    """redis-server requiring a password, with an ACL user limited to what the worker touches."""

    def command(self) -> list[str]:
        return [*super().command(), "--requirepass", ADMIN_PASSWORD,
                "--user", WORKER_USER, "on", f">{WORKER_PASSWORD}", "resetchannels", "~signals:*", "~finsignal:*",
                "&signals.*", "+@read", "+@write", "+@scripting", "+@connection", "+@stream", "+@pubsub"]


@pytest.fixture
def secured_redis():
    with SecuredRedis() as server:
        yield server


def admin_client(server: EmbeddedRedis):
    import redis

    return redis.Redis.from_url(server.url, password=ADMIN_PASSWORD)


def spawn_worker(kafka: KafkaSettings, topics, redis_url: str, model_dir: Path, log_path: Path,
                 **redis_env: str) -> subprocess.Popen:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("FINSIGNAL_REDIS_")}
    env = {
        **inherited,
        "FINSIGNAL_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "FINSIGNAL_KAFKA_SESSION_TIMEOUT_MS": str(FAST_GROUP["session_timeout_ms"]),
        "FINSIGNAL_KAFKA_HEARTBEAT_INTERVAL_MS": str(FAST_GROUP["heartbeat_interval_ms"]),
        "FINSIGNAL_REDIS_URL": redis_url,
        "FINSIGNAL_WORKER_MODEL_DIR": str(model_dir),
        "FINSIGNAL_WORKER_GROUP_ID": f"secure-{topics.news}",
        "FINSIGNAL_WORKER_MARKET_CONTEXT": "false",
        "FINSIGNAL_LOG_LEVEL": "DEBUG",
        "FINSIGNAL_LOG_FORMAT": "json",
        **{f"FINSIGNAL_TOPICS_{k.upper()}": v for k, v in topics.model_dump().items()},
        **{f"FINSIGNAL_REDIS_{k.upper()}": v for k, v in redis_env.items()},
    }
    return subprocess.Popen([sys.executable, "-m", "finsignal.cli", "worker"], env=env,
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def publish_docs(kafka_settings, topics, n: int):
    ensure_topics(kafka_settings, topics.all())
    docs = make_docs(n)
    producer = make_producer(kafka_settings)
    for doc in docs:
        producer.send(topics.news, key=doc.key, value=doc.to_bytes())
    producer.flush()
    producer.close()
    return docs


def test_worker_publishes_as_its_acl_user_and_never_logs_a_secret(tiny_model_dir, kafka_settings, topics,
                                                                  secured_redis, tmp_path):
    docs = publish_docs(kafka_settings, topics, 30)
    symbols = {s for d in docs for s in d.symbols}
    log_path = tmp_path / "worker.log"
    proc = spawn_worker(kafka_settings, topics, secured_redis.url, tiny_model_dir, log_path,
                        username=WORKER_USER, password=WORKER_PASSWORD)
    admin = admin_client(secured_redis)
    try:
        eventually(lambda: len(signal_document_ids(admin, symbols)) == len(docs), timeout_s=120)
    finally:
        stop(proc)
    ids = signal_document_ids(admin, symbols)
    admin.close()
    log = log_path.read_text(errors="replace")
    print(f"\nredis ACL: documents in={len(docs)}, signals out={len(ids)}, log lines={log.count(chr(10))}")
    assert proc.returncode == 0, log[-2000:]
    assert sorted(ids) == sorted(d.id for d in docs)
    assert '"event": "signal.published"' in log  # DEBUG lines were written, so the check below means something
    assert WORKER_PASSWORD not in log and ADMIN_PASSWORD not in log


def test_worker_without_credentials_is_refused_and_commits_nothing(tiny_model_dir, kafka_settings, topics,
                                                                   secured_redis, tmp_path):
    docs = publish_docs(kafka_settings, topics, 10)
    symbols = {s for d in docs for s in d.symbols}
    log_path = tmp_path / "worker.log"
    proc = spawn_worker(kafka_settings, topics, secured_redis.url, tiny_model_dir, log_path,
                        username=WORKER_USER, password="wrong-password")
    # The worker checks its Redis credentials before loading the model and refuses to start; should the
    # check pass and the publish fail (credentials revoked later), it retries forever without committing.
    try:
        eventually(lambda: proc.poll() is not None
                   or log_path.read_text(errors="replace").count("worker.publish_failed") >= 2, timeout_s=120)
    finally:
        stop(proc, signal.SIGKILL)
    admin = admin_client(secured_redis)
    ids = signal_document_ids(admin, symbols)
    admin.close()
    committed = committed_total(kafka_settings, topics, f"secure-{topics.news}")
    log = log_path.read_text(errors="replace")
    print(f"\nredis refused: documents in={len(docs)}, signals out={len(ids)}, committed={committed}")
    assert "refused the credentials" in log or "AuthenticationError" in log or "WRONGPASS" in log, log[-2000:]
    assert ids == [] and committed == 0
    assert "wrong-password" not in log


def test_settings_hold_secrets_as_secret_types():
    redis_settings = RedisSettings(url="redis://h:6379/0", username="u", password=WORKER_PASSWORD)
    kafka = KafkaSettings(bootstrap="h:9092", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                          sasl_username="u", sasl_password=KAFKA_PASSWORD, ssl_cafile="/ca.pem")
    for settings in (redis_settings, kafka):
        assert WORKER_PASSWORD not in repr(settings) + str(settings) + settings.model_dump_json()
        assert KAFKA_PASSWORD not in repr(settings) + str(settings) + settings.model_dump_json()
    # ...and reach the clients only through client_options().
    assert redis_settings.client_options()["password"] == WORKER_PASSWORD
    opts = kafka.client_options()
    assert (opts["security_protocol"], opts["sasl_mechanism"], opts["sasl_plain_password"], opts["ssl_cafile"]) == (
        "SASL_SSL", "SCRAM-SHA-512", KAFKA_PASSWORD, "/ca.pem")


def test_ingest_dedupe_store_authenticates_with_the_configured_credentials(secured_redis, monkeypatch):
    import asyncio

    import redis.exceptions

    from ingest.runner import _seen

    async def mark_and_check(store) -> set[str]:
        try:
            await store.mark(["doc-1"])
            return await store.seen(["doc-1", "doc-2"])
        finally:
            await store.close()

    monkeypatch.setenv("FINSIGNAL_REDIS_USERNAME", WORKER_USER)
    monkeypatch.setenv("FINSIGNAL_REDIS_PASSWORD", WORKER_PASSWORD)
    assert asyncio.run(mark_and_check(_seen(secured_redis.url, "news", 60))) == {"doc-1"}
    monkeypatch.delenv("FINSIGNAL_REDIS_USERNAME")
    monkeypatch.delenv("FINSIGNAL_REDIS_PASSWORD")
    with pytest.raises(redis.exceptions.AuthenticationError):
        asyncio.run(mark_and_check(_seen(secured_redis.url, "news", 60)))
