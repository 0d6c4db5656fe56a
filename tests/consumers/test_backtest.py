"""The backtest end to end with a real (tiny) model: byte-identical replays, reports, comparisons, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consumers.backtest import BacktestConfig, StrategyConfig, load_recording, run_backtest, run_comparison
from finsignal.cli import app
from signals.model import SentimentModel
from tests.consumers.helpers import ContrarianModel

RECORDINGS = Path(str(files("finsignal") / "recordings"))
CRYPTO = RECORDINGS / "crypto-synthetic-1d"
DEMO = RECORDINGS / "demo"


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch):
    """In-process CLI runs must not point structlog at CliRunner's captured (then closed) stderr."""
    import finsignal.log

    monkeypatch.setattr(finsignal.log, "configure_logging", lambda *args, **kwargs: None)


@pytest.fixture(scope="module")
def crypto_report(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    run_backtest(CRYPTO, tiny_model_dir, out)
    return out


def test_the_same_inputs_give_a_byte_identical_signal_stream_and_report(tiny_model_dir, crypto_report, tmp_path):
    # A second run in another process, through the command line.
    env = {**os.environ, "FINSIGNAL_LOG_LEVEL": "WARNING"}
    proc = subprocess.run(
        [sys.executable, "-m", "finsignal.cli", "backtest", "--recording", str(CRYPTO), "--model",
         str(tiny_model_dir), "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

    for name in ("signals.jsonl", "report.json", "trades.jsonl", "report.md"):
        assert (tmp_path / name).read_bytes() == (crypto_report / name).read_bytes(), name
    signals = (crypto_report / "signals.jsonl").read_bytes().splitlines()
    assert len(signals) > 100
    assert "signals, precision" in proc.stdout


def test_signals_are_stamped_by_the_replay_clock_not_the_wall_clock(crypto_report):
    rec = load_recording(CRYPTO)
    first, last = rec.events[0].ts, rec.events[-1].ts
    for line in (crypto_report / "signals.jsonl").read_text().splitlines():
        sig = json.loads(line)
        assert sig["ts_event"] <= sig["ts_scored"] <= sig["ts_event"] + 200_000_000
        assert first <= sig["ts_scored"] <= last + 200_000_000  # 2026-11-03, whatever today is


def test_report_has_quality_trading_metrics_and_plots(crypto_report):
    report = json.loads((crypto_report / "report.json").read_text())

    q, p = report["signal_quality"], report["performance"]
    assert report["recording"]["priced_symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert report["recording"]["rejected"] == 0
    assert q["signals_priced"] + report["skipped_signals"].get("no_prices_for_symbol", 0) == report["replay"]["signals"]
    assert q["true_positives"] + q["false_positives"] == q["signals_acted_on"]
    assert p["trades"] == len((crypto_report / "trades.jsonl").read_text().splitlines())
    assert p["net_pnl"] == pytest.approx(p["gross_pnl"] - p["costs"])
    assert p["total_return"] == pytest.approx(p["net_pnl"], abs=1e-9)  # fixed notional: equity = 1 + P&L
    assert p["costs"] > 0 and p["turnover"] >= 2 * p["trades"] * 0.9
    for key in ("precision", "recall", "hit_rate", "sharpe", "max_drawdown"):
        assert key in q or key in p
    for png in ("equity.png", "drawdown.png"):
        assert (crypto_report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (crypto_report / "report.md").read_text()
    assert "## Signal quality" in md and "![equity](equity.png)" in md


def test_comparing_a_model_with_its_contrarian_shows_every_flip(tiny_model_dir, tmp_path):
    model = SentimentModel.load(tiny_model_dir)
    strategy = StrategyConfig(entry_threshold=0.0)

    a, b, comparison = run_comparison(DEMO, model, ContrarianModel(model), tmp_path, BacktestConfig(strategy=strategy))

    agree = comparison["agreement"]
    directional = sum(s.direction.value != "flat" for s in a.signals)
    assert agree["matched_signals"] == len(a.signals) == len(b.signals)
    assert agree["long_short_flips"] == directional > 0
    assert agree["flips"] == directional
    assert agree["score_correlation"] == pytest.approx(-1.0)
    assert comparison["deltas"]["performance"]["trades"]["delta"] == 0
    for name in ("comparison.json", "comparison.md", "equity_compare.png", "compare/report.json", "report.json"):
        assert (tmp_path / name).is_file(), name


def test_a_model_compared_with_itself_agrees_fully(tiny_model_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["--log-level", "WARNING", "backtest", "--recording", str(DEMO), "--model",
                                 str(tiny_model_dir), "--out", str(tmp_path), "--compare", str(tiny_model_dir)])

    assert result.exit_code == 0, result.output
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert comparison["agreement"]["direction_agreement"] == 1.0
    assert comparison["agreement"]["flips"] == 0
    assert all(row["delta"] in (0, 0.0, None) for rows in comparison["deltas"].values() for row in rows.values())
    assert "agreement: direction 100.00%" in result.output


def test_cli_reports_a_missing_recording_clearly(tiny_model_dir, tmp_path):
    result = CliRunner().invoke(app, ["backtest", "--recording", "/nonexistent/recording", "--model",
                                      str(tiny_model_dir), "--out", str(tmp_path)])

    assert result.exit_code == 2
    assert "not a recording directory" in result.output


def test_cli_reports_an_invalid_strategy_option_clearly(tiny_model_dir, tmp_path):
    result = CliRunner().invoke(app, ["backtest", "--recording", str(DEMO), "--model", str(tiny_model_dir),
                                      "--out", str(tmp_path), "--overlap", "sideways"])

    assert result.exit_code == 2
    assert "invalid option: overlap" in result.output


def test_cli_refuses_a_directory_that_is_not_a_model(tmp_path):
    result = CliRunner().invoke(app, ["backtest", "--recording", str(DEMO), "--model", str(tmp_path),
                                      "--out", str(tmp_path / "out")])

    assert result.exit_code == 2
    assert "no config.json" in result.output
