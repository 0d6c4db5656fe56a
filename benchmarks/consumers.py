"""Consumers benchmark: backtest replay throughput, and WebSocket gateway fan-out against bare Redis reads.

    python benchmarks/consumers.py [--quick] [--clients 100]

1. Backtest replay: events/s (wall) through `run_backtest`'s replay (the worker's scorer, demo model,
   one torch thread) on the shipped recordings, and its CPU time against scoring the same document
   batches directly with the same scorer (the floor: model time alone), in the same run. CPU time
   (this process, all threads) is what the ratio uses: on a shared machine wall time is mostly noise.
2. Gateway fan-out: N signals published to one Redis stream, delivered to C clients.
   - `xread x1`: one bare XREAD loop reading the stream (no gateway, one reader);
   - `xread xC`: C bare XREAD loops, as if every client read Redis itself;
   - `gateway xC`: C WebSocket clients of `finsignal gateway`.
   Burst: all N published as fast as possible; signals/s = N / time until the last client has all N.
   Paced: a steady rate (`--rate`, 50 signals/s = 5,000 deliveries/s to 100 clients, well under the burst
   capacity); latency = receive time - publish time (same host clock).
   Ratios are gateway over each bare loop, measured in the same run. Clients run in their own process;
   gateway, Redis, publisher and clients share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/consumers.py` from anywhere

from signals.keys import KEYS  # noqa: E402 - after the path fix above

TITLE = "backtest replay throughput; gateway fan-out vs bare Redis XREAD"
TOKEN = "bench-token"


# -- 1. backtest replay ---------------------------------------------------------------------------------

def bench_backtest(quick: bool) -> list[dict[str, Any]]:
    from consumers.backtest.config import BacktestConfig
    from consumers.backtest.engine import load_model, replay_signals
    from consumers.backtest.events import load_recording
    from consumers.backtest.replay import ReplayClock, SignalReplay
    from finsignal.demo import demo_model_dir
    from signals.settings import WorkerSettings
    from signals.worker import SignalScorer

    # One torch thread: on a shared machine, spinning OpenMP threads make both timings noise.
    settings = WorkerSettings(threads=1)
    model = load_model(demo_model_dir(progress=False), settings)
    root = Path(__file__).resolve().parents[1] / "finsignal" / "recordings"
    rows = []
    for name in ("demo", "crypto-synthetic-1d"):
        config = BacktestConfig()
        rec = load_recording(root / name, config.replay)
        # The batches the replay forms, scored directly: model time with no replay around it.
        clock = ReplayClock()
        plan = SignalReplay(_NullScorer(), clock, config.replay.resolved(settings), token_budget=settings.token_budget)
        batches = [b.documents for b in plan.run(rec.events)]
        scorer = SignalScorer(model, settings)
        for docs in batches:  # warm-up: every batch shape once
            scorer.score(list(docs))
        bare_wall, bare_cpu, replay_wall, replay_cpu = [], [], [], []
        for _ in range(1 if quick else 5):  # interleaved; the fastest of each is reported
            w, c = time.perf_counter(), time.process_time()
            for docs in batches:
                scorer.score(list(docs))
            bare_wall.append(time.perf_counter() - w)
            bare_cpu.append(time.process_time() - c)
            w, c = time.perf_counter(), time.process_time()
            signals, _ = replay_signals(rec, model, config, settings)
            replay_wall.append(time.perf_counter() - w)
            replay_cpu.append(time.process_time() - c)
        rows.append({
            "recording": name, "events": len(rec.events), "documents": rec.documents, "signals": len(signals),
            "replay_s": min(replay_wall), "events_per_s": len(rec.events) / min(replay_wall),
            "documents_per_s": rec.documents / min(replay_wall), "replay_cpu_s": min(replay_cpu),
            "bare_scoring_cpu_s": min(bare_cpu), "replay_over_bare_cpu": min(replay_cpu) / min(bare_cpu),
        })
    return rows


class _NullScorer:
    """Records batches without scoring, to get the replay's batch plan."""

    def score(self, documents: list) -> list:
        return []


# -- 2. gateway fan-out -----------------------------------------------------------------------------------

