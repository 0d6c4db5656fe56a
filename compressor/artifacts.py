"""Write every artifact `compress run` produces; `compressor.runtime.loader` reads each one back.

Every artifact directory carries `config.json` (a standard `LlamaConfig`), the tokenizer, and
`finsignal.json` (name, version, content hash, labels, max_length, lineage, and `runtime.kind`).
Weights are safetensors only. See `compressor.runtime.loader` for the kinds.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
import torch
from torch import nn

from compressor.data import LABELS
from compressor.runtime.int8 import Int8Embedding, Int8Linear
from compressor.runtime.loader import WEIGHT_FILES
from compressor.runtime.lowrank import LowRankLinear
from compressor.train import weights_hash

log = structlog.get_logger(__name__)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow progress bars third-party code writes to stderr (errors still raise)."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def weight_bytes(directory: str | Path) -> int:
    """Bytes of the weight files (`*.safetensors`) in `directory`: the 'size on disk' of the report."""
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors"))


def tensor_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers, each storage counted once, plus int8 kernels' packed
    weights (FBGEMM's copy is no tensor)."""
    seen: set[int] = set()
    total = sum(getattr(m, "packed_bytes", 0) for m in module.modules())
    for t in [*module.parameters(), *module.buffers()]:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def plain_copy(model: Any) -> Any:
    """A deep copy with only standard transformers modules: int8 and fake-quant layers become float32."""
    from compressor.stages.quantization.qat import QATEmbedding, QATLinear

    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if name else None
        if isinstance(module, (Int8Linear, QATLinear)):
            weight = module.dequantized_weight() if isinstance(module, Int8Linear) else module.weight.detach()
            plain = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
            with torch.no_grad():
                plain.weight.copy_(weight)
                if module.bias is not None:
                    plain.bias.copy_(module.bias)
            setattr(parent, child, plain)
        elif isinstance(module, (Int8Embedding, QATEmbedding)):
            weight = module.weight.detach()
            setattr(parent, child, nn.Embedding.from_pretrained(weight.clone(), freeze=False,
                                                                padding_idx=module.padding_idx))
        elif isinstance(module, LowRankLinear):
            raise TypeError(f"{name}: a low-rank layer has no standard form; save it with save_lowrank")
    return out.eval()


def write_meta(
    out: Path, *, name: str, lineage: dict[str, Any], runtime: dict[str, Any], max_length: int
) -> dict[str, Any]:
    """finsignal.json for an artifact whose weights are already written."""
    content_hash = weights_hash(out)
    meta = {
        "format": 1,
        "name": name,
        "version": content_hash[:12],
        "content_hash": content_hash,
        "labels": list(LABELS),
        "max_length": int(max_length),
        "created_unix": int(time.time()),
        "runtime": runtime,
        "lineage": lineage,
    }
    (out / "finsignal.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _prepare(out: Path, model: Any, tokenizer: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.safetensors"):
        old.unlink()
    config = copy.deepcopy(model.config)
    config.architectures = ["LlamaForSequenceClassification"]
    config.use_cache = False
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _rest(model: Any, skip: set[str]) -> dict[str, torch.Tensor]:
    """State-dict entries of every module not in `skip` (qualified module names)."""
    return {k: v for k, v in model.state_dict().items() if k.rpartition(".")[0] not in skip}


def save_hf(model: Any, tokenizer: Any, out: Path, *, name: str, lineage: dict[str, Any], max_length: int,
            dtype: str = "float32") -> dict[str, Any]:
    """A plain transformers checkpoint (int8 layers dequantized) that any LLaMA loader reads."""
    plain = plain_copy(model)
    if dtype == "bfloat16":
        plain = plain.to(torch.bfloat16)
    _prepare(out, plain, tokenizer)
    plain.config.use_cache = False
    plain.save_pretrained(out, safe_serialization=True)
    return write_meta(out, name=name, lineage=lineage, runtime={"kind": "hf", "dtype": dtype}, max_length=max_length)


def _int8_linears(model: Any) -> dict[str, Int8Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, Int8Linear)}


