"""An operator's mistakes, as a user meets them: one `error:` line naming the problem and the fix, a non-zero
exit, and no file changed. Run against the real broker and Redis; a closed port is a free port nobody listens on.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal as signal_module
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from finsignal.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "finsignal/recordings/demo")
TRAIN = str(ROOT / "compressor/data/sample_train.jsonl")
SMALL_MODEL = ["--epochs", "1", "--layers", "1", "--hidden", "64", "--vocab", "1024"]


def finsignal(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it: none of this machine's FINSIGNAL_* settings, only `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FINSIGNAL_")}
    if cwd is not None:
        clean["FINSIGNAL_CACHE_DIR"] = str(cwd / ".cache")
    return subprocess.run([sys.executable, "-m", "finsignal.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean, **(env or {})}, cwd=cwd)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` -> a hash of its bytes; directories as entries too."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        state[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int | None = None) -> str:
    """stderr is exactly one `error:` line holding every needle; the exit code is non-zero (or `code`)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, line
    assert result.returncode != 0
    if code is not None:
        assert result.returncode == code, line
    return line


@pytest.fixture
def work(tmp_path: Path):
    """A working directory whose files must come out of a failed command unchanged."""
    (tmp_path / "docs.jsonl").write_text('{"id": "a", "text": "Apple beats estimates"}\n')
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "keep.txt").write_text("mine")
    (tmp_path / "afile").write_text("precious")
    before = snapshot(tmp_path)
    yield tmp_path
    assert snapshot(tmp_path) == before, "a failed command changed files"


# -- infrastructure addresses ----------------------------------------------------------------------------

KAFKA_COMMANDS = {
    "run": ["run", "--replay", DEMO, "--speed", "max", "--duration", "5", "--quiet"],
    "replay": ["replay", DEMO, "--to-kafka"],
    "record": ["record", "--topics", "news", "--out", "rec", "--duration", "1"],
    "worker": ["worker"],
}


