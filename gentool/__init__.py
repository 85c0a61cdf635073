"""gentool: train, sample, evaluate and summarize image generative models from the shell."""

__version__ = "0.1.0"

__all__ = ["__version__", "get_model", "list_models", "register_model"]


def __getattr__(name: str):
    # The registry is imported on first use, so that `import gentool` (every command's first step) stays instant.
    if name in ("get_model", "list_models", "register_model"):
        from gentool import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'gentool' has no attribute {name!r}")
