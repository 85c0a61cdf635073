"""Loggers: views of a run in other tools (TensorBoard), each a training hook."""
