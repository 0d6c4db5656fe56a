"""Malformed records flood the worker among valid ones: each bad one dead-lettered with its reason, each good one scored.

The flood mixes cheap malformed records (not JSON, non-UTF-8 bytes, empty values, wrong schema,
unknown fields) with a few hostile ones: a 10 MB document, JSON nested 500,000 deep, a 1 MB JSON
array. Records above kafka-python's default 1 MB request size need a producer configured for them
(the broker accepts them); the worker must still dead-letter them, cut to DEADLETTER_MAX_VALUE_BYTES
so that the dead letter itself fits under the same 1 MB default (the original stays at its offset).
"""

from __future__ import annotations

import json
import resource
from collections import Counter

import pytest

from ingest.kafka import (DEADLETTER_MAX_VALUE_BYTES, DEADLETTER_REASON, DEADLETTER_TRUNCATED, ensure_topics,
                          make_producer)
from signals import metrics
from signals.settings import RedisSettings
from tests.conftest import eventually
from tests.faults.helpers import read_dead_letters, signal_document_ids, start_worker
from tests.integration.test_pipeline import make_docs

pytestmark = pytest.mark.integration

FLOOD = 10_000
GOOD = 200


def cheap_malformed(i: int, template: dict) -> bytes | None:
    """One of several kinds of small malformed record, by index."""
    kind = i % 6
    if kind == 0:
        return b"not json {" + str(i).encode()
    if kind == 1:
        return b"\xff\xfe\x00\x80" + i.to_bytes(4, "big")  # not UTF-8
    if kind == 2:
        return None  # empty value (a tombstone; the key is set)
    if kind == 3:
        return json.dumps({"v": i}).encode()
    if kind == 4:
        return json.dumps({**template, "schema_version": 99, "extra": i}).encode()
    return json.dumps({**template, "title": "x" * 3_000, "id": f"long-{i}"}).encode()  # title over its limit


HOSTILE = {
    "ten_mb_document": "body: String should have at most",
    "deeply_nested": "recursion limit exceeded",
    "huge_array": "Input should be an object",
    "non_utf8_inside_a_string": "invalid unicode code point",
}


def hostile(template: dict) -> dict[str, bytes]:
    doc = json.dumps(template).encode()
    return {
        "ten_mb_document": json.dumps({**template, "body": "x" * 10_000_000}).encode(),
        "deeply_nested": b"[" * 500_000,
        "huge_array": json.dumps(list(range(150_000))).encode(),
        "non_utf8_inside_a_string": doc.replace(b"Company", b"Comp\xffany", 1),
    }


def test_flood_of_malformed_records_is_dead_lettered_and_every_valid_document_scored(
        tiny_model_dir, kafka_settings, topics, redis_server, redis_client):
    ensure_topics(kafka_settings, topics.all())
    good = make_docs(GOOD)
    template = json.loads(good[0].to_bytes())
    symbols = {s for d in good for s in d.symbols}
    producer = make_producer(kafka_settings)
    big_producer = make_producer(kafka_settings, max_request_size=16 * 1024 * 1024)
    sent: list = []  # (label, future) in send order
    step = FLOOD // GOOD
    for i in range(FLOOD):
        sent.append(("flood", producer.send(topics.news, key=f"bad-{i}".encode(),
                                                     value=cheap_malformed(i, template))))
        if i % step == 0:
            doc = good[i // step]
            sent.append(("good", producer.send(topics.news, key=doc.key, value=doc.to_bytes())))
    for label, value in hostile(template).items():
        sent.append((label, big_producer.send(topics.news, value=value)))
    producer.flush()
    big_producer.flush()
    where: dict[str, str] = {}  # the dead-letter source header of each record -> what it was
    for label, fut in sent:
        meta = fut.get(30)
        where[f"{meta.topic}[{meta.partition}]@{meta.offset}"] = label
    bad_in = sum(1 for label in where.values() if label != "good")
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    running = start_worker(tiny_model_dir, kafka_settings, topics, RedisSettings(url=redis_server.url))
    try:
        eventually(lambda: len(signal_document_ids(redis_client, symbols)) >= GOOD, timeout_s=120)
        headers = read_dead_letters(kafka_settings, topics, expected=bad_in, timeout_s=120)
    finally:
        running.stop()
        producer.close()
        big_producer.close()
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kb) / 1024

    ids = signal_document_ids(redis_client, symbols)
    letters = {at: h[DEADLETTER_REASON] for at, h in headers.items()}
    print(f"\nbad input: records in={len(where)} (malformed={bad_in}, valid={GOOD}); out: dead letters="
          f"{len(letters)}, signals={len(ids)} (unique documents={len(set(ids))}); peak RSS growth="
          f"{rss_growth_mb:.0f} MB")
    assert Counter(ids) == Counter(d.id for d in good)
    assert set(letters) == {at for at, label in where.items() if label != "good"}
    assert all(reason.startswith("invalid Document: ") or reason == "empty record value"
               for reason in letters.values())
    for at, label in where.items():
        if label in HOSTILE:
            assert HOSTILE[label] in letters[at], (label, letters[at])
        if label == "ten_mb_document":  # cut to fit a 1 MB request, its size recorded
            assert int(headers[at]["value_bytes"]) == DEADLETTER_MAX_VALUE_BYTES
            assert int(headers[at][DEADLETTER_TRUNCATED]) > 10_000_000
    # The 10 MB record is held once by the consumer and once as its decoded JSON, never copied further.
    assert rss_growth_mb < 200
    assert metrics.DEADLETTERS.labels("validate")._value.get() >= bad_in
