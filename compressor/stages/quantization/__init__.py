"""Int8 W8A8: post-training quantization and quantization-aware fine-tuning (see README.md)."""

from compressor.stages.quantization.base import QuantizeStage, to_int8
from compressor.stages.quantization.qat import QATEmbedding, QATLinear

__all__ = ["QATEmbedding", "QATLinear", "QuantizeStage", "to_int8"]
