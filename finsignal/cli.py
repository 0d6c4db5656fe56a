"""The `finsignal` command: a thin dispatcher to each component's entry points."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Event-driven trading signals from news, filings and market data.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
compress_app = typer.Typer(help="Train and compress scoring models.", no_args_is_help=True)
app.add_typer(compress_app, name="compress")
ingest_app = typer.Typer(help="Run one ingestor as a long-running service (until Ctrl-C / SIGTERM).",
                         no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")


@app.callback()
def _main(
    log_level: Annotated[Optional[str], typer.Option(help="DEBUG, INFO, WARNING...")] = None,
    log_format: Annotated[Optional[str], typer.Option(help="json or console")] = None,
) -> None:
    from finsignal.log import configure_logging

    configure_logging(log_level, log_format)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


@app.command()
def run(
    replay: Annotated[Optional[Path], typer.Option(help="feed this recording instead of live sources")] = None,
    speed: Annotated[str, typer.Option(help="replay speed: 1x, 10x, max")] = "10x",
    duration: Annotated[Optional[float], typer.Option(help="stop after this many seconds")] = None,
    symbols: Annotated[Optional[str], typer.Option(help="comma-separated symbols to show")] = None,
    quiet: Annotated[bool, typer.Option(help="do not print signals")] = False,
) -> None:
    """Run the whole pipeline; Kafka and Redis are embedded unless FINSIGNAL_KAFKA_BOOTSTRAP / _REDIS_URL are set."""
    from finsignal.run import run as run_pipeline
    from ingest.recording import RecordingError, parse_speed

    try:
        factor = parse_speed(speed)
    except RecordingError as exc:
        raise _fail(str(exc)) from None
    if replay is not None and not replay.is_dir():
        raise _fail(f"{replay}: no such recording directory")
    run_pipeline(replay, factor, duration, symbols.split(",") if symbols else None, quiet)


@app.command()
def worker() -> None:
    """Run the scoring worker against FINSIGNAL_KAFKA_BOOTSTRAP and FINSIGNAL_REDIS_URL."""
    from finsignal.service import run_worker

    run_worker()


@app.command()
def score(
    model: Annotated[Path, typer.Option(help="checkpoint directory")],
    input: Annotated[Path, typer.Option("--input", help='JSONL lines {"id", "text"}')],
    output: Annotated[Path, typer.Option(help='JSONL lines {"id", "label", "probs"}')],
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
) -> None:
    """Score documents offline."""
    from signals.model import ModelLoadError
    from signals.offline import InputError, score_file

    if not input.is_file():
        raise _fail(f"{input}: no such file")
    try:
        n = score_file(model, input, output, batch_size)
    except (ModelLoadError, InputError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"scored {n} documents -> {output}", err=True)


@app.command()
def watch(
    symbols: Annotated[Optional[str], typer.Option(help="comma-separated symbols; default all")] = None,
    from_start: Annotated[bool, typer.Option(help="print retained history first")] = False,
    limit: Annotated[Optional[int], typer.Option(help="exit after this many signals")] = None,
) -> None:
    """Tail signals from FINSIGNAL_REDIS_URL."""
    import asyncio

    from consumers.watch import print_signals, tail
    from ingest.redis_client import async_client
    from signals.settings import RedisSettings

    settings = RedisSettings()
    if not settings.url:
        raise _fail("FINSIGNAL_REDIS_URL is not set")

    async def main() -> None:
        client = async_client(settings)
        try:
            await tail(client, symbols.split(",") if symbols else None, print_signals(),
                       from_start=from_start, limit=limit)
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


@app.command()
def replay(
    directory: Annotated[Path, typer.Argument(help="recording directory")],
    to_kafka: Annotated[bool, typer.Option("--to-kafka", help="produce to FINSIGNAL_KAFKA_BOOTSTRAP")] = False,
    speed: Annotated[str, typer.Option(help="1x, 10x or max")] = "max",
    restamp: Annotated[bool, typer.Option(help="set documents' ts_ingest to now")] = False,
) -> None:
    """Play a recording back onto Kafka topics."""
    from ingest.kafka import ensure_topics, make_producer
    from ingest.recording import RecordingError, parse_speed, read_recording
    from ingest.recording import replay as replay_recording
    from ingest.settings import KafkaSettings

    if not to_kafka:
        raise _fail("say where to replay: --to-kafka")
    kafka = KafkaSettings()
    if not kafka.bootstrap:
        raise _fail("FINSIGNAL_KAFKA_BOOTSTRAP is not set")
    try:
        factor = parse_speed(speed)
        topics = sorted({m.topic for m in read_recording(directory)})
        ensure_topics(kafka, topics)
        producer = make_producer(kafka)
        sent = replay_recording(directory, producer, speed=factor, restamp=restamp, progress=True)
        producer.close()
    except RecordingError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"replayed {sent} records from {directory}", err=True)


@app.command()
def backtest(
    recording: Annotated[Path, typer.Option(help="recording directory (finsignal record, or a shipped one)")],
    model: Annotated[Path, typer.Option(help="model checkpoint directory")],
    out: Annotated[Path, typer.Option(help="report directory")],
    compare: Annotated[Optional[Path], typer.Option(help="a second model to compare, side by side")] = None,
    threshold: Annotated[float, typer.Option(min=0, max=1, help="enter when |score| >= this")] = 0.3,
    min_confidence: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    horizon_s: Annotated[int, typer.Option(min=1, help="exit this many seconds after entry")] = 1800,
    move_bps: Annotated[float, typer.Option(min=0, help="true positive: move at least this within the horizon")] = 50.0,
    fee_bps: Annotated[float, typer.Option(min=0, help="fee per fill")] = 5.5,
    slippage_bps: Annotated[float, typer.Option(min=0, help="slippage per fill")] = 2.0,
    size: Annotated[float, typer.Option(min=0, help="notional per trade, fraction of capital")] = 1.0,
    latency_ms: Annotated[int, typer.Option(min=0, help="delay from signal to order")] = 0,
    overlap: Annotated[str, typer.Option(help="signal while holding: ignore or reverse")] = "ignore",
    batch_window_ms: Annotated[Optional[int], typer.Option(
        min=0, help="documents scored together within this window (default: the worker's max_wait_ms)")] = None,
    time_basis: Annotated[str, typer.Option(help="event (ts_event) or ingest (ts_ingest)")] = "event",
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch threads")] = None,
) -> None:
    """Replay a recording through the scorer in event time, trade the signals, report quality and P&L."""
    from pydantic import ValidationError

    from consumers.backtest.command import run as run_backtest
    from consumers.backtest.config import BacktestConfig
    from ingest.recording import RecordingError
    from signals.model import ModelLoadError

    try:
        config = BacktestConfig.model_validate({
            "replay": {"batch_window_ms": batch_window_ms, "time_basis": time_basis},
            "strategy": {"entry_threshold": threshold, "min_confidence": min_confidence, "horizon_s": horizon_s,
                         "move_threshold_bps": move_bps, "fee_bps": fee_bps, "slippage_bps": slippage_bps,
                         "position_size": size, "latency_ms": latency_ms, "overlap": overlap},
        })
        lines = run_backtest(recording, model, out, config, compare=compare, threads=threads)
    except ValidationError as exc:
        raise _fail(f"invalid option: {exc.errors()[0]['loc'][-1]}: {exc.errors()[0]['msg']}") from None
    except (RecordingError, ModelLoadError) as exc:
        raise _fail(str(exc)) from None
    for line in lines:
        typer.echo(line)


@app.command()
def gateway(
    host: Annotated[Optional[str], typer.Option(help="bind address (default from FINSIGNAL_GATEWAY_HOST)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default from FINSIGNAL_GATEWAY_PORT)")] = None,
) -> None:
    """Serve signals from FINSIGNAL_REDIS_URL to WebSocket clients; /healthz and /metrics on the same port."""
    from consumers.gateway.server import GatewayConfigError, serve_forever

    try:
        serve_forever(host=host, port=port)
    except GatewayConfigError as exc:
        raise _fail(str(exc)) from None


@compress_app.command("train")
def compress_train(
    data: Annotated[Path, typer.Option(help='training JSONL: {"text", "label"} lines')],
    out: Annotated[Path, typer.Option(help="output checkpoint directory")],
    eval: Annotated[Optional[Path], typer.Option("--eval", help="held-out JSONL for the report")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 4,
    layers: Annotated[int, typer.Option(min=1)] = 2,
    hidden: Annotated[int, typer.Option(min=16)] = 128,
    heads: Annotated[int, typer.Option(min=1)] = 4,
    kv_heads: Annotated[int, typer.Option(min=1)] = 2,
    vocab: Annotated[int, typer.Option(min=300)] = 4096,
    max_length: Annotated[int, typer.Option(min=8)] = 128,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(min=0)] = 2e-3,
    seed: int = 0,
    name: str = "finsignal-sentiment",
) -> None:
    """Train a LLaMA-architecture classifier and its tokenizer from labeled JSONL."""
    from compressor.data import DataError
    from compressor.train import TrainConfig, train

    if hidden % heads or heads % kv_heads:
        raise _fail("--hidden must be a multiple of --heads, and --heads a multiple of --kv-heads")
    config = TrainConfig(
        vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
        intermediate_size=int(hidden * 8 / 3 + 31) // 32 * 32, max_length=max_length, epochs=epochs,
        batch_size=batch_size, learning_rate=lr, seed=seed, name=name,
    )
    try:
        report = train(data, out, eval, config)
    except DataError as exc:
        raise _fail(str(exc)) from None
    if "eval" in report:
        typer.echo(f"eval accuracy {report['eval']['accuracy']:.4f}  macro-F1 {report['eval']['macro_f1']:.4f}",
                   err=True)
    typer.echo(f"model written to {out}", err=True)


@compress_app.command("run")
def compress_run(
    model: Annotated[Path, typer.Option(help="dense LLaMA checkpoint directory (classifier or causal LM)")],
    data: Annotated[Path, typer.Option(help='training JSONL: {"text", "label"} lines')],
    eval: Annotated[Path, typer.Option("--eval", help="held-out JSONL every row is judged on")],
    out: Annotated[Path, typer.Option(help="output directory: model/, w8a8/, stages/, report.md, ...")],
    recipe: Annotated[Optional[Path], typer.Option(help="recipe YAML; default: the built-in recipe")] = None,
    label_words: Annotated[Optional[str], typer.Option(help="causal LM input: bearish,neutral,bullish words")] = None,
    overwrite: Annotated[bool, typer.Option(help="reuse a non-empty --out")] = False,
) -> None:
    """Compress a model by a recipe of stages; measure every stage; write the report and the checkpoints."""
    from compressor.data import DataError
    from compressor.errors import CompressError
    from compressor.pipeline import compress_run as run_recipe
    from compressor.report import summary

    words = [w.strip() for w in label_words.split(",")] if label_words else None
    try:
        report = run_recipe(model, data, eval, out, recipe, label_words=words, overwrite=overwrite)
    except (DataError, CompressError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(summary(report))
    typer.echo(f"report: {out / 'report.md'}  model: {out / 'model'}", err=True)


@compress_app.command("report")
def compress_report(
    directory: Annotated[Path, typer.Argument(help="the --out directory of `compress run`")],
) -> None:
    """Re-render report.md and the Pareto plots from report.json, and print the table."""
    from compressor.errors import CompressError
    from compressor.report import render

    try:
        typer.echo(render(directory))
    except CompressError as exc:
        raise _fail(str(exc)) from None


def _ingest(source: str) -> None:
    from pydantic import ValidationError

    from ingest.runner import serve

    try:
        serve(source)
    except (ValidationError, ValueError) as exc:  # configuration: missing User-Agent, no instruments, ...
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


@ingest_app.command("bybit")
def ingest_bybit() -> None:
    """Bybit v5 market data (FINSIGNAL_BYBIT_*): klines, trades, order books, tickers."""
    _ingest("bybit")


@ingest_app.command("news")
def ingest_news() -> None:
    """RSS, Atom and JSON feeds (FINSIGNAL_NEWS_*)."""
    _ingest("news")


@ingest_app.command("filings")
def ingest_filings() -> None:
    """SEC EDGAR current filings (FINSIGNAL_FILINGS_*; FINSIGNAL_FILINGS_USER_AGENT is required)."""
    _ingest("filings")


@app.command()
def record(
    topics: Annotated[str, typer.Option(help="comma-separated Kafka topics")],
    out: Annotated[Path, typer.Option(help="recording directory to write")],
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest retained record, not at the end")] = False,
    duration: Annotated[Optional[float], typer.Option(help="stop after this many seconds")] = None,
    max_records: Annotated[Optional[int], typer.Option(min=1, help="stop after this many records")] = None,
) -> None:
    """Capture topics from FINSIGNAL_KAFKA_BOOTSTRAP into a recording that `finsignal replay` plays back."""
    from ingest.record import RecordError
    from ingest.record import record as record_topics
    from ingest.settings import KafkaSettings

    kafka = KafkaSettings()
    if not kafka.bootstrap:
        raise _fail("FINSIGNAL_KAFKA_BOOTSTRAP is not set")
    names = [t.strip() for t in topics.split(",") if t.strip()]
    try:
        counts = record_topics(kafka, names, out, from_beginning=from_beginning, duration_s=duration,
                               max_records=max_records, progress=True)
    except RecordError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        counts = None
    typer.echo(f"recorded {counts if counts is not None else 'until interrupted'} -> {out}", err=True)


if __name__ == "__main__":
    app()
