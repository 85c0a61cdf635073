"""Issue 26, damaged caches: a couplings part whose values changed after it was written (a few images, a label)
with its header intact was read as the teacher's pairs unless one of the two rows re-drawn per part happened to be
among them. Each part now carries a SHA-256 of its values in its header."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_attack_hour4 import couplings_folder

from gentool import couplings as cp
from gentool.errors import GentoolError


def _rewrite(path, change) -> None:
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata=header)  # the header (and its digest) as written


@pytest.mark.parametrize("change", [
    lambda t: t["images"][300].fill_(255),  # one image of 500, not among the rows re-drawn
    lambda t: t["latents"][7].fill_(0.5),  # finite noise, within any bound
])
def test_a_part_changed_after_writing_is_damaged(tmp_path, change):
    folder = couplings_folder(tmp_path / "c")
    _rewrite(cp.part_path(folder, 1), change)
    with pytest.raises(GentoolError, match=r"part_00001.safetensors: its values are not those written"):
        cp.load_couplings(folder)
    assert len(cp.load_couplings(folder, limit=cp.PART)) == cp.PART  # the sound first part alone still reads
    _rewrite(cp.part_path(folder, 0), lambda t: None)  # rewritten with the same values: still whole
    assert len(cp.load_couplings(folder, limit=cp.PART)) == cp.PART


def test_distill_sets_a_changed_part_aside(tmp_path):
    folder = couplings_folder(tmp_path / "c")
    _rewrite(cp.part_path(folder, 1), lambda t: t["images"][300].fill_(255))
    manifest = cp.read_manifest(folder)
    with pytest.warns(UserWarning, match="its values are not those written"):
        done = cp.usable_parts(folder, manifest, lambda k: torch.zeros(cp.PART, 1, 8, 8),
                                  lambda z: torch.zeros(len(z), 1, 8, 8, dtype=torch.uint8))
    assert done == 1 and not cp.part_path(folder, 1).exists()