@pytest.mark.integration
@pytest.mark.parametrize("command", sorted(KAFKA_COMMANDS))
def test_kafka_on_a_closed_port_is_one_line_at_once(command, work, redis_server):
    port = free_port()
    # No model configured: `worker` and `run` would build the demo model into work/.cache, which the
    # `work` fixture would see; the check comes first.
    env = {"FINSIGNAL_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "FINSIGNAL_REDIS_URL": redis_server.url}

    result = finsignal(*KAFKA_COMMANDS[command], env=env, cwd=work)

    assert_one_line_error(result, f"cannot reach Kafka at 127.0.0.1:{port}", "connection refused",
                          "correct FINSIGNAL_KAFKA_BOOTSTRAP", code=1)


@pytest.mark.integration
def test_kafka_address_that_is_not_a_broker(work, redis_server):
    env = {"FINSIGNAL_KAFKA_BOOTSTRAP": f"127.0.0.1:{redis_server.port}"}  # Redis answers TCP, not Kafka

    result = finsignal("replay", DEMO, "--to-kafka", env=env, cwd=work)

    assert_one_line_error(result, "did not answer as a Kafka broker", "check the port", code=1)


REDIS_COMMANDS = {
    "watch": ["watch"],
    "run": ["run", "--replay", DEMO, "--speed", "max", "--duration", "5", "--quiet"],
    "gateway": ["gateway", "--port", "0"],
}


@pytest.mark.integration
@pytest.mark.parametrize("command", sorted(REDIS_COMMANDS))
def test_redis_on_a_closed_port_is_one_line_at_once(command, work, kafka_broker):
    port = free_port()
    env = {"FINSIGNAL_REDIS_URL": f"redis://127.0.0.1:{port}/0", "FINSIGNAL_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
           "FINSIGNAL_GATEWAY_TOKENS": json.dumps({"desk": "a-secret-token"})}

    result = finsignal(*REDIS_COMMANDS[command], env=env, cwd=work)

    assert_one_line_error(result, f"cannot reach Redis at redis://127.0.0.1:{port}/0", "connection refused",
                          "correct FINSIGNAL_REDIS_URL", code=1)
    assert "a-secret-token" not in result.stderr


@pytest.mark.integration
def test_redis_url_password_is_not_printed(work):
    port = free_port()

    result = finsignal("watch", env={"FINSIGNAL_REDIS_URL": f"redis://ops:hunter2@127.0.0.1:{port}/0"}, cwd=work)

    assert_one_line_error(result, "redis://ops:***@127.0.0.1", code=1)
    assert "hunter2" not in result.stderr


# -- settings --------------------------------------------------------------------------------------------

def test_redis_url_without_scheme(work, redis_server):
    result = finsignal("watch", env={"FINSIGNAL_REDIS_URL": f"127.0.0.1:{redis_server.port}"}, cwd=work)

    assert_one_line_error(result, "FINSIGNAL_REDIS_URL=", "no scheme", f"redis://127.0.0.1:{redis_server.port}",
                          code=2)


def test_gateway_tokens_not_json(work, redis_server):
    result = finsignal("gateway", env={"FINSIGNAL_REDIS_URL": redis_server.url, "FINSIGNAL_GATEWAY_TOKENS": "a:b"},
                       cwd=work)

    line = assert_one_line_error(result, "FINSIGNAL_GATEWAY_TOKENS", "not valid JSON",
                                 """FINSIGNAL_GATEWAY_TOKENS='{"client-name": "token"}'""", code=2)
    assert "a:b" not in line  # the value may be a secret


@pytest.mark.parametrize("command", [["watch"], ["worker"], ["run", "--duration", "1"]])
def test_config_file_missing(command, work):
    result = finsignal(*command, env={"FINSIGNAL_CONFIG": str(work / "nope.toml"),
                                      "FINSIGNAL_REDIS_URL": "redis://127.0.0.1:1/0"}, cwd=work)

    assert_one_line_error(result, "FINSIGNAL_CONFIG=", "nope.toml", "no such file", "unset it", code=2)


def test_invalid_setting_value(work):
    result = finsignal("worker", env={"FINSIGNAL_WORKER_TOKEN_BUDGET": "lots"}, cwd=work)

    assert_one_line_error(result, "FINSIGNAL_WORKER_TOKEN_BUDGET='lots'", "valid integer",
                          "correct FINSIGNAL_WORKER_TOKEN_BUDGET", code=2)


def test_unknown_key_in_config_file(tmp_path):
    config = tmp_path / "finsignal.toml"
    config.write_text("[worker]\nmax_bath = 8\n")
    before = snapshot(tmp_path)

    result = finsignal("worker", env={"FINSIGNAL_CONFIG": str(config)}, cwd=tmp_path)

    assert_one_line_error(result, "unknown setting 'max_bath'", "[worker]", "remove it or correct", code=2)
    assert snapshot(tmp_path) == before


def test_worker_without_kafka_fails_before_loading_the_model(work, redis_server):
    result = finsignal("worker", env={"FINSIGNAL_REDIS_URL": redis_server.url}, cwd=work)

    assert_one_line_error(result, "FINSIGNAL_KAFKA_BOOTSTRAP is not set", "localhost:9092", "finsignal run", code=2)
    assert not (work / ".cache").exists()  # the demo model was not built


@pytest.mark.integration
def test_worker_model_dir_that_is_not_a_model(work, kafka_broker, redis_server):
    env = {"FINSIGNAL_KAFKA_BOOTSTRAP": kafka_broker.bootstrap, "FINSIGNAL_REDIS_URL": redis_server.url,
           "FINSIGNAL_WORKER_MODEL_DIR": str(work / "occupied")}

    result = finsignal("worker", env=env, cwd=work)

    assert_one_line_error(result, "FINSIGNAL_WORKER_MODEL_DIR", "no config.json", "finsignal compress train", code=2)


def test_run_model_dir_that_is_not_a_model(work):
    result = finsignal("run", "--duration", "1", env={"FINSIGNAL_WORKER_MODEL_DIR": str(work / "occupied")},
                       cwd=work)

    assert_one_line_error(result, "FINSIGNAL_WORKER_MODEL_DIR", "no config.json", code=2)


# -- outputs never clobbered -----------------------------------------------------------------------------

def test_score_output_equal_to_input_is_refused(work, tiny_model_dir):
    docs = str(work / "docs.jsonl")

    result = finsignal("score", "--model", str(tiny_model_dir), "--input", docs, "--output", docs, cwd=work)

    assert_one_line_error(result, "--output", "is the input file", "choose another --output", code=2)


def test_score_output_through_a_link_to_the_input_is_refused(tmp_path, tiny_model_dir):
    (tmp_path / "docs.jsonl").write_text('{"id": "a", "text": "Apple beats estimates"}\n')
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "docs.jsonl")
    before = snapshot(tmp_path)

    result = finsignal("score", "--model", str(tiny_model_dir), "--input", str(tmp_path / "docs.jsonl"),
                       "--output", str(tmp_path / "link.jsonl"), cwd=tmp_path)

    assert_one_line_error(result, "is the input file", code=2)
    assert snapshot(tmp_path) == before


