"""`finsignal score`: score a JSONL file of `{"id", "text"}` lines without Kafka or Redis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from signals.contracts import LABELS
from signals.model import DEFAULT_MAX_LENGTH, SentimentModel, combine_chunks, to_class_probs


class InputError(ValueError):
    """An input line that cannot be scored; the message names the line."""


def read_inputs(path: Path) -> list[tuple[str, str]]:
    """(id, text) pairs from a JSONL file; every line must have a string id and a non-empty text."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
                raise InputError(f"{path}:{lineno}: needs a non-empty string field 'text'")
            if "id" not in row or not isinstance(row["id"], (str, int)):
                raise InputError(f"{path}:{lineno}: needs an 'id' (string or integer)")
            rows.append((str(row["id"]), row["text"]))
    return rows


def score_file(model_dir: Path, input_path: Path, output_path: Path, batch_size: int = 32,
               progress: bool = True, max_length: int = DEFAULT_MAX_LENGTH, chunk_overlap: int = 32) -> int:
    """Write one `{"id", "label", "probs"}` line per input line, in input order; return the count.

    A document longer than `max_length` tokens is scored as overlapping chunks combined by token count,
    as the worker does, so offline and streaming scores of the same text agree.
    """
    from tqdm.auto import tqdm

    rows = read_inputs(input_path)
    if not rows:
        raise InputError(f"{input_path}: no documents to score (the file is empty); expected JSONL lines "
                         '{"id", "text"}')
    model = SentimentModel.load(model_dir, max_length=max_length)
    chunked = model.encode_chunks([text for _, text in rows], chunk_overlap)
    pieces = [(doc, ids) for doc, chunks in enumerate(chunked) for ids in chunks]
    order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][1]))  # similar lengths pad least
    piece_probs = np.zeros((len(pieces), len(LABELS)), dtype=np.float32)
    for start in tqdm(range(0, len(order), batch_size), desc="score", unit="batch", disable=not progress):
        batch = order[start : start + batch_size]
        piece_probs[batch] = model.score_ids([pieces[i][1] for i in batch])
    results: list[dict] = []
    first = 0
    for (doc_id, _), chunks in zip(rows, chunked):
        span = range(first, first + len(chunks))
        first += len(chunks)
        probs = to_class_probs(combine_chunks(piece_probs[list(span)], [len(pieces[i][1]) for i in span]))
        results.append({"id": doc_id, "label": probs.label,
                        "probs": {label: round(getattr(probs, label), 6) for label in LABELS}})
    output_path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target, then renamed over it: a failure never leaves a half-written output.
    partial = output_path.with_name(f".{output_path.name}.partial")
    with partial.open("w", encoding="utf-8") as out:
        for item in results:
            out.write(json.dumps(item) + "\n")
    partial.replace(output_path)
    return len(results)
