"""Kline backfill: the candle grid, paging across the window through throttling answers, close-time stamps,
exact decimals, gaps named in the manifest, and a chunk that reached past the present fetched again."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from ingest.backfill.klines import candle_starts, first_start_ms
from ingest.backfill.window import Window, parse_bound
from ingest.contracts import decode_market_event
from tests.backfill.helpers import NOW, WINDOW, bybit_server, config_for, run
from tests.backfill.servers import HOUR_MS
from tests.ingest.servers import http_server

MS_DAY = 86_400_000


def ms(text: str) -> int:
    return parse_bound(text, end=False) // 1_000_000


@pytest.mark.parametrize("interval, at, expected", [
    ("60", "2024-05-01T00:20:00Z", "2024-05-01T01:00:00Z"),
    ("60", "2024-05-01T01:00:00Z", "2024-05-01T01:00:00Z"),
    ("D", "2024-05-01T00:00:01Z", "2024-05-02T00:00:00Z"),
    ("W", "2024-05-01T00:00:00Z", "2024-05-06T00:00:00Z"),  # weeks start on Monday
    ("M", "2024-05-01T00:00:00Z", "2024-05-01T00:00:00Z"),
    ("M", "2024-05-01T00:00:01Z", "2024-06-01T00:00:00Z"),
])
def test_first_candle_at_or_after_a_time_is_on_bybits_grid(interval, at, expected):
    assert first_start_ms(interval, ms(at)) == ms(expected)


def test_only_candles_that_close_inside_the_window_belong_to_it():
    starts = candle_starts("D", ms("2024-05-01T00:00:00Z"), ms("2024-05-03T12:00:00Z"))
    assert starts == [ms("2024-05-01T00:00:00Z"), ms("2024-05-02T00:00:00Z")]  # the 3rd closes after --to
    assert candle_starts("M", ms("2024-01-15T00:00:00Z"), ms("2024-04-01T00:00:00Z")) == \
        [ms("2024-02-01T00:00:00Z"), ms("2024-03-01T00:00:00Z")]


def backfill(tmp_path, server, window=WINDOW, now=NOW, **kw):
    async def go():
        async with http_server({"/v5/market/kline": server.handle}) as url:
            config = config_for(url, "http://127.0.0.1:9", sources=["bybit"], **kw)
            return await run(tmp_path, config, window, now)
    return asyncio.run(go())


def test_pages_across_the_window_through_a_429_and_a_503_with_close_time_stamps(tmp_path):
    server = bybit_server(fail_at={3: 429, 5: 503})
    manifest = backfill(tmp_path, server)

    # 1464 hourly candles a symbol, 500 a chunk: three pages each, consecutive, none asked twice when answered.
    ok = [(r.query["symbol"], int(r.query["start"]), int(r.query["end"])) for r in server.ok()]
    assert len(server.requests) == 8 and len(ok) == 6 and len(set(ok)) == 6
    for symbol in ("BTCUSDT", "ETHUSDT"):
        spans = sorted((s, e) for sym, s, e in ok if sym == symbol)
        assert spans[0][0] == WINDOW.start_ms and spans[-1][1] == WINDOW.end_ms - HOUR_MS
        assert all(b[0] == a[1] + HOUR_MS for a, b in zip(spans, spans[1:]))
    assert all(r.query["limit"] == "1000" and r.query["category"] == "linear" for r in server.requests)
    assert [r.status for r in server.requests if r.status != 200] == [429, 503]

    lines = (tmp_path / "market.bybit.kline.jsonl").read_text().splitlines()
    klines = [decode_market_event(json.loads(line)["value"]) for line in lines]
    btc = [k for k in klines if k.symbol == "BTCUSDT"]
    assert len(btc) == 1464 and all(k.closed for k in klines)
    assert all(k.ts_event == k.end + 1 == k.start + HOUR_MS * 1_000_000 for k in klines)  # stamped at the close
    assert all(json.loads(line)["ts"] == k.ts_event for line, k in zip(lines, klines))
    assert [json.loads(line)["ts"] for line in lines] == sorted(json.loads(line)["ts"] for line in lines)
    assert WINDOW.start < min(k.ts_event for k in klines) and max(k.ts_event for k in klines) == WINDOW.end
    first = server.rows["BTCUSDT"][50]
    assert (btc[0].start // 1_000_000, str(btc[0].open), str(btc[0].turnover)) == (int(first[0]), first[1], first[6])
    assert isinstance(btc[0].close, Decimal)

    series = {s["symbol"]: s for s in manifest["backfill"]["sources"]["bybit"]["series"]}
    assert series["BTCUSDT"]["candles"] == 1464 and series["BTCUSDT"]["missing"] == []
    assert series["ETHUSDT"]["missing"] == [{"from": "2024-05-01T00:00:00Z", "to": "2024-05-11T00:00:00Z",
                                             "candles": 240,
                                             "reason": "none served (before listing, or a venue gap)"}]
    assert manifest["backfill"]["complete"] and manifest["topics"]["market.bybit.kline"] == 1464 + 1224


def test_a_window_reaching_past_now_keeps_open_candles_out_and_refetches_only_that_chunk(tmp_path):
    window = Window.parse("2024-06-20", "2024-06-30")
    now = parse_bound("2024-06-25T10:30:00Z", end=False)
    server = bybit_server(server_ms=now // 1_000_000)
    first = backfill(tmp_path, server, window, now, kline_chunk=100)
    btc = next(s for s in first["backfill"]["sources"]["bybit"]["series"] if s["symbol"] == "BTCUSDT")
    assert btc["last_close"] == "2024-06-25T10:00:00Z"  # the 10:00 candle is still open: not recorded
    assert {m["reason"] for m in btc["missing"]} == {"not closed yet"}
    assert not first["backfill"]["complete"]
    asked = len(server.ok())

    later = parse_bound("2024-07-02", end=False)
    server.server_ms = later // 1_000_000
    second = backfill(tmp_path, server, window, later, kline_chunk=100)
    again = sorted((r.query["symbol"], int(r.query["start"])) for r in server.ok()[asked:])
    partial, unreached = window.start_ms + 100 * HOUR_MS, window.start_ms + 200 * HOUR_MS
    assert again == [("BTCUSDT", partial), ("BTCUSDT", unreached), ("ETHUSDT", partial), ("ETHUSDT", unreached)]
    btc = next(s for s in second["backfill"]["sources"]["bybit"]["series"] if s["symbol"] == "BTCUSDT")
    assert btc["candles"] == btc["expected"] == 11 * 24 and second["backfill"]["complete"]


def test_rows_that_fail_the_contract_are_kept_aside_with_the_reason(tmp_path):
    server = bybit_server()
    row = server.rows["BTCUSDT"][60]
    row[2] = str(Decimal(row[3]) - 1)  # high below low
    manifest = backfill(tmp_path, server)
    assert manifest["backfill"]["sources"]["bybit"]["invalid_rows"] == 1
    invalid_file = tmp_path / ".backfill" / "bybit" / "invalid.jsonl"
    invalid = [json.loads(line) for line in invalid_file.read_text().splitlines()]
    assert json.loads(invalid[0]["raw"]) == row and "low-high range" in invalid[0]["reason"]
    btc = next(s for s in manifest["backfill"]["sources"]["bybit"]["series"] if s["symbol"] == "BTCUSDT")
    assert btc["candles"] == 1463 and btc["missing"][0]["candles"] == 1