def test_score_output_that_is_a_directory(work, tiny_model_dir):
    result = finsignal("score", "--model", str(tiny_model_dir), "--input", str(work / "docs.jsonl"),
                       "--output", str(work / "occupied"), cwd=work)

    assert_one_line_error(result, "is a directory", "name a file", code=2)


def test_score_empty_input(tmp_path, tiny_model_dir):
    (tmp_path / "empty.jsonl").write_text("")
    before = snapshot(tmp_path)

    result = finsignal("score", "--model", str(tiny_model_dir), "--input", str(tmp_path / "empty.jsonl"),
                       "--output", str(tmp_path / "out.jsonl"), cwd=tmp_path)

    assert_one_line_error(result, "empty.jsonl: no documents to score", '{"id", "text"}', code=2)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [
    ["compress", "train", "--data", TRAIN, *SMALL_MODEL],
    ["backtest", "--recording", DEMO, "--model", "MODEL"],
    ["compress", "run", "--model", "MODEL", "--data", TRAIN, "--eval", TRAIN],
], ids=["compress-train", "backtest", "compress-run"])
def test_non_empty_out_directory_needs_overwrite(command, work, tiny_model_dir):
    command = [str(tiny_model_dir) if arg == "MODEL" else arg for arg in command]

    result = finsignal(*command, "--out", str(work / "occupied"), cwd=work)

    assert_one_line_error(result, "occupied exists and is not empty", "choose a new --out or pass --overwrite",
                          code=2)


@pytest.mark.parametrize("command", [
    ["compress", "train", "--data", TRAIN, *SMALL_MODEL],
    ["backtest", "--recording", DEMO, "--model", "MODEL"],
], ids=["compress-train", "backtest"])
def test_out_naming_a_file_fails_before_any_work(command, work, tiny_model_dir):
    command = [str(tiny_model_dir) if arg == "MODEL" else arg for arg in command]

    result = finsignal(*command, "--out", str(work / "afile"), "--overwrite", cwd=work)

    assert_one_line_error(result, "afile is a file", "name a directory", code=2)


@pytest.mark.slow
def test_compress_train_overwrite_writes_into_a_non_empty_directory(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    result = finsignal("compress", "train", "--data", TRAIN, *SMALL_MODEL, "--out", str(out), "--overwrite",
                       cwd=tmp_path, timeout=300)

    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "model.safetensors").is_file() and (out / "notes.txt").read_text() == "mine"


# -- recordings ------------------------------------------------------------------------------------------

def _empty_topics(directory: Path) -> None:
    directory.mkdir()
    (directory / "manifest.json").write_text('{"format": 1, "topics": {}}')
    (directory / "news.jsonl").write_text("")


def _corrupt(directory: Path) -> None:
    directory.mkdir()
    (directory / "manifest.json").write_text('{"format": 1, "topics": {"news": 2}}')
    (directory / "news.jsonl").write_text('{"ts": 1, "key": null, "value": "{}"}\n{not json\n')


def _bad_manifest(directory: Path) -> None:
    directory.mkdir()
    (directory / "manifest.json").write_text("{")
    (directory / "news.jsonl").write_text('{"ts": 1, "key": null, "value": "{}"}\n')


RECORDINGS = {
    "no-files": (lambda d: d.mkdir(), "no <topic>.jsonl files"),
    "no-records": (_empty_topics, "the recording holds no records"),
    "corrupt-line": (_corrupt, "news.jsonl:2: bad record"),
    "bad-manifest": (_bad_manifest, "manifest.json: not JSON"),
}


