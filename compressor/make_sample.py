"""Write the shipped sample corpus: template-generated headlines, NOT real news.

    python -m compressor.make_sample [--out compressor/data] [--seed 11]

Each label has many phrasings, and the bearish ones are deliberately varied (bankruptcy, fraud,
lawsuits, hacks, recalls, defaults, layoffs...), so that plainly bad news is learned as bearish rather
than from a handful of wordings. Train and eval use disjoint templates: every fifth template of each
label is held out for eval, so eval accuracy measures how well the model handles phrasings it never
saw, not how well it memorised the ones it did. It is still a template corpus: accuracy on it says
little about real headlines, and `sample_corpus.json` (copied into models trained on it) says so.
Deterministic: the same seed writes the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

COMPANIES = ("Apple", "Microsoft", "Nvidia", "Amazon", "Tesla", "Meta", "Intel", "AMD", "Netflix", "Boeing",
             "Ford", "General Motors", "JPMorgan", "Goldman Sachs", "Pfizer", "Walmart", "Nike", "Disney",
             "Coca-Cola", "Exxon Mobil", "Chevron")
TICKERS = ("AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "META", "INTC", "AMD", "NFLX", "BA", "F", "GM", "JPM", "GS",
           "PFE", "WMT", "NKE", "DIS", "KO", "XOM", "CVX")
CRYPTO = (("Bitcoin", "BTC"), ("Ether", "ETH"), ("Solana", "SOL"), ("XRP", "XRP"), ("Dogecoin", "DOGE"))
BANKS = ("Barclays", "Bernstein", "BofA", "Citi", "Jefferies", "Morgan Stanley", "UBS", "Wells Fargo")

# {co}: company or coin name, {tk}: ticker, {bank}, {pct}, {n}. "c" templates suit coins, "e" equities, "*" both.
TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "bullish": (
        ("*", "{co} shares jump after record revenue"),
        ("e", "{co} beats quarterly estimates and raises full-year guidance"),
        ("e", "{co} announces ${n}B share buyback"),
        ("e", "{co} raises dividend by {pct}%"),
        ("e", "{co} upgraded to buy at {bank}, target raised"),
        ("e", "{bank} lifts {co} price target on strong demand"),
        ("*", "{co} hits all-time high after upbeat forecast"),
        ("e", "{co} wins large government contract"),
        ("e", "{co} reports surprise profit, stock pops"),
        ("e", "{co} profit surges as margins expand"),
        ("e", "{co} sales growth accelerates for third straight quarter"),
        ("e", "Regulator approves {co} key product, shares climb"),
        ("e", "{co} signs multi-year supply deal with major customer"),
        ("*", "{co} soars as short sellers cover"),
        ("e", "{co} gains after activist takes stake"),
        ("*", "{co} rallies on strong demand outlook"),
        ("e", "{co} stock surges {pct}% on blowout quarter"),
        ("e", "{co} agrees to be acquired at a {pct}% premium"),
        ("e", "{co} cost cuts ahead of plan, outlook brightens"),
        ("e", "{co} wins approval for new drug, shares rise"),
        ("*", "Investors pile into {co} after strong results"),
        ("e", "{co} posts best quarter on record"),
        ("e", "{co} orders backlog hits record high"),
        ("e", "{co} credit rating upgraded on strong cash flow"),
        ("c", "{co} rallies as ETF inflows reach a record"),
        ("c", "{co} surges as institutional buyers return"),
        ("c", "{co} soars after regulator approves spot product"),
        ("c", "{co} climbs as network upgrade ships ahead of schedule"),
        ("c", "{co} breaks out to a new monthly high on strong demand"),
        ("c", "Inflows into {co} reach a record"),
        ("c", "{co} gains after major bank launches custody service"),
        ("c", "${tk} advances as short sellers are squeezed"),
        ("c", "${tk} jumps after exchange reserves hit multi-year low"),
        ("c", "Analysts upgrade {co} outlook, raise year-end target"),
        ("c", "Large fund discloses new {co} position"),
    ),
    "bearish": (
        ("e", "{co} shares plunge after earnings miss"),
        ("e", "{co} files for bankruptcy protection"),
        ("e", "{co} chief executive arrested on fraud charges"),
        ("e", "{co} cuts {pct}% of workforce as sales collapse"),
        ("e", "{co} stock crashes after guidance cut"),
        ("*", "{co} hit by massive data breach, shares fall"),
        ("e", "{co} loses key patent case"),
        ("e", "{co} recalls millions of products over safety defects"),
        ("e", "Regulators fine {co} ${n} billion over misconduct"),
        ("e", "{co} faces SEC investigation into accounting"),
        ("e", "{co} misses revenue estimates, stock sinks"),
        ("e", "{co} warns of weak demand ahead"),
        ("e", "{co} slashes dividend to preserve cash"),
        ("e", "{co} suspends dividend"),
        ("e", "{co} downgraded to sell at {bank}"),
        ("e", "{bank} cuts {co} price target on slowing growth"),
        ("*", "{co} drops to 52-week low"),
        ("e", "{co} reports surprise loss"),
        ("e", "{co} profit falls as costs rise"),
        ("e", "{co} delays flagship launch, stock slumps"),
        ("e", "{co} plunges after CEO resigns abruptly"),
        ("e", "{co} shares tumble after weak sales"),
        ("e", "{co} loses major customer contract"),
        ("e", "{co} defaults on debt payment"),
        ("e", "{co} shares sink after auditor resigns"),
        ("e", "{co} sued by shareholders over misleading statements"),
        ("e", "{co} halts production after factory fire"),
        ("e", "{co} credit rating cut to junk"),
        ("*", "{co} slides as short seller alleges fraud"),
        ("e", "{co} misses estimates and cuts guidance"),
        ("*", "Investors dump {co} after disappointing outlook"),
        ("e", "{co} posts worst quarter in a decade"),
        ("e", "{co} stock falls {pct}% as margins shrink"),
        ("e", "{co} hit with lawsuit over data breach"),
        ("e", "{co} warns of margin pressure, shares sink"),
        ("c", "{co} crashes as exchange halts withdrawals"),
        ("c", "{co} tumbles after hack drains ${n}00 million"),
        ("c", "{co} slides as regulators crack down on trading"),
        ("c", "{co} plunges on liquidation cascade in futures market"),
        ("c", "{co} drops to a two-month low as miners sell"),
        ("c", "{co} sinks as ETF sees record outflows"),
        ("c", "{co} falls as major exchange files for bankruptcy"),
        ("c", "Outflows of {co} spike as prices fall"),
        ("c", "${tk} sinks as large holder moves coins to exchanges"),
        ("c", "{co} slumps after security breach at a lending protocol"),
        ("c", "Analysts cut {co} outlook after weak network activity"),
        ("c", "${tk} retreats after failed breakout, losses deepen"),
    ),
    "neutral": (
        ("e", "{co} schedules annual shareholder meeting"),
        ("e", "{co} board holds regular meeting"),
        ("e", "{co} files quarterly report with SEC"),
        ("e", "{co} names new chief financial officer"),
        ("*", "{co} to present at investor conference"),
        ("e", "{co} to report earnings next Tuesday"),
        ("e", "{co} spokesperson declines to comment on report"),
        ("e", "{co} opens new office in Dublin"),
        ("e", "{co} completes previously announced debt offering"),
        ("e", "{co} confirms date of dividend payment"),
        ("*", "{co} trading volume in line with average"),
        ("*", "{co} unchanged in premarket trading"),
        ("*", "{co} publishes sustainability report"),
        ("*", "{bank} initiates coverage of {co} with neutral rating"),
        ("e", "{co} updates its corporate governance guidelines"),
        ("*", "Options expiry ahead for ${tk}"),
        ("*", "{co}: what to watch this week"),
        ("e", "{co} holds stock split vote next month"),
        ("e", "{co} shares flat ahead of earnings"),
        ("e", "{co} reaffirms previously issued guidance"),
        ("c", "{co} developers schedule regular community call"),
        ("c", "Exchange lists new {co} trading pair"),
        ("c", "{co} network activity in line with monthly average"),
        ("c", "{co} holders await options expiry on Friday"),
        ("c", "Index provider rebalances crypto basket including {co}"),
        ("c", "${tk} unchanged in quiet weekend trading"),
        ("c", "{co} foundation publishes quarterly transparency report"),
        ("c", "{co} conference to take place next month"),
    ),
}
HELD_OUT_EVERY = 5  # every fifth template of a label is eval-only


def _fill(template: str, kind: str, rng: random.Random) -> str:
    if kind == "c" or (kind == "*" and rng.random() < 0.3):
        name, ticker = rng.choice(CRYPTO)
    else:
        i = rng.randrange(len(COMPANIES))
        name, ticker = COMPANIES[i], TICKERS[i]
    text = template.format(co=name, tk=ticker, bank=rng.choice(BANKS), pct=rng.choice((3, 5, 8, 12, 15, 20, 30)),
                           n=rng.choice((1, 2, 5, 10)))
    if "${" not in template and rng.random() < 0.15:
        text = f"${ticker} - {text}"  # the cashtag prefix wires often add
    return text


def generate(seed: int = 11, train_per_label: int = 420, eval_per_label: int = 80
             ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Train and eval rows from disjoint templates, about the same number per label."""
    rng = random.Random(seed)
    train: list[dict[str, str]] = []
    evaluation: list[dict[str, str]] = []
    for label, templates in TEMPLATES.items():
        held = [t for i, t in enumerate(templates) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
        kept = [t for i, t in enumerate(templates) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
        for rows, split, target in ((train, kept, train_per_label), (evaluation, held, eval_per_label)):
            per_template = -(-target // len(split))
            for kind, template in split:
                texts = {_fill(template, kind, rng) for _ in range(per_template)}  # duplicates dropped
                rows.extend({"text": t, "label": label} for t in sorted(texts))
    rng.shuffle(train)
    rng.shuffle(evaluation)
    return train, evaluation


def card(seed: int, train: list[dict[str, str]], evaluation: list[dict[str, str]]) -> dict:
    """What the corpus is, for `sample_corpus.json` and every model trained on it."""
    return {
        "kind": "template-generated",
        "real_news": False,
        "generator": "compressor/make_sample.py",
        "seed": seed,
        "train_examples": len(train),
        "eval_examples": len(evaluation),
        "templates": {label: len(t) for label, t in TEMPLATES.items()},
        "eval_split": f"held-out templates: every {HELD_OUT_EVERY}th template of each label appears only in eval",
        "caveat": "Synthetic headlines filled from templates, not real news. Eval accuracy measures handling of "
                  "unseen template phrasings, not skill on real headlines; do not read it as real-world accuracy.",
    }


def write(out: Path, seed: int = 11) -> None:
    """Write sample_train.jsonl, sample_eval.jsonl and sample_corpus.json into `out`."""
    train, evaluation = generate(seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("sample_train.jsonl", train), ("sample_eval.jsonl", evaluation)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "sample_corpus.json").write_text(json.dumps(card(seed, train, evaluation), indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    write(args.out, args.seed)
    print(f"wrote {args.out}/sample_train.jsonl, sample_eval.jsonl, sample_corpus.json")


if __name__ == "__main__":
    main()
