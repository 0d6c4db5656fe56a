"""The signal store on a real 3-node Redis Cluster and behind a real Sentinel.

The worker publishes through the Cluster (real Tansu broker), a second consumer group re-scores every
document as a crash-and-redeliver would, and each document still yields exactly one signal; the SDK,
`finsignal watch` and the gateway read the streams back across slots.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import websockets

from consumers.gateway.protocol import Hello, Subscribe, decode_server
from consumers.gateway.server import Gateway
from consumers.gateway.settings import GatewaySettings
from consumers.stream import SignalStream, known_symbols, latest
from finsignal.embedded import EmbeddedRedis
from ingest.contracts import Document
from ingest.kafka import ensure_topics, make_producer
from ingest.redis_client import async_client, is_cluster, sync_client
from ingest.settings import KafkaSettings, RedisSettings, TopicSettings
from signals.contracts import decode_signal
from signals.keys import KEYS
from signals.model import SentimentModel
from signals.redis_sink import RedisSignalSink
from signals.settings import WorkerSettings
from signals.worker import Worker
from tests.conftest import eventually
from tests.consumers.helpers import make_signal, run
from tests.integration.test_pipeline import committed_total
from tests.redis_topologies import RedisClusterProcesses, Sentinel, redis_cli_binary

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(redis_cli_binary() is None, reason="redis-cli (creates the cluster) not installed")]

SYMBOLS = ("AAPL", "BTCUSDT", "ETHUSDT", "TSLA")
DOCS = 24


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster_settings(redis_cluster: RedisClusterProcesses) -> RedisSettings:
    return RedisSettings(url=redis_cluster.url)  # `cluster` unset: detected from the server


@pytest.fixture(scope="module")
def cluster_client(cluster_settings: RedisSettings):
    client = sync_client(cluster_settings)
    yield client
    client.close()


def all_signals(client, symbols=SYMBOLS) -> list:
    return [decode_signal(fields[b"signal"]) for s in symbols for _, fields in client.xrange(KEYS.stream(s))]


def run_worker(model_dir, kafka: KafkaSettings, topics: TopicSettings, redis: RedisSettings, group: str,
               until) -> Worker:
    worker = Worker(SentimentModel.load(model_dir), kafka=kafka, topics=topics, redis_settings=redis,
                    settings=WorkerSettings(group_id=group, poll_timeout_ms=100))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        eventually(until, timeout_s=90)
    finally:
        worker.stop()
        thread.join(30)
    return worker


@dataclass(frozen=True)
class Published:
    docs: list[Document]
    first_entries: dict[str, list[str]]  # symbol -> stream entry ids after the first worker


@pytest.fixture(scope="module")
def published(tiny_model_dir, kafka_broker, cluster_settings, cluster_client) -> Published:
    """Documents on four symbols, scored by one worker group, then all re-scored by a second group."""
    import uuid

    from tests.conftest import FAST_GROUP

    kafka = KafkaSettings(bootstrap=kafka_broker.bootstrap, **FAST_GROUP)
    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(**{name: f"{value}.{tag}" for name, value in TopicSettings().model_dump().items()})
    ensure_topics(kafka, topics.all())
    docs = [Document.create(kind="news", source="test", title=f"Company {i} beats estimates and raises guidance",
                            url=f"https://example.com/cluster/{tag}/{i}", symbols=[SYMBOLS[i % len(SYMBOLS)]],
                            ts_event=1_800_000_000_000_000_000 + i * 1_000_000_000,
                            ts_ingest=1_800_000_000_000_000_000 + i * 1_000_000_000)
            for i in range(DOCS)]
    producer = make_producer(kafka)
    for doc in docs:
        producer.send(topics.news, key=doc.key, value=doc.to_bytes())
    producer.flush()
    producer.close()
    first = f"first-{tag}"
    run_worker(tiny_model_dir, kafka, topics, cluster_settings, first,
               lambda: committed_total(kafka, topics, first) == DOCS)
    entries = {s: [e[0].decode() for e in cluster_client.xrange(KEYS.stream(s))] for s in SYMBOLS}
    # A second group reads every document again and publishes every signal again: what a crash
    # before the offset commit does to a batch, for all of them at once.
    second = f"second-{tag}"
    run_worker(tiny_model_dir, kafka, topics, cluster_settings, second,
               lambda: committed_total(kafka, topics, second) == DOCS)
    return Published(docs, entries)


def test_each_publish_stays_in_one_slot_and_symbols_spread_over_nodes(cluster_client):
    assert is_cluster(cluster_client)
    nodes = {cluster_client.get_node_from_key(KEYS.stream(s)).name for s in SYMBOLS}
    assert len(nodes) >= 2, "the test symbols should live on different nodes"
    # The layout before this fix put one publish's keys in four slots: the Cluster refuses that.
    with pytest.raises(Exception, match="same key slot|CROSSSLOT"):
        cluster_client.eval("return 1", 2, "signals:BTCUSDT", "finsignal:seen:0123")


def test_worker_publishes_through_the_cluster_exactly_once(published, cluster_client):
    signals = all_signals(cluster_client)
    assert sorted(s.document_ids[0] for s in signals) == sorted(d.id for d in published.docs)
    assert len({s.id for s in signals}) == DOCS
    for sym in SYMBOLS:  # the second group's re-publish added nothing to any stream
        assert [e[0].decode() for e in cluster_client.xrange(KEYS.stream(sym))] == published.first_entries[sym]
        assert decode_signal(cluster_client.get(KEYS.latest(sym))).symbol == sym
    assert {s.decode() for s in cluster_client.smembers(KEYS.symbols)} >= set(SYMBOLS)


def test_sdk_reads_every_symbol_across_slots(published, cluster_settings):
    async def scenario() -> tuple[list, list[str], dict]:
        client = async_client(cluster_settings)
        try:
            stream = SignalStream(client, "cluster-momo", list(SYMBOLS), start="earliest", block_ms=200)
            got = []
            async for sig in stream:
                got.append(sig)
                if len(got) == DOCS:
                    break
            return got, await known_symbols(client), await latest(client)
        finally:
            await client.aclose()

    got, symbols, newest = run(scenario(), timeout_s=60)
    assert sorted(s.document_ids[0] for s in got) == sorted(d.id for d in published.docs)
    assert set(SYMBOLS) <= set(symbols)
    for sym in SYMBOLS:
        last = max((d for d in published.docs if d.symbols[0] == sym), key=lambda d: d.ts_event)
        assert newest[sym].document_ids[0] == last.id


def test_watch_tails_the_cluster(published, redis_cluster):
    env = {**os.environ, "FINSIGNAL_REDIS_URL": redis_cluster.url, "FINSIGNAL_REDIS_CLUSTER": "true"}
    result = subprocess.run([sys.executable, "-m", "finsignal.cli", "watch", "--symbols", ",".join(SYMBOLS),
                             "--from-start", "--limit", str(DOCS)], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == DOCS
    assert {line.split()[2] for line in lines} == set(SYMBOLS)


def test_gateway_serves_snapshot_and_live_signals_from_the_cluster(published, cluster_settings, cluster_client):
    sink = RedisSignalSink(cluster_client, maxlen=1000, dedupe_ttl_s=600)
    live = [make_signal(100 + i, sym, ts_event=1_900_000_000_000_000_000 + i) for i, sym in enumerate(SYMBOLS)]

    async def scenario() -> tuple[set[str], set[str]]:
        client = async_client(cluster_settings)
        try:
            async with Gateway(client, GatewaySettings(port=0, tokens={"desk": "tok"}, heartbeat_s=60.0)) as gw:
                async with websockets.connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                    await ws.send(Hello(token="tok", client="tests").model_dump_json())
                    await ws.send(Subscribe(symbols=SYMBOLS, snapshot=True).model_dump_json())
                    snapshot, received = set(), set()
                    while len(received) < len(live):
                        message = decode_server(await asyncio.wait_for(ws.recv(), 20))
                        if message.type == "subscribed":
                            await asyncio.to_thread(sink.publish, live)
                        elif message.type == "signal" and message.snapshot:
                            snapshot.add(message.symbol)
                        elif message.type == "signal":
                            received.add(message.signal.id)
                    return snapshot, received
        finally:
            await client.aclose()

    snapshot, received = run(scenario(), timeout_s=60)
    assert snapshot == set(SYMBOLS)
    assert received == {s.id for s in live}


def test_sentinel_url_reaches_the_master_for_publish_and_read(redis_server_for_sentinel):
    master, sentinel = redis_server_for_sentinel
    settings = RedisSettings(url=sentinel.url)
    client = sync_client(settings)
    try:
        sink = RedisSignalSink(client, maxlen=1000, dedupe_ttl_s=600)
        sigs = [make_signal(i, sym) for i, sym in enumerate(("BTCUSDT", "ETHUSDT"))]
        assert all(sink.publish(sigs)) and sink.publish(sigs) == [None, None]
    finally:
        client.close()

    async def read() -> dict:
        aclient = async_client(settings)
        try:
            return await latest(aclient)
        finally:
            await aclient.aclose()

    assert {s: v.id for s, v in run(read()).items()} == {s.symbol: s.id for s in sigs}
    import redis

    direct = redis.Redis(port=master.port)  # what the Sentinel resolved is that very server
    assert direct.xlen(KEYS.stream("BTCUSDT")) == 1
    direct.close()


@pytest.fixture
def redis_server_for_sentinel():
    with EmbeddedRedis() as master, Sentinel(master.port) as sentinel:
        yield master, sentinel
