"""`sample --out DIR/` on a disk too small (attacker hour h26r): refused before drawing when the files cannot fit,
and a write that fails part-way removes the PNGs it wrote instead of leaving the disk full."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gentool import images, sampling
from gentool.errors import GentoolError


def test_a_folder_that_cannot_hold_n_files_is_refused_before_it_is_made(tmp_path, monkeypatch):
    stat = SimpleNamespace(f_frsize=4096, f_bavail=100, f_bfree=100, f_blocks=9)
    monkeypatch.setattr(sampling.os, "statvfs", lambda p: stat)
    out = tmp_path / "new" / "pngs"
    with pytest.raises(GentoolError, match=r"--out: only 0\.4 MiB free .*; writing 5,000 PNG files \(one 4,096-byte "
                                           r"block each at least\) needs about 19\.5 MiB"):
        sampling._check_room(out, 5000)
    assert not (tmp_path / "new").exists()
    sampling._check_room(out, 100)  # fits: no refusal


def test_a_write_that_fails_part_way_removes_only_what_it_wrote(tmp_path, monkeypatch):
    out = tmp_path / "pngs"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    real, count = images.write_png, {"n": 0}

    def fills_up(path, img):
        count["n"] += 1
        if count["n"] > 5:
            raise GentoolError(f"cannot write {path}: No space left on device; nothing was written there")
        real(path, img)

    monkeypatch.setattr(images, "write_png", fills_up)
    chunks = iter([torch.zeros(4, 1, 8, 8), torch.zeros(4, 1, 8, 8)])
    with pytest.raises(GentoolError, match="No space left on device.*the 5 of 8 PNGs written before it were removed"):
        sampling._write_folder(out, chunks, 8)
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_a_stop_part_way_removes_the_pngs_too(tmp_path):
    def chunks():
        yield torch.zeros(3, 1, 8, 8)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sampling._write_folder(tmp_path, chunks(), 6)
    assert list(Path(tmp_path).iterdir()) == []
