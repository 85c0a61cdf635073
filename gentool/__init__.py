"""gentool: train, sample, evaluate and summarize image generative models from the shell."""

__version__ = "0.1.0"

from gentool.registry import get_model, list_models, register_model  # noqa: E402

__all__ = ["__version__", "get_model", "list_models", "register_model"]
