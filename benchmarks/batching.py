"""Token-budget batching against fixed-size batches, on a realistic length mix, through the demo model.

The mix: headlines (~15-40 tokens, real tweets when ../shared/data is present), articles of
200-800 tokens, and filing chunks up to the model's context. Both strategies score the same
pieces with the same model; the fixed baseline takes batches of 32 in arrival order, each padded
to its longest, as a naive worker would. Runs alternate and the best of each is kept.
"""

from __future__ import annotations

import json
import random
import time

import numpy as np

from benchmarks.e2e import _texts
from finsignal.demo import demo_model_dir
from signals.batching import BatchPlan, pack_by_budget, pack_fixed
from signals.model import SentimentModel

TITLE = "token-budget batching vs fixed batches of 32 (demo model, CPU)"


def length_mix(model: SentimentModel, quick: bool, seed: int = 0) -> list[list[int]]:
    """Token-id pieces: headlines, articles and filing chunks, shuffled as they would arrive."""
    rng = random.Random(seed)
    texts = _texts()
    headlines = [model.encode_chunks([t], 0)[0][0] for t in rng.sample(texts, 150 if quick else 600)]
    vocab_stream = [tok for t in texts[:3000] for tok in model.tokenizer(t, add_special_tokens=False)["input_ids"]]

    def body(n: int) -> list[int]:
        start = rng.randrange(0, len(vocab_stream) - n)
        return [*model.prefix, *vocab_stream[start : start + n], *model.suffix]

    window = model.max_length - len(model.prefix) - len(model.suffix)
    articles = [body(rng.randint(200, min(800, window))) for _ in range(40 if quick else 150)]
    filings = [body(rng.randint(window // 2, window)) for _ in range(15 if quick else 50)]
    pieces = headlines + articles + filings
    rng.shuffle(pieces)
    return pieces


def _time(model: SentimentModel, pieces: list[list[int]], plan: BatchPlan) -> float:
    began = time.perf_counter()
    for batch in plan.batches:
        model.score_ids([pieces[i] for i in batch])
    return time.perf_counter() - began


def run(quick: bool = False) -> list[dict]:
    model = SentimentModel.load(demo_model_dir(progress=False))
    pieces = length_mix(model, quick)
    lengths = [len(p) for p in pieces]
    plans = {
        "fixed-32": pack_fixed(lengths, 32),
        "token-budget": pack_by_budget(lengths, token_budget=8192, max_batch=64),
    }
    model.score_ids(pieces[:4])  # warm up kernels
    best = {name: float("inf") for name in plans}
    for _ in range(1 if quick else 3):
        for name, plan in plans.items():
            best[name] = min(best[name], _time(model, pieces, plan))
    rows = []
    for name, plan in plans.items():
        rows.append({"strategy": name, "pieces": len(pieces), "batches": len(plan.batches),
                     "padding_fraction": plan.padding_fraction, "seconds": best[name],
                     "pieces_per_s": len(pieces) / best[name], "real_tokens_per_s": plan.real_tokens / best[name]})
    rows.append({"strategy": "budget vs fixed", "pieces_per_s": best["fixed-32"] / best["token-budget"],
                 "padding_fraction": plans["token-budget"].padding_fraction / plans["fixed-32"].padding_fraction})
    rows.append({"strategy": "mix", "pieces": f"p50 {int(np.median(lengths))} tok, max {max(lengths)} tok"})
    return rows
