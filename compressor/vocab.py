"""Trim a BPE vocabulary to the tokens a domain corpus uses, and the embedding table with it.

A pretrained LLaMA's token embeddings are a large share of a small model's weights (49k x 576 in
SmolLM2-135M, a fifth of it), yet a financial-news corpus uses a few thousand of those rows. Trimming keeps:

- every token the corpus tokenizes to, and every token a merge builds them from (closure), so each corpus
  text tokenizes to exactly the same tokens as before (BPE applies only merges whose results are kept);
- the base alphabet (tokens no merge produces: the 256 byte symbols of a byte-level BPE, or byte-fallback
  tokens) and every special/added token, so any text still tokenizes: a word outside the kept set falls
  apart into smaller kept pieces instead of becoming unknown.

Ids are renumbered in their old order (special tokens keep low ids). The result is a plain tokenizer.json
and a plain LlamaConfig with a smaller `vocab_size`: every loader reads it unchanged.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from compressor.errors import ModelError


@dataclass(frozen=True)
class TrimResult:
    """What trimming kept; `old_ids[new_id]` is the token's id in the original vocabulary."""

    old_ids: list[int]
    original_size: int
    corpus_tokens: int

    @property
    def size(self) -> int:
        return len(self.old_ids)

    def as_dict(self) -> dict[str, Any]:
        return {"original_vocab": self.original_size, "kept_vocab": self.size,
                "corpus_distinct_tokens": self.corpus_tokens}


def _merge_pairs(merges: list[Any]) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]  # type: ignore[misc]


def kept_token_ids(tokenizer_json: dict[str, Any], corpus_ids: Iterable[int], min_count: int = 1) -> list[int]:
    """Old ids to keep (sorted): corpus tokens seen `min_count` times, their merge ancestors, alphabet, specials."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        raise ModelError(f"vocabulary trimming supports BPE tokenizers, not {model.get('type')!r}")
    vocab: dict[str, int] = model["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    parents: dict[str, tuple[str, str]] = {}
    for a, b in _merge_pairs(model.get("merges") or []):
        parents.setdefault(a + b, (a, b))
    counts = Counter(corpus_ids)
    keep: set[str] = {t for t in vocab if t not in parents}  # the base alphabet
    keep |= {a["content"] for a in tokenizer_json.get("added_tokens") or [] if a["content"] in vocab}
    stack = [by_id[i] for i, n in counts.items() if n >= min_count and i in by_id]
    while stack:
        token = stack.pop()
        if token in keep:
            continue
        keep.add(token)
        stack.extend(parents.get(token, ()))
    kept = sorted(vocab[t] for t in keep)
    added = {a["id"] for a in tokenizer_json.get("added_tokens") or []}
    return sorted(set(kept) | added)


def trimmed_tokenizer_json(tokenizer_json: dict[str, Any], old_ids: list[int]) -> dict[str, Any]:
    """A copy of `tokenizer_json` holding only `old_ids`, renumbered 0..n-1 in the same order."""
    new_id = {old: new for new, old in enumerate(old_ids)}
    out = json.loads(json.dumps(tokenizer_json))
    model = out["model"]
    vocab = {t: new_id[i] for t, i in model["vocab"].items() if i in new_id}
    model["vocab"] = vocab
    merges = model.get("merges") or []
    model["merges"] = [m for m, (a, b) in zip(merges, _merge_pairs(merges)) if a + b in vocab and a in vocab
                       and b in vocab]
    for added in out.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]
    post = out.get("post_processor")
    for processor in ([post] + list(post.get("processors", []))) if post else []:
        for special in (processor.get("special_tokens") or {}).values():
            special["ids"] = [new_id[i] for i in special.get("ids", [])]
    return out


def trim_vocabulary(model: Any, tokenizer: Any, texts: list[str], min_count: int = 1) -> tuple[Any, TrimResult]:
    """Shrink `model`'s embeddings (in place) and return a matching new tokenizer and what was kept."""
    import torch
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if getattr(model.config, "tie_word_embeddings", False) and model.get_output_embeddings() is not None:
        raise ModelError("trim the vocabulary of a classifier, not of a causal LM with a tied output head")
    source = json.loads(tokenizer.backend_tokenizer.to_str())
    corpus = [i for ids in tokenizer(texts, add_special_tokens=True)["input_ids"] for i in ids]
    old_ids = kept_token_ids(source, corpus, min_count)
    new_json = trimmed_tokenizer_json(source, old_ids)
    backend = Tokenizer.from_str(json.dumps(new_json))
    specials = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
                if getattr(tokenizer, k, None) is not None}
    new_tok = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=tokenizer.model_max_length,
                                      padding_side=tokenizer.padding_side,
                                      truncation_side=tokenizer.truncation_side, **specials)
    if getattr(tokenizer, "chat_template", None):
        new_tok.chat_template = tokenizer.chat_template
    index = torch.tensor(old_ids, dtype=torch.long)
    old = model.get_input_embeddings()
    table = torch.nn.Embedding(len(old_ids), old.weight.shape[1], padding_idx=None)
    table.weight.data.copy_(old.weight.data[index])
    table.weight.requires_grad_(old.weight.requires_grad)
    model.set_input_embeddings(table)
    model.config.vocab_size = len(old_ids)
    for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
        token = getattr(new_tok, attr.replace("_id", ""), None)
        if token is not None:
            setattr(model.config, attr, new_tok.convert_tokens_to_ids(token))
    return new_tok, TrimResult(old_ids=old_ids, original_size=len(source["model"]["vocab"]),
                               corpus_tokens=len(set(corpus)))
