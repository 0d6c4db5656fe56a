"""Replay through the worker's scorer in simulated time: batching windows, the injected clock, no look-ahead."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.backtest.config import ReplayConfig, StrategyConfig
from consumers.backtest.events import PriceBook, ReplayEvent, load_recording
from consumers.backtest.replay import ReplayClock, ScoredBatch, SignalReplay
from consumers.backtest.strategy import simulate
from ingest.contracts import Document, Trade
from ingest.recording import RecordingWriter
from signals.market import MarketContextStore
from signals.settings import WorkerSettings
from signals.worker import SignalScorer
from tests.consumers.helpers import BASE_NS, BatchSensitiveModel

MS = 1_000_000


def replay(events: list[ReplayEvent], config: ReplayConfig, max_batch: int = 4,
           token_budget: int | None = None) -> list[ScoredBatch]:
    """Replay through the worker's scorer, with market context fed in replay order as the engine does."""
    clock = ReplayClock()
    market = MarketContextStore(vol_window_s=60)
    scorer = SignalScorer(BatchSensitiveModel(), WorkerSettings(max_batch=max_batch, token_budget=64), clock, market)
    return list(SignalReplay(scorer, clock, config, market, token_budget=token_budget).run(events))


def doc_event(i: int, t_ms: int, symbols: tuple[str, ...] = ("BTCUSDT",), title: str | None = None) -> ReplayEvent:
    ts = BASE_NS + t_ms * MS
    doc = Document.create(kind="news", source="t", title=title or f"headline number {i}", url=f"https://x/{i}",
                          symbols=symbols, ts_event=ts, ts_ingest=ts)
    return ReplayEvent(ts, "news", i, doc)


