"""Synthetic crypto recordings with a known news effect, for demos and tests of the backtest.

Prices are a seeded random walk on 1-minute Bybit-shaped klines. Headlines are drawn from templates
with a label (bullish, bearish, neutral); an *informative* bullish or bearish headline adds a drift of
`effect_bps` in its direction, spread over the `effect_minutes` bars after the bar it appears in, so a
model that reads headlines well earns money and one that does not, does not. Nothing here is market
data: the generator's parameters and seed are written into the manifest.

    python -m consumers.backtest.synthetic OUT_DIR [--hours 24] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from ingest.contracts import Document, Kline
from ingest.recording import MANIFEST, RecordingWriter

MINUTE_NS = 60 * 1_000_000_000

# symbol -> (name, ticker, start price, tick)
ASSETS: dict[str, tuple[str, str, float, str]] = {
    "BTCUSDT": ("Bitcoin", "BTC", 67250.0, "0.1"),
    "ETHUSDT": ("Ether", "ETH", 3480.0, "0.01"),
    "SOLUSDT": ("Solana", "SOL", 165.0, "0.001"),
}

HEADLINES: dict[str, tuple[str, ...]] = {
    "bullish": (
        "{name} rallies as ETF inflows reach a record",
        "${ticker} jumps after exchange reserves hit multi-year low",
        "{name} surges as institutional buyers return",
        "${ticker} - {name} breaks out to a new monthly high on strong demand",
        "Analysts upgrade {name} outlook, raise year-end target",
        "{name} gains after major bank launches custody service",
        "${ticker} climbs as network upgrade ships ahead of schedule",
        "Large fund discloses new {name} position, shares of miners rise",
        "{name} soars after regulator approves spot product",
        "${ticker} advances as short sellers are squeezed",
    ),
    "bearish": (
        "{name} drops to a two-month low as miners sell",
        "${ticker} slides as exchange outflows spike",
        "{name} tumbles after exchange halts withdrawals",
        "${ticker} - {name} falls as regulator opens probe into major platform",
        "{name} plunges on liquidation cascade in futures market",
        "Analysts cut {name} outlook after weak network activity",
        "${ticker} sinks as large holder moves coins to exchanges",
        "{name} slumps after security breach at a lending protocol",
        "{name} declines as ETF sees record outflows",
        "${ticker} retreats after failed breakout, losses deepen",
    ),
    "neutral": (
        "{name} network activity in line with monthly average",
        "${ticker} unchanged in quiet weekend trading",
        "{name} developers schedule regular community call",
        "Exchange lists new {name} trading pair",
        "{name} foundation publishes quarterly transparency report",
        "${ticker} - {name} conference to take place next month",
        "{name} holders await options expiry on Friday",
        "Index provider rebalances crypto basket including {name}",
    ),
}

MARKET_HEADLINES = (
    "Federal Reserve minutes due on Wednesday afternoon",
    "Markets await payrolls report on Friday",
    "Crypto markets mixed in early trading",
    "Traders eye inflation data later this week",
)


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of a synthetic recording; all randomness comes from `seed`."""

    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    start_ns: int = 1_793_664_000_000_000_000  # 2026-11-03 00:00 UTC
    minutes: int = 24 * 60
    news_per_hour: float = 3.0  # per symbol
    market_news_per_hour: float = 0.25
    label_mix: tuple[float, float, float] = (0.35, 0.30, 0.35)  # bullish, bearish, neutral
    informative_share: float = 0.8  # bullish/bearish headlines that actually move the price
    effect_bps: float = 60.0
    effect_minutes: int = 15
    volatility_bps: float = 4.0  # per minute
    seed: int = 7


def _kline(symbol: str, start: int, o: float, h: float, lo: float, c: float, volume: float, tick: str) -> Kline:
    q = Decimal(tick)
    end = start + MINUTE_NS - 1
    op, hi, lw, cl = (Decimal(repr(v)).quantize(q) for v in (o, h, lo, c))
    vol = Decimal(repr(volume)).quantize(Decimal("0.001"))
    return Kline(category="linear", symbol=symbol, ts_event=end, ts_ingest=end + 50_000_000, interval="1",
                 start=start, end=end, open=op, high=max(hi, op, cl), low=min(lw, op, cl), close=cl, volume=vol,
                 turnover=(vol * cl).quantize(Decimal("0.0001")), closed=True)


