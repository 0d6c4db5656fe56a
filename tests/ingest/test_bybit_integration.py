"""The Bybit ingestor against local WebSocket and REST servers replaying v5 payloads, onto the real broker."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import aiohttp
import pytest
from prometheus_client import REGISTRY

from ingest.bybit.service import BybitIngestor
from ingest.bybit.settings import BybitSettings
from ingest.contracts import decode_market_event
from ingest.kafka import DEADLETTER_REASON, DEADLETTER_STAGE, ensure_topics
from ingest.runner import make_sink
from tests.ingest.kafka_io import read_topic
from tests.ingest.servers import BybitWsServer, KlineServer, fixture, http_server, until

pytestmark = pytest.mark.integration

S = 1716999960000  # first candle start in the fixtures (ms)
NOW_NS = 1717000230114 * 1_000_000


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def kline_rows() -> tuple[list[list[str]], int]:
    payload = json.loads(fixture("bybit", "kline_response.json").read_text())
    return payload["result"]["list"], payload["time"]


def test_linear_stream_books_trades_klines_tickers_reconnect_and_backfill(kafka_settings, topics):
    ensure_topics(kafka_settings, topics.all())
    rows, server_ms = kline_rows()
    rest = KlineServer(rows, server_ms)
    topics_expected = ["kline.1.BTCUSDT", "publicTrade.BTCUSDT", "orderbook.50.BTCUSDT", "tickers.BTCUSDT"]
    before = {k: metric(f"finsignal_ingest_{k}_total", source="bybit") for k in ("reconnects", "resubscribes")}
    gaps_before = metric("finsignal_ingest_gaps_total", source="bybit", kind="orderbook")

    async def scenario() -> tuple[BybitWsServer, KlineServer]:
        async with BybitWsServer(fixture("bybit", "linear.frames"), "linear", topics_expected,
                                 resnapshot=fixture("bybit", "book_resnapshot.json")) as ws, \
                http_server({"/v5/market/kline": rest.handle}) as base:
            settings = BybitSettings(rest_url=base, ws_url=ws.url, linear_symbols=["BTCUSDT"], backfill_bars=0,
                                     reconnect_base_s=0.05, reconnect_cap_s=0.2, ping_interval_s=0.2)
            sink = make_sink(kafka_settings, topics, "bybit", settings.queue_size)
            await sink.start()
            stop = asyncio.Event()
            async with aiohttp.ClientSession() as session:
                ingestor = BybitIngestor(settings, sink, topics, session, clock=lambda: NOW_NS)
                task = asyncio.create_task(ingestor.run(stop))
                try:
                    await until(lambda: ws.connections == 2 and ws.sent_sections == 1 and len(rest.requests) >= 1)
                    # the second connection's last kline closes 1717000200000: five closed candles in all
                    await until(lambda: ingestor.state["linear"].klines.newest_closed("BTCUSDT", "1")
                                == (S + 240_000) * 1_000_000)
                    await until(lambda: ingestor.state["linear"].books["BTCUSDT"].update_id == 2)
                    await until(lambda: not ingestor._backfills)
                    await until(lambda: len(ws.requests("ping")) >= 2)  # every 0.2 s here; pongs keep it alive
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 10)
                    await sink.close()
            return ws, rest

    ws, rest = asyncio.run(scenario())

    # Subscriptions: one request per connection, each with a req_id, pings sent on schedule.
    subs = ws.requests("subscribe")
    assert all(m["req_id"] for m in subs)
    assert [m["args"] for m in subs if len(m["args"]) > 1] == [topics_expected, topics_expected]
    assert ws.requests("ping"), "the client never pinged"
    assert [m["args"] for m in ws.requests("unsubscribe")] == [["orderbook.50.BTCUSDT"]]

    # Trades: t2 arrived twice, published once.
    trades = [decode_market_event(r.value) for r in read_topic(kafka_settings, topics.trade, 3)]
    assert [t.trade_id[-2:] for t in trades] == ["01", "02", "03"]
    assert trades[0].price == Decimal("67251.00") and str(trades[0].price) == "67251.00"  # exact, digits kept
    assert {r.key for r in read_topic(kafka_settings, topics.trade, 3, settle_s=0)} == {b"BTCUSDT"}

    # Books: snapshot, delta, (gap at u=103 -> resubscribe) fresh snapshot 200, delta 201, reconnect,
    # u == 1 reset, delta 2. Nothing was published from the gapped delta.
    books = [decode_market_event(r.value) for r in read_topic(kafka_settings, topics.orderbook, 6)]
    assert [b.update_id for b in books] == [100, 101, 200, 201, 1, 2]
    after_delete = books[1]
    assert [(str(lvl.price), str(lvl.size)) for lvl in after_delete.bids] == [
        ("67250.20", "0.100"), ("67250.00", "0.500"), ("67249.50", "3.000")]
    assert after_delete.asks[0].size == Decimal("0.900")
    assert [str(lvl.price) for lvl in books[3].bids] == ["67250.20", "67250.10", "67250.00", "67249.00"]
    reset = books[5]  # after u == 1 the old levels (6725x) are gone
    assert [str(lvl.price) for lvl in reset.bids] == ["67299.50"]
    assert [str(lvl.price) for lvl in reset.asks] == ["67300.20", "67301.00"]

    # Tickers: the delta merged into the snapshot; after the reconnect a delta without snapshot is not published.
    tickers = [decode_market_event(r.value) for r in read_topic(kafka_settings, topics.ticker, 2)]
    assert len(tickers) == 2
    merged = tickers[1]
    assert merged.last_price == Decimal("67251.50") and merged.bid1_size == Decimal("0.300")
    assert merged.mark_price == Decimal("67250.81") and merged.funding_rate == Decimal("0.0001")

    # Klines: every start closed exactly once, the gap (S+1..S+3) filled over REST after the reconnect,
    # and no update for a start after it was closed.
    klines = [decode_market_event(r.value) for r in read_topic(kafka_settings, topics.kline, 7)]
    closed = [k.start // 1_000_000 for k in klines if k.closed]
    assert sorted(closed) == [S + i * 60_000 for i in range(5)]
    for k in klines:
        if not k.closed:
            closed_at = next((i for i, c in enumerate(klines) if c.closed and c.start == k.start), None)
            assert closed_at is None or klines.index(k) < closed_at
    assert all(q["category"] == "linear" and q["limit"] == "1000" for q in rest.requests)
    assert int(rest.requests[0]["start"]) == S + 60_000

    # The malformed frame went to the dead-letter topic, byte for byte, with the reason.
    letters = read_topic(kafka_settings, topics.deadletter, 1)
    assert len(letters) == 1
    assert letters[0].value == fixture("bybit", "linear.frames").read_text().splitlines()[10].encode()
    headers = dict(letters[0].headers)
    assert b"malformed JSON" in headers[DEADLETTER_REASON] and headers[DEADLETTER_STAGE] == b"bybit.ws"

    assert metric("finsignal_ingest_reconnects_total", source="bybit") - before["reconnects"] == 1
    assert metric("finsignal_ingest_resubscribes_total", source="bybit") - before["resubscribes"] == 1
    assert metric("finsignal_ingest_gaps_total", source="bybit", kind="orderbook") - gaps_before == 1


def test_spot_subscribes_in_chunks_of_ten_and_isolates_a_refused_symbol(kafka_settings, topics):
    ensure_topics(kafka_settings, topics.all())
    symbols = ["ETHUSDT", "BTCUSDT", "SOLUSDT", "NOPEUSDT"]
    settings_topics = BybitSettings(spot_symbols=symbols, linear_symbols=[]).ws_topics("spot")
    good = [t for t in settings_topics if "NOPE" not in t]

    async def scenario() -> tuple[BybitWsServer, BybitIngestor]:
        async with BybitWsServer(fixture("bybit", "spot.frames"), "spot", settings_topics,
                                 refuse=lambda arg: "NOPE" in arg) as ws:
            settings = BybitSettings(ws_url=ws.url, spot_symbols=symbols, linear_symbols=[], backfill_bars=0,
                                     channels=["kline", "trade", "orderbook", "ticker"], ack_timeout_s=5)
            sink = make_sink(kafka_settings, topics, "bybit", 100)
            await sink.start()
            stop = asyncio.Event()
            async with aiohttp.ClientSession() as session:
                ingestor = BybitIngestor(settings, sink, topics, session)
                task = asyncio.create_task(ingestor.run(stop))
                try:
                    await until(lambda: sink.sent >= 2)
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 10)
                    await sink.close()
            return ws, ingestor

    ws, ingestor = asyncio.run(scenario())
    first_round = [m["args"] for m in ws.requests("subscribe")][:2]
    assert [len(a) for a in first_round] == [10, 6]  # 16 args, at most 10 per spot request
    assert all(len(m["args"]) <= 10 for m in ws.requests("subscribe"))
    acked = {a for m in ws.requests("subscribe") for a in m["args"] if "NOPE" not in a}
    assert acked == set(good)
    assert set(ingestor.connections["spot"].rejected) == {t for t in settings_topics if "NOPE" in t}
    assert ws.connections == 1  # refused args did not cost a reconnect
    ticker = decode_market_event(read_topic(kafka_settings, topics.ticker, 1)[0].value)
    assert ticker.category == "spot" and ticker.last_price == Decimal("3791.42") and ticker.bid1_price is None
    trade = decode_market_event(read_topic(kafka_settings, topics.trade, 1)[0].value)
    assert trade.trade_id == "2290000000155443731" and trade.size == Decimal("0.01284")


def test_option_tickers_carry_quotes_ivs_and_greeks_and_an_empty_side_is_null(kafka_settings, topics):
    ensure_topics(kafka_settings, topics.all())
    symbols = ["BTC-28JUN24-70000-C", "BTC-28JUN24-90000-C", "BTC-28JUN24-NOPE-C"]
    expect = BybitSettings(option_symbols=symbols, linear_symbols=[]).ws_topics("option")
    assert expect == [f"{kind}.{s}" for s in symbols for kind in ("orderbook.25", "tickers")]  # no klines, trades

    async def scenario() -> tuple[BybitWsServer, BybitIngestor]:
        async with BybitWsServer(fixture("bybit", "option.frames"), "option", expect,
                                 refuse=lambda arg: "NOPE" in arg) as ws:
            settings = BybitSettings(ws_url=ws.url, option_symbols=symbols, linear_symbols=[], backfill_bars=5,
                                     ack_timeout_s=3, book_top_n=20)
            sink = make_sink(kafka_settings, topics, "bybit", 100)
            await sink.start()
            stop = asyncio.Event()
            async with aiohttp.ClientSession() as session:
                ingestor = BybitIngestor(settings, sink, topics, session)
                task = asyncio.create_task(ingestor.run(stop))
                try:
                    await until(lambda: sink.sent >= 4)
                    await asyncio.sleep(3.5)  # past ack_timeout_s: the COMMAND_RESP acks must have been matched
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 10)
                    await sink.close()
            return ws, ingestor

    ws, ingestor = asyncio.run(scenario())
    assert ws.connections == 1  # acknowledged by topics, not timed out into a reconnect
    assert set(ingestor.connections["option"].rejected) == {t for t in expect if "NOPE" in t}
    records = sorted(read_topic(kafka_settings, topics.ticker, 3), key=lambda r: decode_market_event(r.value).ts_event)
    tickers = [decode_market_event(r.value) for r in records]  # partitions by symbol: ordered by time here
    assert len(tickers) == 3 and all(t.schema_version == 2 and t.category == "option" for t in tickers)
    first, far, second = tickers
    assert (first.bid1_price, first.bid1_size, first.bid1_iv) == (Decimal("2915"), Decimal("36.7"), Decimal("0.5072"))
    assert (first.ask1_price, first.ask1_size, first.ask1_iv) == (Decimal("2980"), Decimal("0.7"), Decimal("0.5205"))
    assert (first.mark_iv, first.underlying_price, first.delta, first.gamma, first.vega, first.theta) == (
        Decimal("0.5139"), Decimal("67920.15"), Decimal("0.48263111"), Decimal("0.00004101"),
        Decimal("98.51366823"), Decimal("-52.22100976"))
    assert first.funding_rate is None  # options have none: absent, not zero
    # Nothing bid on the far strike: no bid at all, rather than a bid of 0.
    assert (far.bid1_price, far.bid1_size, far.bid1_iv) == (None, None, None) and far.ask1_price == Decimal("10")
    # The next snapshot emptied the bid: null, not the previous snapshot's 2915.
    assert (second.bid1_price, second.bid1_size, second.bid1_iv) == (None, None, None)
    raw = json.loads(records[2].value)
    assert raw["bid1_price"] is None and raw["ask1_price"] == "2990" and "predicted_delivery_price" not in raw
    book = decode_market_event(read_topic(kafka_settings, topics.orderbook, 1)[0].value)
    assert book.category == "option" and book.bids[0].price == Decimal("2915") and book.depth == 20
    assert read_topic(kafka_settings, topics.kline, None, timeout_s=2, settle_s=0.3) == []  # no option klines
