"""Models built locally, with no download: the built-in tiny Llama used by the demo and tests."""

from pipemax_sglang.models.tiny import TINY_MODEL_RECIPE, default_tiny_model_dir, ensure_tiny_model

__all__ = ["TINY_MODEL_RECIPE", "default_tiny_model_dir", "ensure_tiny_model"]
