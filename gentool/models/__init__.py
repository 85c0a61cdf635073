"""Built-in model families. Each module holds only its config dataclass and its networks and training step."""
