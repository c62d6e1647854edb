"""CPU-only shim for running SGLang 0.5.23 under a CPU build of torch (see boot.py)."""
