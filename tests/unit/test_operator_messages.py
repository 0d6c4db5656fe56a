"""The pieces behind one-line operator errors: settings explained, outputs checked, library logs in our format."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from finsignal.errors import FAILURE, USAGE, explain
from finsignal.outputs import OutputError, check_output_dir, check_output_file
from ingest.reachability import Unreachable, check_redis, redact
from ingest.recording import RecordingError, check_recording
from ingest.settings import ConfigError, KafkaSettings, RedisSettings
from signals.progress import Progress
from signals.settings import WorkerSettings


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch):
    monkeypatch.delenv("FINSIGNAL_CONFIG", raising=False)


def test_a_bad_variable_names_itself_its_value_and_the_fix(monkeypatch):
    monkeypatch.setenv("FINSIGNAL_KAFKA_PARTITIONS", "zero")
    with pytest.raises(ValidationError) as info:
        KafkaSettings()

    explained = explain(info.value)

    assert explained is not None and explained.exit_code == USAGE
    assert explained.message.startswith("FINSIGNAL_KAFKA_PARTITIONS='zero': Input should be a valid integer")
    assert "correct FINSIGNAL_KAFKA_PARTITIONS (or partitions in the [kafka] section of FINSIGNAL_CONFIG)" in \
        explained.message
    assert "\n" not in explained.message


def test_a_secret_value_is_never_echoed(monkeypatch):
    monkeypatch.setenv("FINSIGNAL_KAFKA_SASL_MECHANISM", "hunter2")
    with pytest.raises(ValidationError) as info:
        KafkaSettings()
    assert "'hunter2'" in explain(info.value).message  # not a secret field: shown

    monkeypatch.delenv("FINSIGNAL_KAFKA_SASL_MECHANISM")
    with pytest.raises(ValidationError) as info:
        KafkaSettings(sasl_password=["not", "a", "string"])
    assert "***" in explain(info.value).message and "not" not in explain(info.value).message


def test_redis_url_without_scheme_says_what_to_write(monkeypatch):
    monkeypatch.setenv("FINSIGNAL_REDIS_URL", "localhost:6379")
    with pytest.raises(ValidationError) as info:
        RedisSettings()

    assert "no scheme; write redis://localhost:6379" in explain(info.value).message


def test_unparsable_json_variable_is_a_config_error_without_the_value(monkeypatch):
    from consumers.gateway.settings import GatewaySettings

    monkeypatch.setenv("FINSIGNAL_GATEWAY_TOKENS", "desk:s3cret")
    with pytest.raises(ConfigError) as info:
        GatewaySettings()

    assert "FINSIGNAL_GATEWAY_TOKENS: not valid JSON" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_missing_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("FINSIGNAL_CONFIG", str(tmp_path / "none.toml"))
    with pytest.raises(ConfigError, match="no such file; point it at a TOML settings file or unset it"):
        WorkerSettings()


def test_unreachable_redis_is_a_failure_and_redacts_the_password():
    with pytest.raises(Unreachable) as info:
        check_redis(RedisSettings(url="redis://ops:hunter2@127.0.0.1:1/0"), timeout_s=1)

    explained = explain(info.value)
    assert explained.exit_code == FAILURE
    assert "hunter2" not in explained.message and "redis://ops:***@127.0.0.1:1/0" in explained.message
    assert redact("redis://localhost/0") == "redis://localhost/0"


def test_unknown_exceptions_are_not_explained():
    assert explain(KeyError("bug")) is None


def test_output_directory_rule(tmp_path):
    check_output_dir(tmp_path / "new", overwrite=False)
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", overwrite=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OutputError, match="not empty; choose a new --out or pass --overwrite"):
        check_output_dir(tmp_path / "full", overwrite=False)
    check_output_dir(tmp_path / "full", overwrite=True)
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "full" / "x", overwrite=True)


def test_output_file_rule(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("{}\n")
    check_output_file(tmp_path / "out.jsonl", inputs=[source])
    with pytest.raises(OutputError, match="is the input file"):
        check_output_file(tmp_path / "." / "in.jsonl", inputs=[source])
    with pytest.raises(OutputError, match="is a directory"):
        check_output_file(tmp_path, inputs=[source])


def test_check_recording_counts_and_refuses_empty(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "news.jsonl").write_text('{"ts": 1, "key": null, "value": "a"}\n\n{"ts": 2, "key": "k", "value": "b"}\n')
    (rec / "filings.jsonl").write_text("")
    assert check_recording(rec) == {"filings": 0, "news": 2}
    (rec / "news.jsonl").write_text("")
    with pytest.raises(RecordingError, match="holds no records"):
        check_recording(rec)
    (rec / "news.jsonl").write_bytes(b"\xff\xfe\n")
    with pytest.raises(RecordingError, match="not UTF-8"):
        check_recording(rec)


def test_library_warnings_use_the_log_format_and_the_slow_task_warning_is_debug(capsys):
    from finsignal.log import configure_logging

    selector = logging.getLogger("kafka.net.selector")
    slow = "Task %r ran for %.3fs (>%.3fs threshold). It is blocking the event loop -- likely a tight sync loop"
    try:
        configure_logging("INFO", "json")
        selector.warning(slow, "<Task>", 0.25, 0.1)
        logging.getLogger("kafka.net.manager").error("Connection failed: %s", "ECONNREFUSED")
        quiet = capsys.readouterr().err.splitlines()

        configure_logging("DEBUG", "json")
        selector.warning(slow, "<Task>", 0.25, 0.1)
        loud = capsys.readouterr().err.splitlines()
    finally:
        configure_logging("INFO", "console")

    assert [json.loads(line) for line in quiet] == [
        {"event": "Connection failed: ECONNREFUSED", "level": "error", "logger": "kafka.net.manager",
         "timestamp": json.loads(quiet[0])["timestamp"]}]
    assert len(loud) == 1 and json.loads(loud[0])["level"] == "debug"
    assert "blocking the event loop" in json.loads(loud[0])["event"]


def test_progress_logs_one_summary_per_interval(capsys):
    now = [0.0]
    progress = Progress(interval_s=10, clock=lambda: now[0])
    assert not progress.maybe_log("v1")
    progress.documents, progress.signals, progress.deadletters, progress.lag = 5, 4, 1, 7
    now[0] = 9.0
    assert not progress.maybe_log("v1")
    now[0] = 10.0
    assert progress.maybe_log("v1")
    assert (progress.documents, progress.signals, progress.deadletters) == (0, 0, 0)
    assert progress.lag == 7  # a level, not a count
    now[0] = 15.0
    assert not progress.maybe_log("v1")
    assert not Progress(interval_s=0, clock=lambda: now[0]).maybe_log("v1")


def test_summary_interval_is_a_setting(monkeypatch):
    monkeypatch.setenv("FINSIGNAL_WORKER_SUMMARY_INTERVAL_S", "5")
    assert WorkerSettings().summary_interval_s == 5
    assert WorkerSettings.model_fields["summary_interval_s"].default == 60


def test_recording_paths_are_relative_to_where_you_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("rec").mkdir()
    with pytest.raises(RecordingError, match="rec: no <topic>.jsonl files"):
        check_recording("rec")


def test_a_failed_pipeline_leaves_without_waiting_on_the_dead_service():
    from finsignal.errors import PipelineFailed

    explained = explain(PipelineFailed("the embedded Kafka broker (Tansu, pid 7) was killed by SIGKILL"))

    assert explained.exit_code == FAILURE and explained.abandon
    assert not explain(Unreachable("cannot reach Redis")).abandon


def test_a_dead_kafka_producer_process_is_one_line_and_a_failure_exit():
    from ingest.process_sink import ProducerProcessDied

    message = ("kafka producer process kafka-producer-bybit (pid 7, exit code -9) of source 'bybit' died "
               "(its pipe closed (EOFError)); 12 records were not acknowledged")
    explained = explain(ProducerProcessDied(message))

    assert (explained.message, explained.exit_code, explained.abandon) == (message, FAILURE, True)
