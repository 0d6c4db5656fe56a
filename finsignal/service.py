"""Long-running services as deployed (compose): configuration from the environment, metrics, signals."""

from __future__ import annotations

import signal as signal_module

import structlog

from signals.settings import RedisSettings, WorkerSettings

log = structlog.get_logger(__name__)


def run_worker() -> None:
    """The scoring worker against configured Kafka and Redis, until SIGTERM or Ctrl-C."""
    from prometheus_client import start_http_server

    from finsignal.demo import demo_model_dir
    from ingest.settings import KafkaSettings, TopicSettings
    from signals.backends import load_backend
    from signals.worker import Worker

    settings = WorkerSettings()
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    model = load_backend(settings.model_dir or demo_model_dir(), settings)
    worker = Worker(model, kafka=KafkaSettings(), topics=TopicSettings(), redis_settings=RedisSettings(),
                    settings=settings, model_loader=lambda path: load_backend(path, settings))

    def stop(signum: int, frame: object) -> None:
        log.info("worker.stopping", signal=signal_module.Signals(signum).name)
        worker.stop()

    signal_module.signal(signal_module.SIGTERM, stop)
    signal_module.signal(signal_module.SIGINT, stop)
    worker.run()
