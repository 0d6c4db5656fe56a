"""Tiny random LLaMA models that carry SmolLM2's real tokenizer (49k vocabulary, its special tokens, 8192 context).

They stand in for a classifier fine-tuned from an imported pretrained base, for serving tests that must not
depend on the 135M-parameter weights.
"""

from __future__ import annotations

import lzma
import shutil
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent / "fixtures" / "smollm2_tokenizer"
LABELS = ("bearish", "neutral", "bullish")


def write_smollm2_tokenizer(out: Path) -> Path:
    """The fixture tokenizer unpacked into `out` (tokenizer.json, tokenizer_config.json, chat template)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_bytes(lzma.decompress((FIXTURE / "tokenizer.json.xz").read_bytes()))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(FIXTURE / name, out / name)
    return out


def smollm2_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(write_smollm2_tokenizer(directory), local_files_only=True)


def pretrained_shaped_config(**overrides: Any) -> Any:
    """SmolLM2's vocabulary, special-token ids, GQA and context, at 2 layers of width 64."""
    from transformers import LlamaConfig

    values = dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                  bos_token_id=1, eos_token_id=2, pad_token_id=2, rms_norm_eps=1e-5, use_cache=False,
                  rope_parameters={"rope_type": "default", "rope_theta": 100000.0})
    return LlamaConfig(**(values | overrides))


def write_pretrained_classifier(out: Path, seed: int = 0) -> Path:
    """A random `LlamaForSequenceClassification` with the SmolLM2 tokenizer, saved as a checkpoint directory."""
    import torch
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = pretrained_shaped_config(num_labels=3, id2label=dict(enumerate(LABELS)),
                                      label2id={label: i for i, label in enumerate(LABELS)})
    model = LlamaForSequenceClassification(config).eval()
    with torch.no_grad():  # larger than the default init, so texts and positions visibly change the output
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    model.save_pretrained(out, safe_serialization=True)
    smollm2_tokenizer(out)
    return out


def write_pretrained_causal_lm(out: Path, seed: int = 0) -> Path:
    """A random `LlamaForCausalLM` (tied embeddings, as SmolLM2) with the SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(pretrained_shaped_config(tie_word_embeddings=True)).eval()
    model.save_pretrained(out, safe_serialization=True)
    smollm2_tokenizer(out)
    return out
