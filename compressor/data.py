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
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 (byte {exc.start})") from exc
    examples = []
    # split on "\n" only: str.splitlines() also breaks on U+0085 and U+2028, which are legal inside JSON strings
    for lineno, line in enumerate(text.split("\n"), start=1):
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


def split_validation(corpus: Corpus, fraction: float, seed: int = 0) -> tuple[Corpus, Corpus]:
    """Stratified split of `corpus` into (train, validation); the validation share is per class."""
    import random

    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = random.Random(seed)
    keep: list[Example] = []
    held: list[Example] = []
    for label in range(len(LABELS)):
        members = [e for e in corpus.examples if e.label == label]
        rng.shuffle(members)
        n_held = round(len(members) * fraction)
        if members and n_held == len(members):
            n_held -= 1  # every class keeps at least one training example
        held.extend(members[:n_held])
        keep.extend(members[n_held:])
    rng.shuffle(keep)
    rng.shuffle(held)
    if not held:
        raise DataError(f"{corpus.path}: {len(corpus.examples)} examples are too few to hold out {fraction:.0%}")
    tag = f"{corpus.sha256}:{fraction}:{seed}"
    return (
        Corpus(path=corpus.path, examples=tuple(keep), sha256=corpus.sha256),
        Corpus(path=corpus.path, examples=tuple(held), sha256=hashlib.sha256(tag.encode()).hexdigest()),
    )
