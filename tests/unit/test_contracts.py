"""Wire contracts: round trips, deterministic ids, and clear rejections."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.contracts import (
    ContractError,
    Document,
    Kline,
    OrderBook,
    canonical_url,
    decode_document,
    decode_market_event,
    document_id,
)
from signals.contracts import ClassProbs, Direction, ModelInfo, Signal, decode_signal, signal_id

NOW = 1_790_000_000_000_000_000
MODEL = ModelInfo(name="m", version="v1", content_hash="0" * 64)


def doc(**kw) -> Document:
    base = dict(kind="news", source="rss:x", title="Apple beats estimates", url="https://x.com/a", symbols=["AAPL"],
                ts_event=NOW, ts_ingest=NOW + 1)
    return Document.create(**{**base, **kw})


def test_document_round_trips_through_json():
    d = doc(body="Revenue rose 12%.")
    assert decode_document(d.to_bytes()) == d


def test_unknown_field_is_rejected_with_its_name():
    raw = json.loads(doc().to_bytes())
    raw["sentiment"] = "great"
    with pytest.raises(ContractError, match="sentiment"):
        decode_document(json.dumps(raw))


def test_future_schema_version_is_rejected():
    raw = json.loads(doc().to_bytes())
    raw["schema_version"] = 2
    with pytest.raises(ContractError, match="schema_version"):
        decode_document(json.dumps(raw))


def test_document_without_text_is_rejected():
    with pytest.raises(ValueError, match="title or a body"):
        doc(title="  ", body="")


def test_id_prefers_accession_then_canonical_url_then_content():
    by_accession = document_id("edgar", accession="0000320193-26-000112", url="https://a/1")
    assert by_accession == document_id("other-feed", accession="0000320193-26-000112", url="https://b/2")
    assert document_id("a", url="https://Example.com/x/?utm_source=t&b=2&a=1#frag") == document_id(
        "b", url="https://example.com/x?a=1&b=2")
    assert document_id("a", content="text") != document_id("b", content="text")  # content ids are per source


@given(st.text(min_size=1, max_size=50))
def test_canonical_url_is_idempotent(path):
    url = canonical_url(f"https://example.com/{path}?utm_medium=x&q=1")
    assert canonical_url(url) == url


def test_market_event_dispatches_on_type_and_keeps_decimal_precision():
    k = Kline(category="linear", symbol="BTCUSDT", interval="1", start=NOW, end=NOW + 59_999_999_999,
              open=Decimal("67250.50"), high=Decimal("67300.12345678"), low=Decimal("67200"), close=Decimal("67290.1"),
              volume=Decimal("12.345"), turnover=Decimal("830000.0001"), closed=True, ts_event=NOW, ts_ingest=NOW)
    wire = k.to_bytes()
    assert b'"67300.12345678"' in wire  # prices travel as strings
    assert decode_market_event(wire) == k


def test_crossed_book_is_rejected():
    with pytest.raises(ContractError, match="crossed"):
        decode_market_event(OrderBook.model_construct(
            category="linear", symbol="BTCUSDT", depth=1, update_id=1, bids=(), asks=(), ts_event=NOW,
            ts_ingest=NOW).model_dump_json().replace('"bids":[]', '"bids":[{"price":"10","size":"1"}]')
            .replace('"asks":[]', '"asks":[{"price":"9","size":"1"}]'))


def test_unknown_market_event_type_is_rejected():
    with pytest.raises(ContractError, match="MarketEvent"):
        decode_market_event(b'{"type": "funding", "symbol": "BTCUSDT"}')


probs = st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)).filter(lambda t: sum(t) > 1e-3)


@given(probs)
def test_signal_from_probs_is_consistent_and_round_trips(raw):
    total = sum(raw)
    p = ClassProbs(bearish=raw[0] / total, neutral=raw[1] / total, bullish=raw[2] / total)
    s = Signal.from_probs(document_ids=(doc().id,), symbol="AAPL", probs=p, model=MODEL, ts_event=NOW,
                          ts_ingest=NOW, ts_scored=NOW)
    assert -1 <= s.score <= 1
    assert s.direction is Direction.from_label(p.label)
    assert s.id == signal_id(doc().id, "AAPL", "v1")
    assert decode_signal(s.to_bytes()) == s


def test_signal_with_inconsistent_direction_is_rejected():
    p = ClassProbs(bearish=0.1, neutral=0.1, bullish=0.8)
    s = Signal.from_probs(document_ids=(doc().id,), symbol="AAPL", probs=p, model=MODEL, ts_event=NOW,
                          ts_ingest=NOW, ts_scored=NOW)
    raw = json.loads(s.to_bytes())
    raw["direction"] = "short"
    with pytest.raises(ContractError, match="direction"):
        decode_signal(json.dumps(raw))


def test_probabilities_must_sum_to_one():
    with pytest.raises(ValueError, match="sum"):
        ClassProbs(bearish=0.5, neutral=0.5, bullish=0.5)
