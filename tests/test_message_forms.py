"""No user-facing line shows a Python repr: distill's start-up line printed its teacher's sampler as a dict
("{'steps': 16, 'solver': 'euler'}"), others a tensor shape as a tuple or torch.Size, names as a sorted list. They
go through `listed`, `dims` and `settings_text`; a scan of gentool's source keeps new ones out."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from gentool.errors import dims, listed, settings_text

SOURCE = Path(__file__).resolve().parents[1] / "gentool"
# A placeholder that prints a container or a shape as Python does: {sorted(x)}, {list(x)}, {tuple(s)}, {t.shape}
REPR = re.compile(r"\{(sorted|list|tuple|set|dict)\(|\{[\w.\[\]()]*\.shape\}")


def test_the_words_for_names_shapes_and_settings():
    assert listed(["b", "a"]) == "b and a" and listed(["a"]) == "a" and listed([]) == ""
    assert listed(list("abcdefg")) == "a, b, c, d, e and 2 more" and listed(["x\x1b"]) == "x\\x1b"
    assert dims((1, 28, 28)) == dims(torch.Size([1, 28, 28])) == dims(np.zeros((1, 28, 28)).shape) == "1×28×28"
    assert settings_text({"steps": 16, "solver": "euler", "guidance": 1.5}) == "steps 16, solver euler, guidance 1.5"
    assert settings_text({}) == "none"


def test_no_message_formats_a_container_or_a_shape_as_python_does():
    found = [f"{path.relative_to(SOURCE.parent)}:{n}: {line.strip()}" for path in sorted(SOURCE.rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if REPR.search(line)]
    assert found == []


def test_an_npz_of_the_wrong_shape_names_it_in_words(entry_point, tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 28, 28, 5), dtype=np.uint8))
    done = entry_point("evaluate", tmp_path / "bad.npz", "--data", "mnist-sample", "--n", "10", cwd=tmp_path)
    assert done.returncode == 2 and "has shape 2×28×28×5; expected N×H×W×C" in done.stderr, done.stderr
