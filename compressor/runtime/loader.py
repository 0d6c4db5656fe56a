"""Load any artifact the compressor writes as a `LlamaForSequenceClassification` ready for CPU scoring.

The kind is read from the directory, never guessed from weights:

- `hf`: a plain transformers checkpoint (float32 or bfloat16), loaded with `from_pretrained`.
- `w8a8`: a compressed-tensors `int-quantized` checkpoint (`quantization_config` in config.json): every
  quantized linear layer becomes an `Int8Linear` on int8 kernels, optionally with int8 embedding rows.
- `sparse24`: 2:4 values + metadata (`model.sparse24.safetensors`), expanded to dense on load.
- `lowrank`: truncated-SVD factors (`model.lowrank.safetensors`), run as two matmuls per layer.
- `kmeans`: codebook + indices (`model.kmeans.safetensors`), expanded to dense float32 on load.

Only safetensors are read and no checkpoint code runs. This module is what the worker's loader calls for
kinds other than `hf`, so it depends on torch, transformers and safetensors only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KINDS = ("hf", "w8a8", "sparse24", "lowrank", "kmeans")
WEIGHT_FILES = {"sparse24": "model.sparse24.safetensors", "lowrank": "model.lowrank.safetensors",
                "kmeans": "model.kmeans.safetensors", "w8a8": "model.safetensors", "hf": "model.safetensors"}


# The W8A8 export keeps the token embedding's int8 rows beside the compressed-tensors file, so that file
# stays what vLLM and transformers read; `vllm_directory` gives vLLM a view with the rows in bf16.
EMBEDDING_FILE = "embed_tokens.int8.safetensors"
EMBEDDING_QWEIGHT, EMBEDDING_SCALE = "model.embed_tokens.qweight", "model.embed_tokens.scale"


class ArtifactError(RuntimeError):
    """A directory whose declared kind and files do not match."""


def runtime_info(directory: str | Path) -> dict[str, Any]:
    """The `runtime` section of finsignal.json (`{"kind": "hf"}` when absent)."""
    directory = Path(directory)
    meta_path = directory / "finsignal.json"
    info = dict(json.loads(meta_path.read_text()).get("runtime") or {}) if meta_path.is_file() else {}
    config_path = directory / "config.json"
    if "kind" not in info and config_path.is_file():
        qc = json.loads(config_path.read_text()).get("quantization_config") or {}
        if qc.get("quant_method") == "compressed-tensors":
            info["kind"] = "w8a8"
    info.setdefault("kind", "hf")
    if info["kind"] not in KINDS:
        raise ArtifactError(f"{directory}: unknown runtime kind {info['kind']!r}; expected one of {', '.join(KINDS)}")
    return info


def artifact_kind(directory: str | Path) -> str:
    return str(runtime_info(directory)["kind"])


def _skeleton(directory: Path) -> Any:
    """The model's modules on the meta device, from config.json minus any quantization_config."""
    import torch
    from transformers import LlamaConfig

    from compressor.runtime.forward import LeanLlamaForSequenceClassification

    raw = json.loads((directory / "config.json").read_text())
    raw.pop("quantization_config", None)
    config = LlamaConfig.from_dict(raw)
    with torch.device("meta"):
        model = LeanLlamaForSequenceClassification(config)
    return model


def _finish(model: Any, tensors: dict[str, Any], directory: Path) -> Any:
    """Assign the remaining dense tensors, rebuild rotary tables, and refuse any weight left unset."""
    import torch
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from compressor.runtime.int8 import Int8Embedding

    if EMBEDDING_QWEIGHT in tensors:  # int8 rows as stored: no float table is ever built
        model.model.embed_tokens = Int8Embedding.from_quantized(
            tensors.pop(EMBEDDING_QWEIGHT), tensors.pop(EMBEDDING_SCALE), model.config.pad_token_id)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    model.load_state_dict(tensors, strict=False, assign=True)
    model.model.rotary_emb = LlamaRotaryEmbedding(config=model.config)
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if missing:
        raise ArtifactError(f"{directory}: weights missing from the checkpoint: {', '.join(missing[:8])}")
    model.config.use_cache = False
    return model.eval().to(torch.float32)


def _set(model: Any, name: str, module: Any) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def _int8_embeddings(model: Any) -> None:
    from compressor.runtime.int8 import Int8Embedding

    emb = model.model.embed_tokens
    if not isinstance(emb, Int8Embedding):
        model.model.embed_tokens = Int8Embedding(emb.weight.detach(), emb.padding_idx)


def _load_w8a8(directory: Path, info: dict[str, Any]) -> Any:
    from safetensors.torch import load_file

    from compressor.runtime.int8 import Int8Linear, fuse_projections

    tensors = load_file(directory / "model.safetensors")
    if (directory / EMBEDDING_FILE).is_file():
        tensors.update(load_file(directory / EMBEDDING_FILE))
    model = _skeleton(directory)
    for key in [k for k in tensors if k.endswith(".weight_scale")]:
        name = key[: -len(".weight_scale")]
        scale = tensors.pop(key)
        tensors.pop(f"{name}.weight_zero_point", None)
        bias = tensors.pop(f"{name}.bias", None)
        _set(model, name, Int8Linear(tensors.pop(f"{name}.weight"), scale.reshape(-1), bias))
    model = _finish(model, tensors, directory)
    if info.get("int8_embeddings", True):
        _int8_embeddings(model)
    fuse_projections(model)
    return model


