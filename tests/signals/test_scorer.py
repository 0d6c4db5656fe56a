"""The scorer on a real (tiny) model: batch invariance, chunking, symbols, market context without look-ahead."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.contracts import Document, Kline, Trade
from signals.market import MarketContextStore
from signals.model import SentimentModel, combine_chunks, split_windows
from signals.scorer import SignalScorer
from signals.settings import WorkerSettings

NOW = 1_790_000_000_000_000_000
MIN = 60_000_000_000
TEXTS = [
    "Apple beats quarterly estimates and raises full-year guidance",
    "Intel misses estimates",
    "Tesla shares tumble after weak sales as demand slows in China and Europe and margins shrink again",
    "Board meets",
    "Nvidia upgraded to buy at Jefferies, target raised on cloud strength " * 3,
]


@pytest.fixture(scope="module")
def model(tiny_model_dir) -> SentimentModel:
    return SentimentModel.load(tiny_model_dir)


def doc(text: str, symbols=(), ts=NOW, **kw) -> Document:
    return Document.create(kind="news", source="t", title=text, symbols=symbols, ts_event=ts, ts_ingest=ts, **kw)


def test_score_does_not_depend_on_batch_companions(model):
    alone = np.stack([model.score_ids(model.encode([t]))[0] for t in TEXTS])
    together = model.score_ids(model.encode(TEXTS))
    reversed_batch = model.score_ids(model.encode(TEXTS[::-1]))[::-1]
    np.testing.assert_allclose(together, alone, atol=1e-4)
    np.testing.assert_allclose(reversed_batch, alone, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.sampled_from(TEXTS), min_size=1, max_size=12), st.integers(16, 2048), st.integers(1, 16))
def test_signals_are_the_same_whatever_the_budget(model, texts, budget, max_batch):
    docs = [doc(f"{t} #{i}", ("AAPL",)) for i, t in enumerate(texts)]
    reference = SignalScorer(model, WorkerSettings(max_batch=1, token_budget=10_000), clock=lambda: NOW).score(docs)
    packed = SignalScorer(model, WorkerSettings(max_batch=max_batch, token_budget=budget), clock=lambda: NOW)
    for a, b in zip(reference, packed.score(docs)):
        assert a.signals[0].id == b.signals[0].id
        assert abs(a.signals[0].score - b.signals[0].score) < 1e-4


def test_long_document_is_chunked_and_says_so(model):
    long_text = " ".join(["Revenue grew strongly and guidance was raised."] * 200)
    scorer = SignalScorer(model, WorkerSettings(chunk_overlap=16), clock=lambda: NOW)
    long_doc = Document.create(kind="filing", source="t", title="10-K annual report", body=long_text,
                               symbols=["AAPL"], ts_event=NOW, ts_ingest=NOW)
    [scored] = scorer.score([long_doc])
    chunks = model.encode_chunks([long_doc.text], overlap=16)[0]
    assert len(chunks) > 1 and all(len(c) <= model.max_length for c in chunks)
    assert scored.signals[0].chunks == len(chunks)
    expected = combine_chunks(model.score_ids(chunks), [len(c) for c in chunks])
    assert scored.signals[0].probs.bullish == pytest.approx(expected[2], abs=1e-4)


@given(st.lists(st.integers(0, 50), max_size=400), st.integers(2, 64), st.integers(0, 70))
def test_windows_cover_every_token_within_the_window(ids, window, overlap):
    pieces = split_windows(ids, window, overlap)
    assert all(len(p) <= window for p in pieces)
    if len(ids) <= window:
        assert pieces == [ids]
    else:
        assert pieces[0] == ids[:window] and pieces[-1] == ids[-window:]
        covered = set()
        pos = 0
        for p in pieces:
            start = next(s for s in range(pos, len(ids)) if ids[s : s + len(p)] == p)
            covered.update(range(start, start + len(p)))
            pos = start + 1
        assert covered == set(range(len(ids)))


def test_symbols_come_from_the_document_the_text_and_the_filer(model):
    settings = WorkerSettings(cik_tickers={"320193": "AAPL"})
    scorer = SignalScorer(model, settings, clock=lambda: NOW)
    filing = Document.create(kind="filing", source="edgar", title="8-K current report", body="Item 2.02 results",
                             accession="0000320193-26-000001", cik="320193", ts_event=NOW, ts_ingest=NOW)
    assert scorer.symbols_for(filing) == ("AAPL",)
    assert scorer.symbols_for(doc("$TSLA and bitcoin rally", ("NVDA",))) == ("NVDA", "TSLA", "BTCUSDT")
    assert scorer.symbols_for(doc("Fed minutes due")) == ("MARKET",)
    skip = SignalScorer(model, WorkerSettings(no_symbol_policy="skip"), clock=lambda: NOW)
    assert skip.score([doc("Fed minutes due")])[0].signals == ()


def kline(i: int, close: str) -> Kline:
    start = NOW + i * MIN
    c = Decimal(close)
    return Kline(category="linear", symbol="BTCUSDT", interval="1", start=start, end=start + MIN - 1, open=c,
                 high=c, low=c, close=c, volume=Decimal(1), turnover=c, closed=True, ts_event=start + MIN - 1,
                 ts_ingest=start + MIN)


@given(st.lists(st.decimals(min_value=1, max_value=10**6, places=2), min_size=3, max_size=40),
       st.integers(0, 45))
def test_market_context_never_uses_a_later_price(closes, at_minute):
    store = MarketContextStore(vol_window_s=3600)
    for i, c in enumerate(closes):
        store.update(kline(i, str(c)))
    ts = NOW + at_minute * MIN
    ctx = store.at("BTCUSDT", ts)
    done = [i for i in range(len(closes)) if NOW + (i + 1) * MIN - 1 <= ts]
    if not done:
        assert ctx is None
        return
    assert ctx.ts_price <= ts
    assert ctx.last_price == closes[done[-1]]
    assert ctx.vol_samples == max(0, len(done) - 1)


def test_signal_carries_market_context_at_its_event_time(model):
    store = MarketContextStore(vol_window_s=1800)
    for i, c in enumerate(["100", "101", "99", "102"]):
        store.update(kline(i, c))
    store.update(Trade(category="linear", symbol="BTCUSDT", trade_id="t1", price=Decimal("150"), size=Decimal(1),
                       side="Buy", ts_event=NOW + 10 * MIN, ts_ingest=NOW + 10 * MIN))
    scorer = SignalScorer(model, WorkerSettings(), clock=lambda: NOW, market=store)
    [scored] = scorer.score([doc("Bitcoin rallies", ("BTCUSDT",), ts=NOW + 4 * MIN)])
    ctx = scored.signals[0].market
    assert ctx is not None and ctx.last_price == Decimal("102")  # the later trade at 150 is not visible
    assert ctx.vol_samples == 3 and ctx.realized_vol > 0
    [equity] = scorer.score([doc("Apple beats", ("AAPL",), ts=NOW + 4 * MIN)])
    assert equity.signals[0].market is None  # not traded on Bybit
