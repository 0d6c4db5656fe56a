"""Shadow parts alone: the queue never blocks the caller, and the prefixed sink writes only prefixed keys."""

from __future__ import annotations

import time
from pathlib import Path

from ingest.contracts import Document
from ingest.settings import KafkaSettings, TopicSettings
from signals import metrics
from signals.contracts import ClassProbs, ModelInfo, Signal
from signals.keys import SignalKeys
from signals.redis_sink import RedisSignalSink
from signals.settings import RedisSettings, WorkerSettings
from signals.shadow import ShadowScorer


def doc(i: int) -> Document:
    now = time.time_ns()
    return Document.create(kind="news", source="t", title=f"headline {i}", url=f"https://x.test/{i}",
                           ts_event=now, ts_ingest=now)


def test_submit_drops_rather_than_waits_when_the_shadow_is_behind(tmp_path: Path):
    shadow = ShadowScorer(tmp_path / "none", lambda p: None, settings=WorkerSettings(shadow_queue=2),
                          kafka=KafkaSettings(), topics=TopicSettings(), redis_settings=RedisSettings())
    dropped = metrics.SHADOW_DROPPED._value.get()
    # the thread is not running, so nothing drains: a submit that waited would hang here, not return False
    accepted = [shadow.submit([doc(i)], []) for i in range(5)]
    assert accepted == [True, True, False, False, False]
    assert metrics.SHADOW_DROPPED._value.get() - dropped == 3


def test_prefixed_sink_keeps_shadow_signals_out_of_the_live_names(redis_client):
    now = time.time_ns()
    info = ModelInfo(name="m", version="v9", content_hash="ab" * 16)
    sig = Signal.from_probs(document_ids=(doc(1).id,), symbol="AAPL", probs=ClassProbs(bearish=0.1, neutral=0.2,
                            bullish=0.7), model=info, ts_event=now, ts_ingest=now, ts_scored=now)
    pubsub = redis_client.pubsub()
    pubsub.psubscribe("signals.*")
    pubsub.get_message(timeout=1)
    sink = RedisSignalSink(redis_client, maxlen=100, dedupe_ttl_s=60, keys=SignalKeys(prefix="shadow:"))
    assert sink.publish([sig])[0] is not None
    assert sink.publish([sig]) == [None]  # idempotent under the prefix too
    keys = {k.decode() for k in redis_client.keys("*")}
    assert keys and all(k.startswith("shadow:") for k in keys), keys
    assert redis_client.xlen("shadow:signals:{AAPL}") == 1
    assert pubsub.get_message(timeout=0.5) is None  # live subscribers hear nothing
    pubsub.close()
