"""Recordings: written bytes come back identical and in a stable event-time order."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.recording import RecordingError, RecordingWriter, parse_speed, read_recording

DEMO = Path(__file__).resolve().parents[2] / "finsignal" / "recordings" / "demo"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["news", "filings", "market.bybit.kline"]), st.integers(0, 100),
                          st.binary(min_size=1, max_size=40)), max_size=30))
def test_round_trip_preserves_bytes_and_orders_by_time(tmp_path_factory, records):
    directory = tmp_path_factory.mktemp("rec")
    with RecordingWriter(directory) as writer:
        for topic, ts, value in records:
            writer.write(topic, ts, None, value)
    if not records:
        with pytest.raises(RecordingError):
            list(read_recording(directory))
        return
    out = list(read_recording(directory))
    assert sorted((m.topic, m.ts, m.value) for m in out) == sorted(records)
    assert [(m.ts, m.topic) for m in out] == sorted((m.ts, m.topic) for m in out)


def test_shipped_demo_recording_is_readable():
    topics = {m.topic for m in read_recording(DEMO)}
    assert topics == {"news", "filings", "market.bybit.kline"}


def test_speed_parsing():
    assert parse_speed("max") is None
    assert parse_speed("10x") == 10.0
    with pytest.raises(RecordingError):
        parse_speed("fast")
