"""The GPU check's sections (`benchmarks/gpu_check.py`): one module per section, `common` for what they share."""