def _load_sparse24(directory: Path, info: dict[str, Any]) -> Any:
    from safetensors.torch import load_file
    from torch import nn

    from compressor.runtime.int8 import Int8Linear, fuse_projections
    from compressor.runtime.sparse24 import unpack_24

    tensors = load_file(directory / WEIGHT_FILES["sparse24"])
    model = _skeleton(directory)
    for key in [k for k in tensors if k.endswith(".values")]:
        name = key[: -len(".values")]
        dense = unpack_24(tensors.pop(key), tensors.pop(f"{name}.meta"))
        bias = tensors.pop(f"{name}.bias", None)
        if f"{name}.scale" in tensors:
            _set(model, name, Int8Linear(dense, tensors.pop(f"{name}.scale"), bias))
        else:
            linear = nn.Linear(dense.shape[1], dense.shape[0], bias=bias is not None, device="meta")
            linear.weight = nn.Parameter(dense.float(), requires_grad=False)
            if bias is not None:
                linear.bias = nn.Parameter(bias.float(), requires_grad=False)
            _set(model, name, linear)
    model = _finish(model, tensors, directory)
    if info.get("int8_embeddings"):
        _int8_embeddings(model)
    fuse_projections(model)
    return model


def _load_lowrank(directory: Path, info: dict[str, Any]) -> Any:
    from safetensors.torch import load_file

    from compressor.runtime.lowrank import LowRankLinear

    tensors = load_file(directory / WEIGHT_FILES["lowrank"])
    model = _skeleton(directory)
    for key in [k for k in tensors if k.endswith(".down")]:
        name = key[: -len(".down")]
        _set(model, name, LowRankLinear(tensors.pop(key), tensors.pop(f"{name}.up"), tensors.pop(f"{name}.bias", None)))
    return _finish(model, tensors, directory)


def _load_kmeans(directory: Path, info: dict[str, Any]) -> Any:
    from safetensors.torch import load_file

    from compressor.runtime.codebook import unpack_indices

    tensors = load_file(directory / WEIGHT_FILES["kmeans"])
    for key in [k for k in tensors if k.endswith(".codebook")]:
        name = key[: -len(".codebook")]
        codebook = tensors.pop(key)
        shape = tuple(int(x) for x in tensors.pop(f"{name}.shape"))
        idx = unpack_indices(tensors.pop(f"{name}.indices"), shape, codebook.numel())
        tensors[f"{name}.weight"] = codebook[idx.long()]
    return _finish(_skeleton(directory), tensors, directory)


def load_classifier(directory: str | Path, dtype: str = "float32") -> Any:
    """The artifact in `directory` as an eval-mode classifier; `dtype` applies to `hf` artifacts only."""
    import torch

    from compressor.runtime.forward import LeanLlamaForSequenceClassification

    directory = Path(directory)
    info = runtime_info(directory)
    kind = info["kind"]
    weights = directory / WEIGHT_FILES[kind]
    if not weights.is_file():
        raise ArtifactError(f"{directory}: a {kind} artifact needs {weights.name}")
    if kind == "hf":
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        model = LeanLlamaForSequenceClassification.from_pretrained(
            directory, dtype=torch_dtype, use_safetensors=True, trust_remote_code=False, local_files_only=True
        )
        model.config.use_cache = False
        return model.eval()
    loaders = {"w8a8": _load_w8a8, "sparse24": _load_sparse24, "lowrank": _load_lowrank, "kmeans": _load_kmeans}
    with torch.inference_mode(False):
        return loaders[kind](directory, info)


def native_bf16() -> bool:
    """Whether this machine multiplies bf16 natively: a CUDA device, or a CPU with AMX or AVX512-BF16."""
    import torch

    return torch.cuda.is_available() or cpu_has_bf16()


def cpu_has_bf16() -> bool:
    """Whether the CPU has AMX or AVX512-BF16 (Linux /proc/cpuinfo; False elsewhere)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def vllm_directory(directory: str | Path, cache: str | Path) -> Path:
    """`directory` as vLLM can load it: itself, or (int8 embedding rows on disk) a view under `cache`.

    The view links every file of the artifact except the int8 rows and adds them dequantized to bf16 as
    `model.embed_tokens.weight`; it is built once per content and reused.
    """
    import os
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    directory = Path(directory).resolve()
    rows = directory / EMBEDDING_FILE
    if not rows.is_file():
        return directory
    # the manifest's content hash covers every weight file: no need to read gigabytes again at start-up
    digest = str(json.loads((directory / "finsignal.json").read_text())["content_hash"])[:16]
    view = Path(cache) / "vllm-views" / f"{directory.name}-{digest}"
    if view.is_dir():
        return view
    staging = view.with_name(f".{view.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for item in directory.iterdir():
        if item.name != EMBEDDING_FILE and item.is_file():
            (staging / item.name).symlink_to(item)
    stored = load_file(rows)
    weight = stored[EMBEDDING_QWEIGHT].float() * stored[EMBEDDING_SCALE].float().reshape(-1, 1)
    save_file({"model.embed_tokens.weight": weight.to(torch.bfloat16).contiguous()},
              str(staging / "embed_tokens.safetensors"), metadata={"format": "pt"})
    try:
        staging.rename(view)
    except OSError:  # another process built it first
        shutil.rmtree(staging, ignore_errors=True)
    return view