def save_w8a8(model: Any, tokenizer: Any, out: Path, *, name: str, lineage: dict[str, Any], max_length: int,
              int8_embeddings: bool) -> dict[str, Any]:
    """The compressed-tensors W8A8 (`int-quantized`) checkpoint vLLM serves, from a model of `Int8Linear`s."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, apply_quantization_config
    from compressed_tensors.quantization.quant_scheme import INT8_W8A8

    int8 = _int8_linears(model)
    if not int8:
        raise ValueError("save_w8a8 needs a quantized model (Int8Linear layers)")
    plain = plain_copy(model)
    targets = sorted({n.rpartition(".")[2] for n in int8})
    scheme = QuantizationScheme(targets=[f"re:.*\\.{t}$" for t in targets], **INT8_W8A8)
    qconfig = QuantizationConfig(config_groups={"group_0": scheme}, ignore=["score"])
    with _quiet():  # compressed-tensors draws progress bars for every call
        apply_quantization_config(plain, qconfig)
        with torch.no_grad():
            for qname, layer in int8.items():
                target = plain.get_submodule(qname)
                target.weight_scale.copy_(layer.scale.reshape(-1, 1).to(target.weight_scale.dtype))
                if hasattr(target, "weight_zero_point"):
                    target.weight_zero_point.zero_()
        compressor = ModelCompressor.from_pretrained_model(plain, quantization_format="int-quantized")
        compressor.compress_model(plain)
        plain.model.embed_tokens.to(torch.bfloat16)  # vLLM serves bf16 activations; halves the biggest table
        _prepare(out, plain, tokenizer)
        plain.save_pretrained(out, safe_serialization=True)
        compressor.update_config(str(out))
    if int8_embeddings:
        _split_int8_embeddings(model, out)
    runtime = {"kind": "w8a8", "int8_embeddings": int8_embeddings,
               "scheme": "int8 weights per-channel symmetric, int8 activations dynamic per-token symmetric"}
    return write_meta(out, name=name, lineage=lineage, runtime=runtime, max_length=max_length)


def _split_int8_embeddings(model: Any, out: Path) -> None:
    """Move the token embedding out of model.safetensors into int8 rows + per-row scales (EMBEDDING_FILE)."""
    from safetensors.torch import load_file

    from compressor.runtime.int8 import quantize_per_channel
    from compressor.runtime.loader import EMBEDDING_FILE, EMBEDDING_QWEIGHT, EMBEDDING_SCALE

    emb = model.model.embed_tokens
    q, scale = (emb.qweight, emb.scale) if isinstance(emb, Int8Embedding) else quantize_per_channel(emb.weight)
    tensors = load_file(out / "model.safetensors")
    del tensors["model.embed_tokens.weight"]
    _save_tensors(tensors, out / "model.safetensors")
    _save_tensors({EMBEDDING_QWEIGHT: q, EMBEDDING_SCALE: scale.reshape(-1).float()}, out / EMBEDDING_FILE)


def verify_w8a8(out: Path, model: Any) -> dict[str, Any]:
    """Load `out` with the compressed-tensors library and check it holds exactly our int8 weights and scales."""
    from compressed_tensors.quantization import QuantizationConfig
    from safetensors import safe_open

    config = json.loads((out / "config.json").read_text())
    qconfig = QuantizationConfig.model_validate(config["quantization_config"])  # schema check by the library
    group = next(iter(qconfig.config_groups.values()))
    checks = {
        "format": qconfig.format,
        "weights": f"int{group.weights.num_bits} {group.weights.strategy} symmetric={group.weights.symmetric}",
        "activations": f"int{group.input_activations.num_bits} {group.input_activations.strategy} "
                       f"dynamic={group.input_activations.dynamic}",
    }
    mismatched = []
    int8 = _int8_linears(model)
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        for qname, layer in int8.items():
            if not torch.equal(fh.get_tensor(f"{qname}.weight"), layer.qweight) or not torch.allclose(
                fh.get_tensor(f"{qname}.weight_scale").reshape(-1).float(), layer.scale.reshape(-1)
            ):
                mismatched.append(qname)
    decompressed = _decompress_max_error(out, int8)
    checks.update(layers=len(int8), mismatched=mismatched, decompressed_max_abs_error=decompressed)
    if mismatched:
        raise RuntimeError(f"{out}: compressed-tensors export differs from the model in {mismatched[:4]}")
    return checks


def _decompress_max_error(out: Path, int8: dict[str, Int8Linear]) -> float:
    """Load through transformers' compressed-tensors integration, decompress, compare with our weights."""
    from transformers import LlamaForSequenceClassification
    from transformers.utils import logging as hf_logging

    from compressed_tensors.compressors import ModelCompressor

    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # int8 embedding rows live beside this file: transformers reports them missing
    try:
        with _quiet():
            loaded = LlamaForSequenceClassification.from_pretrained(out, dtype=torch.float32, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    with _quiet():
        if getattr(loaded, "hf_quantizer", None) is not None:
            ModelCompressor.from_compression_config(loaded.hf_quantizer.quantization_config).decompress_model(loaded)
    worst = 0.0
    for qname, layer in int8.items():
        weight = loaded.get_submodule(qname).weight.detach().float()
        worst = max(worst, float((weight - layer.dequantized_weight()).abs().max()))
    return worst


def save_sparse24(model: Any, masks: dict[str, torch.Tensor], tokenizer: Any, out: Path, *, name: str,
                  lineage: dict[str, Any], max_length: int, int8_embeddings: bool = False) -> dict[str, Any]:
    """2:4 compact storage: values + 2-bit positions per sparse layer (int8 values when quantized)."""
    from compressor.runtime.sparse24 import pack_24

    tensors: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for lname, mask in masks.items():
        module = modules[lname]
        if isinstance(module, Int8Linear):
            values, meta = pack_24(module.qweight, mask)
            tensors[f"{lname}.scale"] = module.scale.reshape(-1)
        else:
            values, meta = pack_24(module.weight.detach(), mask)
        tensors[f"{lname}.values"], tensors[f"{lname}.meta"] = values, meta
        if module.bias is not None:
            tensors[f"{lname}.bias"] = module.bias.detach()
    plain = plain_copy(model)
    tensors.update(_rest(plain, set(masks)))
    quantized = any(isinstance(modules[n], Int8Linear) for n in masks)
    if quantized:  # as in the W8A8 export: the quantize stage already rounded the embedding to bf16
        key = "model.embed_tokens.weight"
        tensors[key] = tensors[key].to(torch.bfloat16)
    _prepare(out, plain, tokenizer)
    _save_tensors(tensors, out / WEIGHT_FILES["sparse24"])
    runtime = {"kind": "sparse24", "values": "int8" if quantized else "float32", "int8_embeddings": int8_embeddings,
               "note": "2:4 storage only on CPU: expanded to dense on load"}
    return write_meta(out, name=name, lineage=lineage, runtime=runtime, max_length=max_length)


def save_lowrank(model: Any, tokenizer: Any, out: Path, *, name: str, lineage: dict[str, Any],
                 max_length: int) -> dict[str, Any]:
    """Truncated-SVD factors per layer plus the dense rest."""
    tensors: dict[str, torch.Tensor] = {}
    factored = {n: m for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
    for lname, module in factored.items():
        tensors[f"{lname}.down"] = module.down.weight.detach()
        tensors[f"{lname}.up"] = module.up.weight.detach()
        if module.up.bias is not None:
            tensors[f"{lname}.bias"] = module.up.bias.detach()
    skip = set(factored) | {f"{n}.down" for n in factored} | {f"{n}.up" for n in factored}
    tensors.update(_rest(model, skip))
    _prepare(out, model, tokenizer)
    _save_tensors(tensors, out / WEIGHT_FILES["lowrank"])
    runtime = {"kind": "lowrank", "ranks": {n: m.rank for n, m in factored.items()}}
    return write_meta(out, name=name, lineage=lineage, runtime=runtime, max_length=max_length)


def save_kmeans(model: Any, tables: dict[str, tuple[torch.Tensor, torch.Tensor]], tokenizer: Any, out: Path, *,
                name: str, lineage: dict[str, Any], max_length: int) -> dict[str, Any]:
    """Codebook + packed indices per layer plus the dense rest."""
    from compressor.runtime.codebook import pack_indices

    tensors: dict[str, torch.Tensor] = {}
    for lname, (codebook, idx) in tables.items():
        tensors[f"{lname}.codebook"] = codebook.float()
        tensors[f"{lname}.indices"] = pack_indices(idx, codebook.numel())
        tensors[f"{lname}.shape"] = torch.tensor(list(idx.shape), dtype=torch.int64)
    tensors.update(_rest(model, set(tables)))
    _prepare(out, model, tokenizer)
    _save_tensors(tensors, out / WEIGHT_FILES["kmeans"])
    runtime = {"kind": "kmeans", "clusters": max(c.numel() for c, _ in tables.values()),
               "note": "codebook storage only on CPU: expanded to dense float32 on load"}
    return write_meta(out, name=name, lineage=lineage, runtime=runtime, max_length=max_length)
