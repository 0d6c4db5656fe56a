"""Vocabulary trimming: corpus texts tokenize exactly as before; anything else still tokenizes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compressor.errors import ModelError
from compressor.vocab import kept_token_ids, trim_vocabulary

CORPUS = [
    "$AAPL beats estimates as iPhone sales surge",
    "Tesla shares slump after recall of 2 million vehicles",
    "Fed holds rates steady; markets rally into the close",
    "Bitcoin tumbles 8% as ETF outflows mount",
    "Carnival cut at Credit Suisse on weak bookings outlook",
] * 4
OTHER = ["Nvidia raises guidance on data-center demand", "ZZXQY Corp files for Chapter 11 protection 日本 🚀"]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=1, special_tokens=["<|endoftext|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS + OTHER * 3, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   unk_token="<|endoftext|>")


def _classifier(vocab: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    return LlamaForSequenceClassification(LlamaConfig(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, num_labels=3, pad_token_id=1))


def test_corpus_tokenizes_identically_and_rows_follow(tokenizer: Any) -> None:
    import torch

    model = _classifier(len(tokenizer))
    old_table = model.model.embed_tokens.weight.detach().clone()
    new_tok, result = trim_vocabulary(model, tokenizer, CORPUS)
    assert result.size < result.original_size
    for text in CORPUS:
        assert [result.old_ids[i] for i in new_tok(text)["input_ids"]] == tokenizer(text)["input_ids"]
    assert torch.equal(model.model.embed_tokens.weight, old_table[torch.tensor(result.old_ids)])
    assert model.config.vocab_size == result.size
    assert new_tok.pad_token_id == model.config.pad_token_id == result.old_ids.index(tokenizer.pad_token_id)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=80))
def test_any_text_still_tokenizes_and_round_trips(tokenizer: Any, text: str) -> None:
    source = json.loads(tokenizer.backend_tokenizer.to_str())
    corpus_ids = [i for ids in tokenizer(CORPUS)["input_ids"] for i in ids]
    kept = kept_token_ids(source, corpus_ids)
    model = _classifier(len(tokenizer))
    new_tok, result = trim_vocabulary(model, tokenizer, CORPUS)
    assert result.old_ids == kept
    ids = new_tok(text)["input_ids"]
    assert all(0 <= i < result.size for i in ids)
    assert new_tok.decode(ids) == tokenizer.decode(tokenizer(text)["input_ids"])  # byte-level: nothing lost


def test_saved_tokenizer_loads_back(tokenizer: Any, tmp_path: Any) -> None:
    from transformers import AutoTokenizer

    new_tok, _ = trim_vocabulary(_classifier(len(tokenizer)), tokenizer, CORPUS)
    new_tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in CORPUS + OTHER:
        assert loaded(text)["input_ids"] == new_tok(text)["input_ids"]


def test_refuses_non_bpe_and_tied_lm() -> None:
    with pytest.raises(ModelError, match="BPE"):
        kept_token_ids({"model": {"type": "Unigram", "vocab": []}}, [])
