"""Synthetic crypto recordings with a known news effect, for demos and tests of the backtest.

Prices are a seeded random walk on 1-minute Bybit-shaped klines. Headlines are drawn from templates
with a label (bullish, bearish, neutral); an *informative* bullish or bearish headline adds a drift of
`effect_bps` in its direction, spread over the `effect_minutes` bars after the bar it appears in, so a
model that reads headlines well earns money and one that does not, does not. Nothing here is market
data: the generator's parameters and seed are written into the manifest.

    python -m consumers.backtest.synthetic OUT_DIR [--hours 24] [--seed 7]
    python -m consumers.backtest.synthetic finsignal/recordings/demo --demo    # the shipped demo, byte for byte

The demo recording (`DEMO_SPEC`) adds headlines on equities and 8-K filings that have no prices (so
`finsignal run` shows every kind of document; the backtest trades only what has prices).
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
    "XRPUSDT": ("XRP", "XRP", 0.62, "0.0001"),
    "DOGEUSDT": ("Dogecoin", "DOGE", 0.16, "0.00001"),
}

# Documents without prices, for the demo: (company, ticker, CIK), and templated filings.
EQUITIES = (("Apple", "AAPL", "320193"), ("Nvidia", "NVDA", "1045810"), ("Tesla", "TSLA", "1318605"),
            ("Microsoft", "MSFT", "789019"), ("Boeing", "BA", "12927"))
EQUITY_HEADLINES = (
    "{name} beats quarterly estimates and raises full-year guidance",
    "{name} shares tumble after weak sales",
    "{name} to present at investor conference next week",
    "{name} files for bankruptcy protection",
    "{name} wins large government contract",
    "{name} faces SEC investigation into accounting",
    "{name} schedules annual shareholder meeting",
)
FILINGS = (
    ("Results of Operations and Financial Condition",
     "Item 2.02 Results of Operations and Financial Condition. The company reported record quarterly revenue "
     "and raised its outlook."),
    ("Departure of Directors or Certain Officers",
     "Item 5.02 Departure of Directors or Certain Officers. The chief financial officer resigned, effective "
     "immediately."),
    ("Regulation FD Disclosure",
     "Item 7.01 Regulation FD Disclosure. The company will present at an investor conference."),
)

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
    equity_news_per_hour: float = 0.0  # headlines on symbols without prices
    filings_per_hour: float = 0.0  # 8-K filings on those symbols


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
    docs.extend(_unpriced(spec, rng, serial))
    docs.sort(key=lambda d: (d.ts_event, d.id))
    klines.sort(key=lambda k: (k.ts_event, k.symbol))
    return docs, klines


def _unpriced(spec: SyntheticSpec, rng: np.random.Generator, serial: int) -> list[Document]:
    """Equity headlines and 8-K filings: no prices, so the backtest scores but does not trade them."""
    horizon_s = spec.minutes * 60
    docs = []
    for _ in range(rng.poisson(spec.equity_news_per_hour * spec.minutes / 60)):
        name, ticker, _cik = EQUITIES[rng.integers(len(EQUITIES))]
        ts_event = spec.start_ns + int(rng.uniform(0, horizon_s) * 1e9)
        serial += 1
        docs.append(Document.create(
            kind="news", source="rss:synthetic-equity-wire",
            title=EQUITY_HEADLINES[rng.integers(len(EQUITY_HEADLINES))].format(name=name),
            url=f"https://news.example.com/equity/{serial:05d}", symbols=[ticker], ts_event=ts_event,
            ts_ingest=ts_event + 250_000_000))
    for i in range(rng.poisson(spec.filings_per_hour * spec.minutes / 60)):
        _name, ticker, cik = EQUITIES[rng.integers(len(EQUITIES))]
        item, body = FILINGS[rng.integers(len(FILINGS))]
        ts_event = spec.start_ns + int(rng.uniform(0, horizon_s) * 1e9)
        docs.append(Document.create(
            kind="filing", source="sec-edgar", title=f"8-K: {item}", body=body, symbols=[ticker],
            ts_event=ts_event, ts_ingest=ts_event + 400_000_000, accession=f"{int(cik):010d}-26-{i + 1:06d}",
            cik=cik, form="8-K"))
    return docs


DEMO_SPEC = SyntheticSpec(
    symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"),
    start_ns=1_793_710_800_000_000_000,  # 2026-11-03 13:00 UTC
    minutes=5 * 60,
    news_per_hour=8.0,
    market_news_per_hour=1.0,
    equity_news_per_hour=4.0,
    filings_per_hour=1.0,
    seed=20261103,
)
"""The shipped demo (`finsignal/recordings/demo`): five priced crypto symbols over five hours."""


def write_recording(out_dir: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write a synthetic recording directory (same format as `finsignal record`); return its path."""
    spec = spec or SyntheticSpec()
    out = Path(out_dir)
    docs, klines = generate(spec)
    with RecordingWriter(out) as writer:
        for doc in docs:
            writer.write("filings" if doc.kind == "filing" else "news", doc.ts_event, doc.key, doc.to_bytes())
        for k in klines:
            writer.write("market.bybit.kline", k.ts_event, k.key, k.to_bytes())
    manifest = json.loads((out / MANIFEST).read_text())
    generator = asdict(spec)
    unpriced = spec.equity_news_per_hour > 0 or spec.filings_per_hour > 0
    if not unpriced:  # recordings made before these options regenerate byte for byte
        del generator["equity_news_per_hour"], generator["filings_per_hour"]
    manifest.update({
        "created_ns": spec.start_ns,  # deterministic: the same spec writes the same bytes
        "synthetic": True,
        "description": "Synthetic: templated headlines and filings and a seeded random walk with a known news "
                       "effect (consumers/backtest/synthetic.py). Not market data, not real news." if unpriced else
                       "Synthetic: templated crypto headlines and a seeded random walk with a known news effect "
                       "(consumers/backtest/synthetic.py). Not market data.",
        "generator": generator,
    })
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=SyntheticSpec.seed)
    parser.add_argument("--symbols", default=",".join(SyntheticSpec.symbols))
    parser.add_argument("--demo", action="store_true", help="the shipped demo recording (DEMO_SPEC); other "
                        "options are ignored")
    parser.add_argument("--overwrite", action="store_true", help="replace the recording files in a non-empty OUT")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        parser.error(f"{args.out} is not empty (--overwrite replaces its recording files)")
    if args.overwrite and args.out.is_dir():
        for old in args.out.glob("*.jsonl"):
            old.unlink()
    spec = DEMO_SPEC if args.demo else SyntheticSpec(symbols=tuple(args.symbols.split(",")),
                                                     minutes=int(args.hours * 60), seed=args.seed)
    write_recording(args.out, spec)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
