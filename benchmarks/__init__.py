"""Throughput benchmarks of the chapter's models against Keras 3 (TF and JAX backends) and PyTorch.

Not part of the library and never imported by it; see `benchmarks/throughput.py`.
"""