@pytest.mark.parametrize("case", sorted(RECORDINGS))
@pytest.mark.parametrize("command", ["run", "replay"])
def test_unusable_recording_is_one_line_and_a_failure(case, command, tmp_path):
    make, problem = RECORDINGS[case]
    make(tmp_path / "rec")
    before = snapshot(tmp_path)
    args = ["run", "--replay", "rec", "--speed", "max", "--duration", "5"] if command == "run" else \
        ["replay", "rec", "--to-kafka"]

    result = finsignal(*args, env={"FINSIGNAL_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, cwd=tmp_path)

    assert_one_line_error(result, problem, code=2)
    assert snapshot(tmp_path) == before


# -- help ------------------------------------------------------------------------------------------------

def test_help_shows_no_type_beside_flags():
    import typer.main
    from typer.testing import CliRunner

    from finsignal.cli import app

    def paths(command: object, prefix: list[str]) -> list[list[str]]:
        found = [prefix]
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                found += paths(sub, [*prefix, name])
        return found

    runner = CliRunner()
    commands = paths(typer.main.get_command(app), [])
    assert len(commands) > 12
    for path in commands:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "160"})
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.output
        assert "<bool>" not in result.output, path
    assert "<float>" in runner.invoke(app, ["run", "--help"], env={"COLUMNS": "160"}).output  # valued options keep it


# -- supervision of the embedded services ----------------------------------------------------------------

class _Run:
    """`finsignal run` in the background, its JSON log lines collected as they come."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FINSIGNAL_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "finsignal.cli", "run", "--replay", DEMO, "--speed", "1x", "--quiet"],
            env={**clean, "FINSIGNAL_LOG_FORMAT": "json", "FINSIGNAL_CACHE_DIR": str(cwd / ".cache"), **env},
            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def events(self, name: str) -> list[dict]:
        found = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                found.append(event)
        return found

    def finish(self, timeout_s: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return code


@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.parametrize("service", ["kafka", "redis"])
def test_run_stops_with_one_line_when_an_embedded_service_dies(service, tmp_path, tiny_model_dir):
    from tests.conftest import eventually

    run = _Run({"FINSIGNAL_WORKER_MODEL_DIR": str(tiny_model_dir), "FINSIGNAL_WORKER_SUMMARY_INTERVAL_S": "1",
                "FINSIGNAL_KAFKA_SESSION_TIMEOUT_MS": "6000", "FINSIGNAL_KAFKA_HEARTBEAT_INTERVAL_MS": "2000"},
               tmp_path)
    try:
        # Generous: on a loaded 2-core machine, importing torch and loading the model can take minutes.
        eventually(lambda: run.events("worker.summary") or run.proc.poll() is not None, timeout_s=600)
        assert run.proc.poll() is None, "\n".join(run.lines[-20:])
        summary = run.events("worker.summary")[0]
        assert {"documents", "signals", "deadletters", "lag", "model"} <= set(summary)
        pid = next(e["pid"] for e in run.events("embedded.started") if e["service"] == service)

        os.kill(pid, signal_module.SIGKILL)
        code = run.finish(timeout_s=60)  # a hang guard: supervision notices in a tenth of a second
    finally:
        if run.proc.poll() is None:
            run.proc.kill()

    assert code == 1, "\n".join(run.lines[-20:])
    errors = [line for line in run.lines if line.startswith("error:")]
    label = {"kafka": "the embedded Kafka broker (Tansu", "redis": "the embedded Redis (redis-server"}[service]
    assert len(errors) == 1 and errors[0] == run.lines[-1], "\n".join(run.lines[-20:])
    assert label in errors[0] and f"pid {pid}) was killed by SIGKILL" in errors[0]
    assert "the pipeline stopped: run it again" in errors[0]
    assert not any(line.startswith("Traceback") for line in run.lines)


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_run_stops_cleanly_on_ctrl_c(tmp_path, tiny_model_dir):
    from tests.conftest import eventually

    run = _Run({"FINSIGNAL_WORKER_MODEL_DIR": str(tiny_model_dir),
                "FINSIGNAL_KAFKA_SESSION_TIMEOUT_MS": "6000", "FINSIGNAL_KAFKA_HEARTBEAT_INTERVAL_MS": "2000"},
               tmp_path)
    try:
        eventually(lambda: run.events("worker.started") or run.proc.poll() is not None, timeout_s=600)
        assert run.proc.poll() is None, "\n".join(run.lines[-20:])
        run.proc.send_signal(signal_module.SIGINT)
        code = run.finish(timeout_s=60)  # a hang guard: every shutdown wait is bounded
    finally:
        if run.proc.poll() is None:
            run.proc.kill()

    assert code == 0, "\n".join(run.lines[-20:])
    assert run.events("run.stopped") and len(run.events("embedded.stopped")) == 2
    assert not any(line.startswith(("Traceback", "error:")) for line in run.lines)
