"""Errors the compressor raises for bad input, always before any training starts."""

from __future__ import annotations


class CompressError(ValueError):
    """Input `compress run` cannot use; the message says what is wrong and where."""


class RecipeError(CompressError):
    """A recipe that is malformed, or that asks for more than the model has."""


class ModelError(CompressError):
    """A checkpoint that is not a usable LLaMA-architecture classifier or causal LM."""


class SourceError(CompressError):
    """A base model `compress import` cannot turn into a checkpoint (format, architecture, quantization, tokenizer)."""


class StageLifecycleError(RuntimeError):
    """A stage used out of order (e.g. `apply` before `initialize`): a bug in the caller, not bad input."""
