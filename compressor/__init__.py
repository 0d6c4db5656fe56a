"""Compressor: trains and rebuilds the scoring model offline; the worker only loads what it writes."""
