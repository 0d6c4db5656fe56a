"""Labeled JSONL corpora: `{"text": ..., "label": "bearish" | "neutral" | "bullish"}` per line."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

LABELS: tuple[str, str, str] = ("bearish", "neutral", "bullish")
LABEL_TO_ID = {label: i for i, label in enumerate(LABELS)}


class DataError(ValueError):
    """A corpus that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labeled text."""

    text: str
    label: int


@dataclass(frozen=True, slots=True)
class Corpus:
    """Examples read from one file, with the file's hash for lineage."""

    path: Path
    examples: tuple[Example, ...]
    sha256: str

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.examples]

    def class_counts(self) -> dict[str, int]:
        counts = {label: 0 for label in LABELS}
        for e in self.examples:
            counts[LABELS[e.label]] += 1
        return counts


def load_corpus(path: str | Path, *, min_examples: int = 1) -> Corpus:
    """Read and validate a labeled JSONL file; raise `DataError` on the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    examples = []
    for lineno, line in enumerate(raw.decode("utf-8", errors="strict").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise DataError(f"{path}:{lineno}: needs a non-empty string field 'text'")
        label = row.get("label")
        if label not in LABEL_TO_ID:
            raise DataError(f"{path}:{lineno}: unknown label {label!r}; expected one of {', '.join(LABELS)}")
        examples.append(Example(row["text"], LABEL_TO_ID[label]))
    if len(examples) < min_examples:
        raise DataError(f"{path}: {len(examples)} labeled examples, need at least {min_examples}")
    return Corpus(path=path, examples=tuple(examples), sha256=hashlib.sha256(raw).hexdigest())