def test_documents_within_the_window_are_scored_together_when_it_closes():
    events = [doc_event(1, 0), doc_event(2, 100), doc_event(3, 300), doc_event(4, 450)]

    batches = replay(events, ReplayConfig(batch_window_ms=200, max_batch_docs=32))

    assert [(b.ts_scored - BASE_NS) // MS for b in batches] == [200, 500]
    assert [[d.title[-1] for d in b.documents] for b in batches] == [["1", "2"], ["3", "4"]]
    for batch in batches:
        assert all(s.ts_scored == batch.ts_scored for s in batch.signals)  # from the replay clock
        assert all(d.ts_event <= batch.ts_scored for d in batch.documents)


def test_a_full_batch_is_scored_at_the_document_that_fills_it():
    events = [doc_event(i, t) for i, t in enumerate((0, 10, 20, 30, 40))]

    batches = replay(events, ReplayConfig(batch_window_ms=1_000, max_batch_docs=2))

    assert [(b.ts_scored - BASE_NS) // MS for b in batches] == [10, 30, 1040]
    assert [len(b.documents) for b in batches] == [2, 2, 1]


def test_an_event_at_the_closing_time_is_not_in_the_closing_batch():
    batches = replay([doc_event(1, 0), doc_event(2, 200)], ReplayConfig(batch_window_ms=200, max_batch_docs=8))

    assert [len(b.documents) for b in batches] == [1, 1]


def test_a_document_recorded_twice_yields_one_signal_and_market_wide_news_follows_the_policy():
    twice = doc_event(1, 0)
    again = ReplayEvent(twice.ts + MS, "filings", 1, twice.payload)
    events = [twice, again, doc_event(2, 5, symbols=())]

    clock = ReplayClock()
    scorer = SignalScorer(BatchSensitiveModel(), WorkerSettings(no_symbol_policy="skip"), clock)
    replayer = SignalReplay(scorer, clock, ReplayConfig().resolved(WorkerSettings()))
    signals = [s for b in replayer.run(events) for s in b.signals]

    assert len(signals) == 1
    assert replayer.stats.duplicate_signals == 1
    assert replayer.stats.documents_without_signal == 1


def test_unset_batching_follows_the_worker_settings_and_the_token_budget_closes_a_batch():
    config = ReplayConfig().resolved(WorkerSettings(max_wait_ms=50, max_pending=100))
    long_title = "bitcoin " * 30  # 240 characters: about 60 tokens
    events = [doc_event(1, 0, title=long_title), doc_event(2, 10, title=long_title + "!"), doc_event(3, 20)]

    clock = ReplayClock()
    scorer = SignalScorer(BatchSensitiveModel(), WorkerSettings(), clock)
    batches = list(SignalReplay(scorer, clock, config, token_budget=100).run(events))

    assert (config.batch_window_ms, config.max_batch_docs) == (50, 100)
    assert [((b.ts_scored - BASE_NS) // MS, len(b.documents)) for b in batches] == [(10, 2), (70, 1)]


def test_the_replay_clock_never_goes_back():
    clock = ReplayClock(10)
    clock.advance_to(10)
    try:
        clock.advance_to(9)
    except ValueError as exc:
        assert "cannot go back" in str(exc)
    else:
        raise AssertionError("clock went back")


# -- property: no signal depends on anything later than itself ----------------------------------------

WORDS = ("bitcoin", "rallies", "drops", "ether", "record", "probe", "etf", "inflows", "miners", "sell")


@st.composite
def recordings(draw: st.DrawFn) -> list[tuple[str, int, bytes, bytes]]:
    """Random documents and trades on a coarse time grid (many equal timestamps), as recording rows."""
    rows = []
    for i in range(draw(st.integers(1, 14))):
        ts = BASE_NS + draw(st.integers(0, 60)) * 50 * MS
        symbols = draw(st.sampled_from([("BTCUSDT",), ("ETHUSDT",), ("BTCUSDT", "ETHUSDT"), ()]))
        title = " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6)))
        doc = Document.create(kind=draw(st.sampled_from(["news", "filing"])), source="t", title=title,
                              url=f"https://x/{i}", symbols=symbols, ts_event=ts,
                              ts_ingest=ts + draw(st.integers(0, 500)) * MS)
        rows.append(("news" if doc.kind == "news" else "filings", ts, doc.key, doc.to_bytes()))
    for j in range(draw(st.integers(0, 20))):
        ts = BASE_NS + draw(st.integers(0, 60)) * 50 * MS
        trade = Trade(category="linear", symbol=draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])), ts_event=ts,
                      ts_ingest=ts + MS, trade_id=str(j), price=Decimal(draw(st.integers(90, 110))),
                      size=Decimal(1), side="Buy")
        rows.append(("market.bybit.trade", ts, trade.key, trade.to_bytes()))
    return draw(st.permutations(rows))  # the order rows were recorded in must not matter


def _write(rows: list[tuple[str, int, bytes, bytes]], directory: Path) -> None:
    with RecordingWriter(directory) as writer:
        for topic, ts, key, value in rows:
            writer.write(topic, ts, key, value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=recordings(), cut_step=st.integers(0, 70), window_ms=st.sampled_from([0, 50, 200, 1_000]),
       max_docs=st.integers(1, 5), basis=st.sampled_from(["event", "ingest"]),
       budget=st.sampled_from([None, 8, 30]))
def test_no_signal_or_entry_depends_on_an_event_later_than_itself(rows, cut_step, window_ms, max_docs, basis,
                                                                    budget):
    config = ReplayConfig(batch_window_ms=window_ms, max_batch_docs=max_docs, time_basis=basis)
    with tempfile.TemporaryDirectory() as tmp:
        _write(rows, Path(tmp))
        rec = load_recording(tmp, config)
    cut = BASE_NS + cut_step * 50 * MS
    before = [e for e in rec.events if e.ts <= cut]  # the world as known at `cut`

    full = replay(rec.events, config, max_batch=2, token_budget=budget)
    known = replay(before, config, max_batch=2, token_budget=budget)

    for batch in full:  # nothing scored before it happened
        assert all((d.ts_ingest if basis == "ingest" else d.ts_event) <= batch.ts_scored for d in batch.documents)
    full_signals = [s for b in full for s in b.signals]
    known_signals = [s for b in known for s in b.signals]
    assert [s.to_bytes() for s in full_signals if s.ts_scored <= cut] == \
           [s.to_bytes() for s in known_signals if s.ts_scored <= cut]
    # Trading decisions, too: every entry made by `cut` is the same without the future.
    strategy = StrategyConfig(entry_threshold=0.0, horizon_s=1, overlap="reverse")
    entries_full = [(t.signal_id, t.side, t.entry_ts, t.entry_price)
                    for t in simulate(full_signals, rec.prices, strategy).trades if t.entry_ts <= cut]
    entries_known = [(t.signal_id, t.side, t.entry_ts, t.entry_price)
                     for t in simulate(known_signals, PriceBook.from_events(before), strategy).trades
                     if t.entry_ts <= cut]
    assert entries_full == entries_known