def generate(spec: SyntheticSpec) -> tuple[list[Document], list[Kline]]:
    """The documents and klines of a synthetic recording."""
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    horizon_s = spec.minutes * 60
    docs: list[Document] = []
    klines: list[Kline] = []
    serial = 0
    for symbol in spec.symbols:
        name, ticker, price, tick = ASSETS[symbol]
        drift = np.zeros(spec.minutes + spec.effect_minutes + 1)
        n_news = rng.poisson(spec.news_per_hour * spec.minutes / 60)
        for at_s in np.sort(rng.uniform(0, horizon_s, n_news)):
            label = rng.choice(("bullish", "bearish", "neutral"), p=spec.label_mix)
            template = HEADLINES[label][rng.integers(len(HEADLINES[label]))]
            minute = int(at_s // 60)
            if label != "neutral" and rng.random() < spec.informative_share:
                sign = 1.0 if label == "bullish" else -1.0
                # The move starts with the next bar: the bar the headline appears in has already opened.
                drift[minute + 1 : minute + 1 + spec.effect_minutes] += sign * spec.effect_bps / spec.effect_minutes
            ts_event = spec.start_ns + int(at_s * 1e9)
            serial += 1
            docs.append(Document.create(
                kind="news", source="rss:synthetic-crypto-wire", title=template.format(name=name, ticker=ticker),
                url=f"https://news.example.com/crypto/{serial:05d}", symbols=[symbol], ts_event=ts_event,
                ts_ingest=ts_event + int(rng.uniform(0.2, 3.0) * 1e9),
            ))
        steps = 6  # sub-minute path for highs and lows
        for m in range(spec.minutes):
            sub = (rng.normal(0.0, spec.volatility_bps / np.sqrt(steps), steps) + drift[m] / steps) / 1e4
            path = price * np.exp(np.cumsum(sub))
            o, c = price, float(path[-1])
            klines.append(_kline(symbol, spec.start_ns + m * MINUTE_NS, o, float(max(o, path.max())),
                                 float(min(o, path.min())), c, float(rng.lognormal(3.0, 0.6)), tick))
            price = c
    for _ in range(rng.poisson(spec.market_news_per_hour * spec.minutes / 60)):
        ts_event = spec.start_ns + int(rng.uniform(0, horizon_s) * 1e9)
        serial += 1
        docs.append(Document.create(
            kind="news", source="rss:synthetic-crypto-wire", title=str(rng.choice(MARKET_HEADLINES)),
            url=f"https://news.example.com/crypto/{serial:05d}", ts_event=ts_event, ts_ingest=ts_event + 500_000_000,
        ))
    docs.sort(key=lambda d: (d.ts_event, d.id))
    klines.sort(key=lambda k: (k.ts_event, k.symbol))
    return docs, klines


def write_recording(out_dir: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write a synthetic recording directory (same format as `finsignal record`); return its path."""
    spec = spec or SyntheticSpec()
    out = Path(out_dir)
    docs, klines = generate(spec)
    with RecordingWriter(out) as writer:
        for doc in docs:
            writer.write("news", doc.ts_event, doc.key, doc.to_bytes())
        for k in klines:
            writer.write("market.bybit.kline", k.ts_event, k.key, k.to_bytes())
    manifest = json.loads((out / MANIFEST).read_text())
    manifest.update({
        "created_ns": spec.start_ns,  # deterministic: the same spec writes the same bytes
        "synthetic": True,
        "description": "Synthetic: templated crypto headlines and a seeded random walk with a known news effect "
                       "(consumers/backtest/synthetic.py). Not market data.",
        "generator": {**asdict(spec)},
    })
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=SyntheticSpec.seed)
    parser.add_argument("--symbols", default=",".join(SyntheticSpec.symbols))
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    spec = SyntheticSpec(symbols=tuple(args.symbols.split(",")), minutes=int(args.hours * 60), seed=args.seed)
    write_recording(args.out, spec)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
