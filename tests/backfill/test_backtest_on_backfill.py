"""`finsignal backfill` end to end as a user runs it (a subprocess, every endpoint a setting pointed at the
local servers), then `finsignal backtest` over what it built: twice, byte-identical."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consumers.backtest import load_recording, run_backtest
from finsignal.cli import app
from tests.conftest import eventually
from tests.backfill.helpers import USER_AGENT, bybit_server
from tests.backfill.servers import EdgarArchive
from tests.backfill.test_archive import FIXTURE
from tests.ingest.servers import http_server


# Subprocesses (each importing the CLI) and the session's tiny model training: minutes on a busy 2-core machine.
pytestmark = pytest.mark.timeout(900)


class Servers:
    """Both servers on a loop in a thread, for commands run as subprocesses."""

    def __init__(self) -> None:
        self.bybit, self.edgar = bybit_server(fail_at={2: 503}), EdgarArchive(fail_at={4: 429})
        self.urls: dict[str, str] = {}
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with http_server({"/v5/market/kline": self.bybit.handle}) as b, \
                http_server({"/{tail:.*}": self.edgar.handle}) as e:
            self.urls = {"bybit": b, "edgar": e}
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Servers:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def env(self) -> dict[str, str]:
        return {**os.environ, "FINSIGNAL_LOG_LEVEL": "WARNING",
                "FINSIGNAL_BYBIT_REST_URL": self.urls["bybit"],
                "FINSIGNAL_BYBIT_LINEAR_SYMBOLS": '["BTCUSDT","ETHUSDT"]',
                "FINSIGNAL_BYBIT_KLINE_INTERVALS": '["60"]', "FINSIGNAL_BYBIT_RATE_LIMIT_BACKOFF_S": "0.05",
                "FINSIGNAL_FILINGS_USER_AGENT": USER_AGENT, "FINSIGNAL_FILINGS_BASE_URL": self.urls["edgar"],
                "FINSIGNAL_FILINGS_TICKERS_URL": f"{self.urls['edgar']}/files/company_tickers.json",
                "FINSIGNAL_FILINGS_BACKOFF_S": "0.05", "FINSIGNAL_BACKFILL_EDGAR_DATA_URL": self.urls["edgar"],
                "FINSIGNAL_BACKFILL_COMPANIES": '["AAPL","789019"]'}


def finsignal(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finsignal.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("backfill") / "rec"
    with Servers() as servers:
        proc = finsignal("backfill", "--from", "2024-05-01", "--to", "2024-06-30", "--out", str(out),
                         "--news", str(FIXTURE), "--no-progress", env=servers.env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert {(r.status) for r in servers.bybit.requests} == {200, 503}
        assert {(r.status) for r in servers.edgar.requests} == {200, 429}
    # The archive's two unreadable rows are reported with where to find them, not hidden.
    assert "6 imported, 1 duplicates, 2 outside the window, 2 rejected (see " in proc.stdout
    assert "bybit linear ETHUSDT 60: 1224/1464 candles" in proc.stdout
    return out


def test_the_backfill_command_builds_a_recording_replay_and_backtest_read(backfilled):
    manifest = json.loads((backfilled / "manifest.json").read_text())
    assert manifest["format"] == 1
    assert manifest["topics"] == {"filings": 5, "market.bybit.kline": 2688, "news": 6}
    assert manifest["backfill"]["window"] == {"from": "2024-05-01T00:00:00Z", "to": "2024-07-01T00:00:00Z"}
    rec = load_recording(backfilled)
    assert not rec.rejected and rec.documents == 11 and "BTCUSDT" in rec.prices
    # Event times are when the market could know: every record at or after what it reports.
    for ev in rec.events:
        payload = ev.payload
        if getattr(payload, "type", None) == "kline":
            assert ev.ts == payload.start + 3_600_000_000_000
        assert payload.ts_ingest == payload.ts_event == ev.ts


def test_a_backtest_over_the_backfilled_recording_is_byte_identical_across_runs(backfilled, tiny_model_dir, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    run_backtest(backfilled, tiny_model_dir, first, progress=False)
    proc = finsignal("backtest", "--recording", str(backfilled), "--model", str(tiny_model_dir), "--out", str(second),
                     env={**os.environ, "FINSIGNAL_LOG_LEVEL": "WARNING"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("signals.jsonl", "report.json", "trades.jsonl", "report.md"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    signals = [json.loads(line) for line in (first / "signals.jsonl").read_text().splitlines()]
    assert len(signals) >= 11 and {"BTCUSDT", "AAPL", "MSFT"} <= {s["symbol"] for s in signals}
    report = json.loads((first / "report.json").read_text())
    assert report["replay"]["signals"] == len(signals) and report["performance"]["trades"] > 0  # BTC news traded


def test_ctrl_c_stops_the_command_and_running_it_again_asks_only_for_the_rest(tmp_path):
    from tests.backfill.test_resume import unit

    out = tmp_path / "rec"
    args = ["backfill", "--from", "2024-05-01", "--to", "2024-06-30", "--out", str(out), "--no-progress"]
    with Servers() as servers:
        servers.bybit.fail_at, servers.edgar.fail_at = {}, {}
        servers.bybit.delay_s = servers.edgar.delay_s = 0.3
        proc = subprocess.Popen([sys.executable, "-m", "finsignal.cli", *args], env=servers.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        eventually(lambda: len(servers.bybit.ok()) + len(servers.edgar.ok()) >= 5, timeout_s=120)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err[-2000:]
        assert "interrupted" in err and "run the same command again" in err
        stored = {p for p in (out / ".backfill").rglob("*") if p.is_file()}
        assert json.loads((out / "manifest.json").read_text())["backfill"]["complete"] is False
        asked = len(servers.bybit.requests), len(servers.edgar.requests)

        servers.bybit.delay_s = servers.edgar.delay_s = 0.0
        again = finsignal(*args, env=servers.env())
        assert again.returncode == 0, again.stderr[-2000:]
        later = [r for r in servers.bybit.requests[asked[0]:] + servers.edgar.requests[asked[1]:] if r.status == 200]
    assert later and not [r.path for r in later if unit(out, r) in stored]
    assert json.loads((out / "manifest.json").read_text())["topics"] == {"filings": 5, "market.bybit.kline": 2688}


@pytest.fixture
def quiet_logging(monkeypatch):
    import finsignal.log

    monkeypatch.setattr(finsignal.log, "configure_logging", lambda *args, **kwargs: None)


@pytest.mark.parametrize("args, message", [
    (["--from", "2024-05-01", "--to", "yesterday"], "'yesterday': use a date"),
    (["--from", "2024-05-02", "--to", "2024-05-01"], "must be after --from"),
    (["--from", "2024-05-01", "--to", "2024-05-02", "--news", "/no/such.csv"], "no such news archive"),
    (["--from", "2024-05-01", "--to", "2024-05-02", "--news-timezone", "Mars/Base"], "unknown time zone"),
    (["--from", "2024-05-01", "--to", "2024-05-02", "--sources", "filings"], "FINSIGNAL_FILINGS_USER_AGENT"),
    (["--from", "2024-05-01", "--to", "2024-05-02", "--sources", "nasdaq"], "invalid option"),
])
def test_the_command_explains_bad_input(args, message, tmp_path, quiet_logging, monkeypatch):
    monkeypatch.delenv("FINSIGNAL_FILINGS_USER_AGENT", raising=False)
    result = CliRunner().invoke(app, ["backfill", *args, "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert message in result.output
