"""Tiny LLaMA GGUF files written the way llama.cpp's converter writes them, for import tests.

The tokenizer is a byte-level BPE ("gpt2" in GGUF terms, as SmolLM2 and Llama 3 ship) with SmolLM2's special
tokens: `<|endoftext|>` (unk), `<|im_start|>` (bos), `<|im_end|>` (eos and pad), no BOS added, a chat template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "a r", "i n", "Ġ b", "e a", "Ġb ea", "Ġbea r", "i s", "Ġ s"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_level_vocab() -> list[str]:
    """Special tokens, the 256 byte symbols, then one token per merge."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = sorted(bytes_to_unicode().values())
    return SPECIALS + alphabet + [m.replace(" ", "") for m in MERGES]


def tiny_llama(vocab: int, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
               ffn: int = 128, tied: bool = True, seed: int = 0) -> Any:
    """A random `LlamaForCausalLM` with weights large enough that every layer changes the output."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                         tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                         rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.1)
            else:
                p.uniform_(0.8, 1.2)
    return model


def _permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp's q/k row order for its rope (convert_hf_to_gguf.py `LlamaModel.permute`)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model: Any) -> dict[str, np.ndarray]:
    """The model's weights under GGUF names, q/k permuted as llama.cpp does."""
    cfg = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    out = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"]}
    if not cfg.tie_word_embeddings:
        out["output.weight"] = sd["lm_head.weight"]
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            w = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                w = _permute(w, cfg.num_attention_heads, cfg.num_attention_heads)
            elif gg == "attn_k":
                w = _permute(w, cfg.num_attention_heads, cfg.num_key_value_heads)
            out[f"blk.{i}.{gg}.weight"] = w
    return out


def write_gguf(path: Path, model: Any, *, qtype: str = "F32", arch: str = "llama", tokenizer: bool = True,
               pad_token: bool = True, raw_override: dict[str, tuple[np.ndarray, str]] | None = None,
               extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write `model` as a GGUF file; 2-D weights stored as `qtype` (norms stay F32, as llama.cpp keeps them)."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny-llama-test")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)
    if tokenizer:
        tokens = byte_level_vocab()
        assert len(tokens) == cfg.vocab_size, (len(tokens), cfg.vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("smollm")
        writer.add_token_list(tokens)
        writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
        writer.add_token_merges(MERGES)
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        if pad_token:
            writer.add_pad_token_id(2)
        writer.add_add_bos_token(False)
        writer.add_chat_template(CHAT_TEMPLATE)
    quant = gguf.GGMLQuantizationType[qtype]
    for name, w in gguf_tensors(model).items():
        if raw_override and name in raw_override:
            data, raw_type = raw_override[name]
            writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[raw_type])
        elif w.ndim == 1 or quant == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, w.astype(np.float32))
        elif quant == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, w.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(w.astype(np.float32), quant), raw_dtype=quant)
    for name, w in (extra or {}).items():
        writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
