"""Checkpoints written by earlier gentool versions keep loading (tests/data, written by make_v1_checkpoints.py with
the code of the version named there)."""

import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gentool.checkpoint import load_checkpoint
from gentool.checkpoint_meta import optimizer_meta, read_metadata
from gentool.history import PartialEpoch, RunHistory, state_fields
from gentool.images import to_uint8
from gentool.train import TrainOptions, train

DATA = Path(__file__).parent / "data"
MAKER = runpy.run_path(str(DATA / "make_partial_run.py"))  # its digest and timing fields (not its __main__)


@pytest.mark.parametrize("name", ["v1_vae", "v1_wgan-gp"])
def test_checkpoints_of_format_1_still_load_and_sample_as_before(name, mnist_root, tmp_path):
    """Files written by gentool before the model interface changed (tests/data/make_v1_checkpoints.py) load, sample
    the same images as the old code did, and (with optimizer state) resume."""
    path = DATA / f"{name}.safetensors"
    ckpt = load_checkpoint(path)
    assert ckpt.weights == "ema" and ckpt.meta["format_version"] == 1
    expected = np.load(DATA / "v1_samples.npz")[name[3:].replace("-", "_")]
    assert np.array_equal(to_uint8(ckpt.model.generate(4, torch.Generator().manual_seed(0))), expected)
    if optimizer_meta(ckpt.meta, path, "CKPT"):  # a run saved by the old code with its optimizer state continues
        run = tmp_path / "run"
        (run / "samples").mkdir(parents=True)  # what train made beside the checkpoint
        shutil.copyfile(path, run / "last.safetensors")
        result = train(TrainOptions(model=ckpt.meta["model"], resume=str(run), epochs=2, data_dir=str(mnist_root)))
        assert result["epochs"] == 2 and result["step"] > 5


def test_a_run_stopped_inside_an_epoch_by_an_earlier_release_resumes_bit_exactly(tmp_path):
    """tests/data/partial_run (make_partial_run.py, written by main @5730eab, before gentool.history): the epoch's
    running sums read back as that release wrote them, and resuming the run ends with the records and every tensor
    (weights, optimizer state) that release's own resume ended with (expected.json)."""
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    for name in ("last.safetensors", "metrics.json"):
        shutil.copyfile(DATA / "partial_run" / name, run / name)
    state = read_metadata(run / "last.safetensors")["state"]
    assert PartialEpoch.from_state(state).batch == 1
    assert state_fields(PartialEpoch.from_state(state)) == {k: state[k] for k in ("batch", "partial")}
    [old] = RunHistory.read(run / "metrics.json").typed()
    assert old.partial and (old.epoch, old.step, old.epoch_fraction) == (1, 1, 0.25) and "loss" in old.metrics
    train(TrainOptions(resume=str(run), epochs=2, threads=1))
    records = json.loads((run / "metrics.json").read_text())["epochs"]
    expected = json.loads((DATA / "partial_run" / "expected.json").read_text())
    # fp32 kernels round differently on different CPUs (~1e-7 relative): exact on the host that wrote the file,
    # within 1e-5 elsewhere; a wrongly restored running sum or RNG moves these by far more
    assert [{k: v for k, v in r.items() if k not in MAKER["TIMING"]} for r in records] == \
        [pytest.approx(r, rel=1e-5) for r in expected["records"]]
    assert MAKER["summary"](run / "last.safetensors") == {k: pytest.approx(v, rel=1e-5, abs=1e-6)
                                                          for k, v in expected["tensors"].items()}


def test_loaded_weights_are_copied_out_of_the_files_buffer_to_aligned_memory():
    """A checkpoint's tensors sit at the file's offsets (4 or 8 bytes apart); used in place, vectorised kernels sum
    them in another order than fresh weights, so a resumed run drifted from a straight one in the last bits (cgan on
    an AVX-512 host). Every weight and buffer is loaded into a fresh, 64-byte-aligned allocation."""
    ckpt = load_checkpoint(DATA / "partial_run" / "last.safetensors", torch.device("cpu"))
    tensors = [*ckpt.model.parameters(), *ckpt.model.buffers()]
    assert tensors and all(t.data_ptr() % 64 == 0 for t in tensors if t.numel())
