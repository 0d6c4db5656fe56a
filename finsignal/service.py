"""Long-running services as deployed (compose): configuration from the environment, metrics, signals."""

from __future__ import annotations

import signal as signal_module
from pathlib import Path
from typing import Any

import structlog

from signals.settings import RedisSettings, WorkerSettings

log = structlog.get_logger(__name__)


def announce_model(model: Any, directory: Path, settings: WorkerSettings, *, demo: bool) -> dict[str, Any]:
    """Log, once at start, which model the worker scores with; return the logged fields."""
    from compressor.runtime.loader import ArtifactError, artifact_kind

    try:
        kind = artifact_kind(directory)
    except ArtifactError:
        kind = "unknown"
    fields = {
        "name": model.info.name, "version": model.info.version, "path": str(Path(directory).resolve()),
        "kind": kind, "mode": settings.mode, "backend": settings.backend, "dtype": settings.dtype,
        "device": settings.device, "max_length": getattr(model, "max_length", None), "demo": demo,
    }
    log.info("worker.model", **fields)
    if demo:
        log.warning("worker.demo_model", hint="the demo model is trained on a small shipped sample for a first run; "
                    "point FINSIGNAL_WORKER_MODEL_DIR at a real checkpoint (see README: pretrained model)")
    return fields


def run_worker() -> None:
    """The scoring worker against configured Kafka and Redis, until SIGTERM or Ctrl-C."""
    from prometheus_client import start_http_server

    from finsignal.demo import demo_model_dir
    from ingest.reachability import check_kafka, check_redis
    from ingest.settings import ConfigError, KafkaSettings, TopicSettings
    from signals.backends import load_backend
    from signals.model import ModelLoadError
    from signals.worker import Worker

    # Everything that can be checked in a second is, before the model takes its time to load.
    settings, kafka, topics, redis_settings = WorkerSettings(), KafkaSettings(), TopicSettings(), RedisSettings()
    if not kafka.bootstrap:
        raise ConfigError("FINSIGNAL_KAFKA_BOOTSTRAP is not set; point it at your brokers (e.g. localhost:9092), "
                          "or use `finsignal run`, which embeds one")
    if not redis_settings.url:
        raise ConfigError("FINSIGNAL_REDIS_URL is not set; point it at your Redis (e.g. redis://localhost:6379/0), "
                          "or use `finsignal run`, which embeds one")
    check_kafka(kafka)
    check_redis(redis_settings)
    try:
        if settings.model_dir is not None:
            check_model_dir(settings.model_dir, settings)
        model = load_backend(settings.model_dir or demo_model_dir(), settings)
    except ModelLoadError as exc:
        raise ConfigError(f"FINSIGNAL_WORKER_MODEL_DIR: {exc}; point it at a directory written by "
                          "`finsignal compress train` or `compress run`, or unset it for the demo model") from None
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    model_dir = settings.model_dir or demo_model_dir()
    announce_model(model, model_dir, settings, demo=settings.model_dir is None)
    worker = Worker(model, kafka=kafka, topics=topics, redis_settings=redis_settings,
                    settings=settings, model_loader=lambda path: load_backend(path, settings))

    def stop(signum: int, frame: object) -> None:
        log.info("worker.stopping", signal=signal_module.Signals(signum).name)
        worker.stop()

    signal_module.signal(signal_module.SIGTERM, stop)
    signal_module.signal(signal_module.SIGINT, stop)
    worker.run()


def check_model_dir(directory: Path, settings: WorkerSettings) -> None:
    """Cheap checks of a configured model directory (no torch import), raising `ModelLoadError`."""
    from signals.model import ModelLoadError, check_directory

    if settings.mode == "classifier" and settings.backend == "transformers":
        check_directory(Path(directory))
    elif not (Path(directory) / "config.json").is_file():
        raise ModelLoadError(f"{directory}: no config.json; expected a Hugging Face checkpoint")