def _signal_template() -> str:
    """A valid signal's JSON with `ts_scored` replaced by a placeholder to fill at publish time."""
    from ingest.contracts import Document
    from signals.contracts import ClassProbs, ModelInfo, Signal

    doc = Document.create(kind="news", source="bench", title="Bitcoin rallies as ETF inflows reach a record",
                          ts_event=1, ts_ingest=1)
    sig = Signal.from_probs(document_ids=(doc.id,), symbol="BTCUSDT", model=ModelInfo(
        name="bench", version="v1", content_hash="a" * 64), probs=ClassProbs(bearish=0.1, neutral=0.2, bullish=0.7),
        ts_event=1, ts_ingest=1, ts_scored=1)
    return sig.model_dump_json().replace('"ts_scored":1', '"ts_scored":%d')


def _gateway_process(redis_url: str, port: int, ready: Any, stop: Any) -> None:
    from redis.asyncio import Redis

    from consumers.gateway.server import Gateway
    from consumers.gateway.settings import GatewaySettings
    from finsignal.log import configure_logging

    configure_logging("WARNING")

    async def main() -> None:
        client = Redis.from_url(redis_url)
        settings = GatewaySettings(port=port, tokens={"bench": TOKEN}, max_queue=100_000, heartbeat_s=3600,
                                   max_clients=10_000)
        async with Gateway(client, settings):
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        await client.aclose()

    asyncio.run(main())


def _clients_process(mode: str, target: str, key: str, clients: int, expect: int, ready: Any, out: Any) -> None:
    """C clients reading `expect` signals each; report receive-time latencies and the last receive time."""

    async def xread_reader(redis: Any, lat: list[int]) -> None:
        last = "0-0"
        got = 0
        while got < expect:
            reply = await redis.xread({key: last}, block=1000, count=500)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    now = time.time_ns()
                    last = entry_id
                    lat.append(now - json.loads(fields[b"signal"])["ts_scored"])
                    got += 1

    async def ws_reader(ws: Any, lat: list[int]) -> None:
        got = 0
        while got < expect:
            msg = json.loads(await ws.recv())
            if msg["type"] == "signal":
                lat.append(time.time_ns() - msg["signal"]["ts_scored"])
                got += 1

    async def main() -> None:
        import websockets
        from redis.asyncio import Redis

        lats: list[list[int]] = [[] for _ in range(clients)]
        if mode == "xread":
            redis = Redis.from_url(target, max_connections=clients + 10)
            await redis.ping()
            ready.set()
            await asyncio.gather(*(xread_reader(redis, lat) for lat in lats))
            await redis.aclose()
        else:
            conns = []
            for _ in range(clients):
                ws = await websockets.connect(target, compression=None, max_queue=None, ping_interval=None)
                await ws.send(json.dumps({"v": 1, "type": "hello", "token": TOKEN}))
                await ws.recv()  # welcome
                await ws.send(json.dumps({"v": 1, "type": "subscribe", "symbols": [KEYS.symbol_of(key)]}))
                await ws.recv()  # subscribed
                conns.append(ws)
            ready.set()
            await asyncio.gather(*(ws_reader(ws, lat) for ws, lat in zip(conns, lats)))
            for ws in conns:
                await ws.close()
        out.put({"last_ns": time.time_ns(), "latencies": [x for lat in lats for x in lat]})

    asyncio.run(main())


