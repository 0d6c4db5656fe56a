"""Inference runtimes for the artifacts the compressor writes: torch and safetensors only.

The worker's loader calls `compressor.runtime.loader.load_classifier` for checkpoints plain transformers
cannot run with int8 kernels, so this package must import nothing heavy at import time.
"""
