"""Kafka plumbing: topic creation, the idempotent producer, and dead letters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from ingest.settings import KafkaSettings, TopicSettings

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = structlog.get_logger(__name__)

DEADLETTER_REASON = "x-deadletter-reason"
DEADLETTER_SOURCE = "x-deadletter-source"
DEADLETTER_STAGE = "x-deadletter-stage"
DEADLETTER_TRUNCATED = "x-deadletter-truncated-from"
# kafka-python's max_request_size and Kafka's message.max.bytes both default to ~1 MB; a dead letter
# must fit under them or its send fails after the source offset is committed. Larger originals are
# cut to this many bytes (the full record stays at its source offset, named in the headers).
DEADLETTER_MAX_VALUE_BYTES = 900_000


def ensure_topics(kafka: KafkaSettings, topics: list[str], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that are missing; return the names created. Safe to race with other creators."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**kafka.client_options(), request_timeout_ms=int(timeout_s * 1000))
    try:
        missing = sorted(set(topics) - set(admin.list_topics()))
        created = []
        for name in missing:
            try:
                admin.create_topics(
                    [NewTopic(name, kafka.partitions, kafka.replication_factor)], timeout_ms=int(timeout_s * 1000)
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process created it between our list and our create
        if created:
            log.info("kafka.topics_created", topics=created)
        return created
    finally:
        admin.close()


def make_producer(kafka: KafkaSettings, **overrides: object) -> KafkaProducer:
    """Idempotent producer with acks=all: a retried send never duplicates or reorders within a partition."""
    from kafka import KafkaProducer

    options = {
        **kafka.client_options(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "retries": 2**31 - 1,
        "max_in_flight_requests_per_connection": 5,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return KafkaProducer(**options)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a record was refused and where it came from; the original bytes travel as the value."""

    reason: str
    stage: str
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers carrying the reason and origin, the value left untouched for replay."""
        where = f"{self.source_topic}[{self.source_partition}]@{self.source_offset}"
        return [
            (DEADLETTER_REASON, self.reason[:4_000].encode()),
            (DEADLETTER_STAGE, self.stage.encode()),
            (DEADLETTER_SOURCE, where.encode()),
        ]


def dead_letter_record(topics: TopicSettings, letter: DeadLetter,
                       value: bytes | None) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """(topic, value, headers) of a refused record on the dead-letter topic, logged; the value cut to fit."""
    log.warning(
        "deadletter",
        reason=letter.reason,
        stage=letter.stage,
        topic=letter.source_topic,
        partition=letter.source_partition,
        offset=letter.source_offset,
    )
    value = value or b""
    headers = letter.headers()
    if len(value) > DEADLETTER_MAX_VALUE_BYTES:
        headers.append((DEADLETTER_TRUNCATED, str(len(value)).encode()))
        value = value[:DEADLETTER_MAX_VALUE_BYTES]
    return topics.deadletter, value, headers


def send_dead_letter(
    producer: KafkaProducer, topics: TopicSettings, letter: DeadLetter, value: bytes | None, key: bytes | None
):
    """Queue a refused record on the dead-letter topic; returns the send future."""
    topic, value, headers = dead_letter_record(topics, letter, value)
    return producer.send(topic, value=value, key=key, headers=headers)


def wait_for_broker(kafka: KafkaSettings, timeout_s: float = 30.0) -> None:
    """Block until the cluster answers a metadata request, or raise `TimeoutError`."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(**kafka.client_options(), request_timeout_ms=5_000)
            admin.list_topics()
            admin.close()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"Kafka at {kafka.bootstrap} did not answer within {timeout_s}s: {last}")