def _publish(redis_url: str, key: str, n: int, rate: float | None) -> int:
    """XADD n signals (burst in pipelined chunks, or paced at `rate`/s); return the start time (ns)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    template = _signal_template()
    started = time.time_ns()
    if rate is None:
        for base in range(0, n, 100):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(100, n - base)):
                pipe.xadd(key, {"id": "bench", "signal": template % time.time_ns()})
            pipe.execute()
    else:
        t0 = time.perf_counter()
        for i in range(n):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            client.xadd(key, {"id": "bench", "signal": template % time.time_ns()})
    client.close()
    return started


def _percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def _one_run(ctx: Any, mode: str, target: str, redis_url: str, key: str, clients: int, n: int,
             rate: float | None) -> dict[str, Any]:
    ready, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_clients_process, args=(mode, target, key, clients, n, ready, out))
    proc.start()
    if not ready.wait(120):
        proc.kill()
        raise RuntimeError(f"{mode} clients did not start")
    time.sleep(0.5)  # let every blocking read / subscription settle
    started = _publish(redis_url, key, n, rate)
    result = out.get(timeout=600)
    proc.join(60)
    elapsed = (result["last_ns"] - started) / 1e9
    lat = result["latencies"]
    assert len(lat) == clients * n, f"{mode}: {len(lat)} deliveries, expected {clients * n}"
    return {"signals_per_s": n / elapsed, "deliveries_per_s": clients * n / elapsed,
            "p50_ms": _percentile(lat, 0.50), "p99_ms": _percentile(lat, 0.99)}


def bench_fanout(quick: bool, clients: int, rate: float = 50.0) -> list[dict[str, Any]]:
    from finsignal.embedded import EmbeddedRedis, free_port

    ctx = mp.get_context("spawn")
    burst_n = 300 if quick else 2000
    paced_n = int(rate * (4 if quick else 20))
    rows: list[dict[str, Any]] = []
    with EmbeddedRedis() as server:
        port = free_port()
        ready, stop = ctx.Event(), ctx.Event()
        gw = ctx.Process(target=_gateway_process, args=(server.url, port, ready, stop))
        gw.start()
        try:
            if not ready.wait(60):
                raise RuntimeError("gateway did not start")
            ws_url = f"ws://127.0.0.1:{port}/ws"
            plans = [("xread x1", "xread", server.url, 1), (f"xread x{clients}", "xread", server.url, clients),
                     (f"gateway x{clients}", "ws", ws_url, clients)]
            for i, (label, mode, target, c) in enumerate(plans):
                burst = _one_run(ctx, mode, target, server.url, KEYS.stream(f"BURST{i}"), c, burst_n, None)
                paced = _one_run(ctx, mode, target, server.url, KEYS.stream(f"PACED{i}"), c, paced_n, rate)
                rows.append({"path": label, "clients": c, "burst_signals": burst_n,
                             "signals_per_s": burst["signals_per_s"], "deliveries_per_s": burst["deliveries_per_s"],
                             "burst_p99_ms": burst["p99_ms"], "paced_rate": rate, "paced_p50_ms": paced["p50_ms"],
                             "paced_p99_ms": paced["p99_ms"]})
        finally:
            stop.set()
            gw.join(30)
            if gw.is_alive():
                gw.kill()
    gateway = rows[-1]
    for base in rows[:-1]:
        rows.append({"path": f"ratio gateway/{base['path']}", "clients": "",
                     "signals_per_s": gateway["signals_per_s"] / base["signals_per_s"],
                     "deliveries_per_s": gateway["deliveries_per_s"] / base["deliveries_per_s"],
                     "burst_p99_ms": gateway["burst_p99_ms"] / base["burst_p99_ms"],
                     "paced_p50_ms": gateway["paced_p50_ms"] / base["paced_p50_ms"],
                     "paced_p99_ms": gateway["paced_p99_ms"] / base["paced_p99_ms"]})
    return rows


def run(quick: bool = False, clients: int = 100) -> list[dict[str, Any]]:
    """For `python -m benchmarks`: both parts, one table."""
    return [{"part": "backtest", **r} for r in bench_backtest(quick)] + \
           [{"part": "fan-out", **r} for r in bench_fanout(quick, clients)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads, for a smoke run")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--only", choices=["backtest", "fanout"])
    parser.add_argument("--rate", type=float, default=50.0, help="paced signals/s (x clients deliveries/s)")
    args = parser.parse_args()
    from benchmarks.__main__ import format_table
    from finsignal.log import configure_logging

    configure_logging("WARNING")
    print(f"# {TITLE}  (cpus: {os.cpu_count()}, quick: {args.quick})")
    if args.only in (None, "backtest"):
        print("\n== backtest replay (demo model)")
        print(format_table(bench_backtest(args.quick)))
        sys.stdout.flush()
    if args.only in (None, "fanout"):
        print(f"\n== gateway fan-out to {args.clients} clients")
        print(format_table(bench_fanout(args.quick, args.clients, args.rate)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
