"""A hook plugin: a JSON-lines logger, one line per epoch record, for tools that read logs rather than run a server.

Declared in pyproject.toml under the `gentool.hooks` entry-point group. It joins a run only when GENTOOL_JSONL names
a file, so installing the plugin changes nothing until it is asked for.
"""

from __future__ import annotations

import json
import os

from gentool.fileio import open_append
from gentool.hooks import TrainHook

ENV = "GENTOOL_JSONL"


class JsonlLogger(TrainHook):
    """Appends each finished epoch's record, with the run directory, as one JSON line to a file."""

    def __init__(self, path: str):
        self.path = path

    def on_epoch_end(self, session, record, reporter):
        # gentool's append: a named pipe or a device named by GENTOOL_JSONL is refused (an OSError, which gentool
        # reports as a failed hook) where open() would wait for a reader forever, stalling the run
        with open_append(self.path) as f:
            f.write((json.dumps({"run_dir": str(session.run_dir), **record}) + "\n").encode("utf-8"))


def jsonl_logger() -> JsonlLogger | None:
    """The entry point: a logger when GENTOOL_JSONL is set, else None (the hook stays out of the run)."""
    path = os.environ.get(ENV)
    return JsonlLogger(path) if path else None
