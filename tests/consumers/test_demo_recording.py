"""The shipped demo recording: synthetic and labelled so, reproducible, small, and rich enough to backtest.

Before: prices for BTCUSDT only, so a backtest made one trade and `--compare` of two models that
disagreed on most signals showed identical P&L.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compressor.train import TrainConfig, train
from consumers.backtest.synthetic import DEMO_SPEC, write_recording
from finsignal.cli import app
from finsignal.demo import sample_card, sample_corpus
from ingest.recording import read_recording

DEMO = Path(str(files("finsignal") / "recordings" / "demo"))


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch):
    """In-process CLI runs must not point structlog at CliRunner's captured (then closed) stderr."""
    import finsignal.log

    monkeypatch.setattr(finsignal.log, "configure_logging", lambda *args, **kwargs: None)


def test_demo_is_labelled_synthetic_small_and_regenerates_byte_for_byte(tmp_path):
    manifest = json.loads((DEMO / "manifest.json").read_text())
    assert manifest["synthetic"] is True and "Not market data" in manifest["description"]
    assert "synthetic" in (DEMO / "README.md").read_text().lower()
    assert sum(p.stat().st_size for p in DEMO.iterdir()) < 2_000_000
    write_recording(tmp_path, DEMO_SPEC)
    for name in ("manifest.json", "news.jsonl", "filings.jsonl", "market.bybit.kline.jsonl"):
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), name


def test_demo_has_prices_for_several_symbols_and_every_kind_of_document():
    priced, topics = set(), set()
    for message in read_recording(DEMO):
        topics.add(message.topic)
        if message.topic == "market.bybit.kline":
            priced.add(json.loads(message.value)["symbol"])
    assert topics == {"news", "filings", "market.bybit.kline"}
    assert len(priced) >= 5


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model: another seed and shape, so it reads some headlines differently."""
    train_path, eval_path = sample_corpus()
    out = tmp_path_factory.mktemp("models") / "other"
    config = TrainConfig(hidden_size=48, num_layers=1, num_heads=4, num_kv_heads=2, intermediate_size=96,
                         vocab_size=768, epochs=1, seed=3, name="tiny-other")
    train(train_path, out, eval_path, config, progress=False, data_card=sample_card())
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)  # trains a model, then replays five hours twice, on a shared 2-core machine
def test_demo_backtest_trades_dozens_of_times_and_compare_shows_different_pnl(tiny_model_dir, other_model,
                                                                              tmp_path):
    result = CliRunner().invoke(app, ["--log-level", "WARNING", "backtest", "--recording", str(DEMO), "--model",
                                      str(tiny_model_dir), "--out", str(tmp_path), "--compare", str(other_model)])
    assert result.exit_code == 0, result.output

    report = json.loads((tmp_path / "report.json").read_text())
    trades = [json.loads(line) for line in (tmp_path / "trades.jsonl").read_text().splitlines()]
    assert report["performance"]["trades"] == len(trades) >= 24
    assert len({t["symbol"] for t in trades}) >= 4
    quality = report["signal_quality"]
    assert all(isinstance(quality[k], float) for k in ("precision", "recall", "hit_rate")), quality

    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert comparison["agreement"]["direction_agreement"] < 1.0
    pnl = comparison["deltas"]["performance"]["net_pnl"]
    assert pnl["delta"] != 0, pnl
