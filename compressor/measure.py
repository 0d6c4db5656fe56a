"""Measure one artifact the way the worker runs it, in a fresh process so memory and time are its own.

The child process loads the artifact with `compressor.runtime.loader` (the worker's code path), encodes
the eval texts once, then:

1. predicts every text in batches sorted by length (the probabilities come back for the quality metrics);
2. times `rounds` more passes over the same batches: documents/s is the median pass;
3. times `latency_samples` documents one at a time: p50 and p95 latency of one forward pass;
4. reports the model's tensor bytes and the peak resident memory above what the process held before
   loading (the high-water mark is reset after imports via /proc/self/clear_refs on Linux).

Timings exclude tokenization (the worker tokenizes once, upstream of the model), include padding.

Run as `python -m compressor.measure ARTIFACT TEXTS.json OUT.json [options]`; `measure_artifact` does that.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Measurement:
    """What one artifact costs and predicts."""

    artifact: str
    kind: str
    size_on_disk_bytes: int
    model_bytes: int
    peak_memory_bytes: int | None
    docs_per_second: float
    p50_latency_ms: float
    p95_latency_ms: float
    load_seconds: float
    threads: int
    documents: int
    dtype: str
    probs_path: str
    compute_dtype: str = "float32"  # what the matmuls ran in (bf16 weights run in fp32 on CPUs without bf16)
    timed_documents: int | None = None  # documents per timed pass (None: all)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _status_kb(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _batches(ids: list[list[int]], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def measure_in_process(artifact: Path, texts_path: Path, out_path: Path, *, threads: int = 1,
                       batch_size: int = 32, rounds: int = 3, latency_samples: int = 200,
                       dtype: str = "float32", timing_docs: int | None = None) -> dict[str, Any]:
    """The same measurement in this process: cheaper (no interpreter start), but memory figures then mix
    with whatever this process already holds, so `peak_memory_bytes` is reported as None."""
    import torch

    before = torch.get_num_threads()
    args = argparse.Namespace(artifact=str(artifact), texts=str(texts_path), out=str(out_path), threads=threads,
                              batch_size=batch_size, rounds=rounds, latency_samples=latency_samples, dtype=dtype,
                              timing_docs=timing_docs,
                              track_peak=False)
    try:
        result = _child(args)
    finally:
        torch.set_num_threads(before)
    Path(out_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from compressor.artifacts import tensor_bytes, weight_bytes
    from compressor.runtime.loader import artifact_kind, load_classifier

    hf_logging.disable_progress_bar()
    torch.set_num_threads(getattr(args, "score_threads", None) or args.threads)  # predictions: any thread count
    texts = json.loads(Path(args.texts).read_text())
    directory = Path(args.artifact)
    meta = json.loads((directory / "finsignal.json").read_text()) if (directory / "finsignal.json").is_file() else {}
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_length = int(meta.get("max_length") or tokenizer.model_max_length)
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    batches = _batches(ids, args.batch_size)
    padded = [tokenizer.pad({"input_ids": [ids[i] for i in b]}, return_tensors="pt") for b in batches]

    track_peak = getattr(args, "track_peak", True)
    base_kb = _status_kb("VmRSS")
    peak_ok = track_peak and _reset_peak()
    started = time.perf_counter()
    model, compute = load_for_measure(directory, args.dtype)
    load_seconds = time.perf_counter() - started
    probs = np.zeros((len(texts), 3), dtype=np.float32)
    column = {str(label).lower(): int(col) for col, label in model.config.id2label.items()}
    label_cols = [column[label] for label in ("bearish", "neutral", "bullish")]
    with torch.inference_mode():
        for b, enc in zip(batches, padded):
            logits = model(**enc, use_cache=False).logits.float()
            probs[b] = torch.softmax(logits, dim=-1)[:, label_cols].numpy()
        torch.set_num_threads(args.threads)
        timed, timed_docs = _timed_subset(batches, padded, getattr(args, "timing_docs", None))
        rates = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for enc in timed:
                model(**enc, use_cache=False)
            rates.append(timed_docs / (time.perf_counter() - t0))
        latencies = []
        for i in range(min(args.latency_samples, len(ids))):
            one = {"input_ids": torch.tensor([ids[i]]), "attention_mask": torch.ones(1, len(ids[i]), dtype=torch.long)}
            t0 = time.perf_counter()
            model(**one, use_cache=False)
            latencies.append((time.perf_counter() - t0) * 1000)
    peak_kb = _status_kb("VmHWM") if peak_ok else None
    np.save(args.out + ".probs.npy", probs)
    latencies.sort()
    return Measurement(
        artifact=str(directory),
        kind=artifact_kind(directory),
        size_on_disk_bytes=weight_bytes(directory),
        model_bytes=tensor_bytes(model),
        peak_memory_bytes=(peak_kb - base_kb) * 1024 if peak_kb is not None and base_kb is not None else None,
        docs_per_second=statistics.median(rates),
        p50_latency_ms=statistics.median(latencies),
        p95_latency_ms=latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        load_seconds=load_seconds,
        threads=args.threads,
        documents=len(texts),
        dtype=args.dtype,
        probs_path=args.out + ".probs.npy",
        compute_dtype=compute,
        timed_documents=timed_docs,
    ).as_dict()


def load_for_measure(directory: Path, dtype: str) -> tuple[Any, str]:
    """The artifact loaded in `dtype` and the dtype its matmuls run in.

    On a CPU without native bf16 (no AVX512-BF16 or AMX) PyTorch emulates bf16 matmuls, measured 7.3x
    slower than fp32 on an AVX2 EPYC: no one serves bf16 there. Its bf16 weights are then computed in fp32,
    as a CPU runtime would, so accuracy still reflects bf16 weights and the row says what ran.
    """
    from compressor.runtime.loader import load_classifier, native_bf16

    model = load_classifier(directory, dtype=dtype)
    if dtype == "bfloat16" and not native_bf16():
        return model.float(), "float32"
    return model, dtype


def _timed_subset(batches: list[list[int]], padded: list[Any], limit: int | None) -> tuple[list[Any], int]:
    """Every `k`-th batch so about `limit` documents are timed, spread over all lengths (None: all)."""
    total = sum(len(b) for b in batches)
    if not limit or limit >= total:
        return padded, total
    step = max(1, round(total / limit))
    chosen = list(range(0, len(batches), step))
    return [padded[i] for i in chosen], sum(len(batches[i]) for i in chosen)


def _compare_child(args: argparse.Namespace) -> dict[str, Any]:
    """Load several artifacts in one process and time them in alternation: a side-by-side comparison
    that background load on a shared machine affects equally."""
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from compressor.artifacts import tensor_bytes
    from compressor.runtime.loader import load_classifier

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    texts = json.loads(Path(args.texts).read_text())
    runs = []
    for directory, dtype in zip(args.compare, args.dtypes or ["float32"] * len(args.compare)):
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        meta_path = Path(directory) / "finsignal.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        ids = tokenizer(texts, truncation=True, max_length=int(meta.get("max_length") or 512))["input_ids"]
        order = _batches(ids, args.batch_size)
        padded, timed_docs = _timed_subset(order, [tokenizer.pad({"input_ids": [ids[i] for i in b]}, return_tensors="pt")
                                                   for b in order], getattr(args, "timing_docs", None))
        model, compute = load_for_measure(Path(directory), dtype)
        runs.append({"artifact": directory, "dtype": dtype, "compute_dtype": compute, "model": model, "padded": padded,
                     "timed_docs": timed_docs, "ids": ids,
                     "rates": [], "latencies": [], "model_bytes": tensor_bytes(model)})
    with torch.inference_mode():
        for run in runs:  # warm-up pass each
            for enc in run["padded"]:
                run["model"](**enc, use_cache=False)
        for _ in range(args.rounds):
            for run in runs:
                t0 = time.perf_counter()
                for enc in run["padded"]:
                    run["model"](**enc, use_cache=False)
                run["rates"].append(run["timed_docs"] / (time.perf_counter() - t0))
            for i in range(min(args.latency_samples, len(texts))):
                for run in runs:
                    ids = run["ids"][i]
                    one = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
                    t0 = time.perf_counter()
                    run["model"](**one, use_cache=False)
                    run["latencies"].append((time.perf_counter() - t0) * 1000)
    return {"threads": args.threads, "rounds": args.rounds, "documents": len(texts), "results": [
        {"artifact": r["artifact"], "dtype": r["dtype"], "compute_dtype": r["compute_dtype"],
         "model_bytes": r["model_bytes"],
         "docs_per_second": statistics.median(r["rates"]), "rates": r["rates"],
         "p50_latency_ms": statistics.median(r["latencies"]),
         "p95_latency_ms": sorted(r["latencies"])[min(len(r["latencies"]) - 1, int(0.95 * len(r["latencies"])))]}
        for r in runs]}


def compare_artifacts(artifacts: list[Path], texts_path: Path, out_path: Path, *, dtypes: list[str] | None = None,
                      threads: int = 1, batch_size: int = 32, rounds: int = 5, latency_samples: int = 100,
                      timing_docs: int | None = None, timeout_s: float = 3600) -> dict[str, Any]:
    """Time `artifacts` side by side (alternating, one process); see `_compare_child`."""
    cmd = [sys.executable, "-m", "compressor.measure", "--compare", *map(str, artifacts), "--texts-file",
           str(texts_path), "--out-file", str(out_path), "--threads", str(threads), "--batch-size", str(batch_size),
           "--rounds", str(rounds), "--latency-samples", str(latency_samples)]
    if dtypes:
        cmd += ["--dtypes", *dtypes]
    if timing_docs:
        cmd += ["--timing-docs", str(timing_docs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"side-by-side timing failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(Path(out_path).read_text())


def measure_artifact(
    artifact: Path,
    texts_path: Path,
    out_path: Path,
    *,
    threads: int = 1,
    batch_size: int = 32,
    rounds: int = 3,
    latency_samples: int = 200,
    dtype: str = "float32",
    timing_docs: int | None = None,
    score_threads: int | None = None,
    timeout_s: float = 3600,
) -> dict[str, Any]:
    """Run the child process on `artifact` and return its measurement (probabilities in `probs_path`).

    Predictions use `score_threads` (default: every core; they do not depend on it), timings `threads`;
    `timing_docs` caps the documents of a timed pass (batches spread over all lengths).
    """
    score_threads = score_threads or os.cpu_count() or 1
    cmd = [
        sys.executable, "-m", "compressor.measure", str(artifact), str(texts_path), str(out_path),
        "--threads", str(threads), "--batch-size", str(batch_size), "--rounds", str(rounds),
        "--latency-samples", str(latency_samples), "--dtype", dtype, "--score-threads", str(score_threads),
    ]
    if timing_docs:
        cmd += ["--timing-docs", str(timing_docs)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {artifact} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(Path(out_path).read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if argv is None:
        argv = sys.argv[1:]
    if "--compare" in argv:
        parser.add_argument("--compare", nargs="+", required=True)
        parser.add_argument("--dtypes", nargs="+")
        parser.add_argument("--texts-file", dest="texts", required=True)
        parser.add_argument("--out-file", dest="out", required=True)
        parser.add_argument("--threads", type=int, default=1)
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--rounds", type=int, default=5)
        parser.add_argument("--latency-samples", type=int, default=100)
        parser.add_argument("--timing-docs", type=int, default=None)
        args = parser.parse_args(argv)
        Path(args.out).write_text(json.dumps(_compare_child(args), indent=2) + "\n")
        return
    parser.add_argument("artifact")
    parser.add_argument("texts")
    parser.add_argument("out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--score-threads", type=int, default=None, help="threads for the prediction pass")
    parser.add_argument("--timing-docs", type=int, default=None, help="documents per timed pass [all]")
    args = parser.parse_args(argv)
    result = _child(args)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
