"""Issue 26, class 4 (parameters): a model's size is counted on the meta device, without allocating a weight, and a
model beyond the stated bound is refused in one line before any is allocated, by `summary` and `train` alike. Class 7
(the checks match the real work): every command that writes tries, before any work, the longest path it will write
(a sweep's trials, export's JSON, report's temporary, the TensorBoard folder; distill: tests/test_attack_hour.py)."""

import resource

import os

import pytest

from gentool.data import peek_geometry
from gentool.registry import get_entry
from gentool.summary import MAX_PARAMETERS, count_parameters


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@pytest.mark.parametrize("args", [
    ["summary", "mlp-wgan-gp", "--width", "64"],  # about 13 GiB of fp32 weights
    ["summary", "vae", "--width", "64"],
    ["summary", "wgan", "--width", "40"],
])
def test_summary_refuses_a_huge_model_without_allocating_it(invoke, args):
    before = _peak_mib()
    result = invoke(*args)
    assert result.exit_code == 2 and "parameters" in result.stderr and f"{MAX_PARAMETERS:,}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _peak_mib() - before < 1024  # the weights were never allocated


def test_train_refuses_a_huge_model_before_its_run_directory_exists(invoke, tmp_path):
    before = _peak_mib()
    result = invoke("train", "gan", "--data", "mnist-sample", "--width", "64", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "parameters" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists() and _peak_mib() - before < 1024


@pytest.mark.parametrize("model", ["vae", "flow"])
def test_the_meta_count_is_the_real_count(model):
    cls = get_entry(model).cls
    config = cls.config_class.create(peek_geometry("mnist"), None, 0.25)
    real = cls(config)
    counted = sum(t.numel() for t in [*real.parameters(), *real.buffers()] if t.is_floating_point())
    assert count_parameters(cls, config) == counted


# --- class 7: the write check tries the longest path the command will write, before any work ---------------------

def test_the_write_probe_tries_the_whole_path_through_folders_not_made_yet(tmp_path):
    """One probe for every command (gentool.paths.write_probe): a path through folders that do not exist yet is
    checked without making them; a name too long, a whole path too long, a file where a folder must go all fail."""
    import errno

    from gentool.paths import write_probe
    from test_links_and_pipes import long_dir

    write_probe(tmp_path / "run" / "deeper", "samples/" + "x" * 200)
    assert list(tmp_path.iterdir()) == []  # nothing made, the probe deleted
    with pytest.raises(OSError) as name:
        write_probe(tmp_path / "run", "samples/" + "x" * 256)
    deep = long_dir(tmp_path / "d", 4000)
    with pytest.raises(OSError) as whole:
        write_probe(deep / "not-yet", "samples/" + "x" * 90)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(NotADirectoryError):
        write_probe(tmp_path / "file" / "run", "config.json")
    assert name.value.errno == whole.value.errno == errno.ENAMETOOLONG and not (deep / "not-yet").exists()


def test_a_sweep_whose_trial_paths_are_too_long_is_refused_before_any_trial(tmp_path, invoke):
    """The sweep folder's own files fit; a trial's run files (000-latent_dim2-width0.25/...) do not."""
    from test_links_and_pipes import long_dir, one_line

    out = long_dir(tmp_path, 4040) / "sw"
    result = invoke("sweep", "vae", "--data", "mnist-sample", "--limit", "32", "--epochs", "1", "--latent-dim", "2,3",
                    "--width", "0.25", "--out", out)
    one_line(result, 2, "--out", "sweep directory", "the sweep's longest, 000-")
    assert not out.exists()


def test_export_and_report_check_the_longest_file_they_write(tmp_path, invoke):
    """export writes NAME.pt and NAME.pt.json (the longer); report writes report.html through a longer temporary."""
    from test_attack_hour import checkpoint
    from test_links_and_pipes import long_dir, one_line

    ckpt = checkpoint(tmp_path / "vae", "vae")
    out = long_dir(tmp_path / "e", 4075) / "m.pt"  # .m.pt.XXXXXXXX.tmp fits, .m.pt.json.XXXXXXXX.tmp does not
    one_line(invoke("export", ckpt, "--format", "torchscript", "--out", out), 2, "--out", "cannot be written")
    (ckpt.parent / "config.json").write_text("{}")
    page = long_dir(tmp_path / "r", 4070) / "report.html"  # fits; .report.html.XXXXXXXX.tmp does not
    one_line(invoke("report", ckpt.parent, "--out", page), 2, "--out", "cannot be written")
    assert not out.exists() and not page.exists()


def test_a_tensorboard_folder_too_long_for_the_runs_event_files_is_refused_up_front(tmp_path):
    from gentool import rundir
    from gentool.errors import UsageError
    from gentool.train_options import TrainOptions
    from test_links_and_pipes import long_dir

    events = long_dir(tmp_path / "tb", 4040)  # the run folder's name and the event file's do not fit under it
    opts = TrainOptions(model="vae", epochs=3, tensorboard=str(events))
    with pytest.raises(UsageError, match="--tensorboard"):
        rundir.check_room(tmp_path / "runs" / "a-run-with-a-long-name", opts, 10)
    assert not (tmp_path / "runs").exists()


def test_a_cache_without_room_for_its_entry_is_refused_before_the_extractor_trains(tmp_path, monkeypatch):
    import torch

    from gentool.errors import GentoolError
    from gentool.metrics.extractor import RECIPE_ENV, get_extractor
    from gentool.metrics.reference import resolve_reference
    from test_links_and_pipes import EXTRACTOR_RECIPE, long_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(long_dir(tmp_path, 4030)))  # its folder fits, its file does not
    monkeypatch.setenv(RECIPE_ENV, EXTRACTOR_RECIPE)  # (the old code trained this one, then failed to save it)
    with pytest.raises(GentoolError, match="cannot hold"):
        get_extractor(resolve_reference("mnist-sample"), torch.device("cpu"))


@pytest.mark.parametrize("model, side, batch", [("flow", 256, 4096), ("vae", 32, 65536)])
def test_a_batch_whose_layer_outputs_cannot_fit_is_refused_before_any_weight(model, side, batch):
    """flow on 256x256 images, 4,096 to a batch: about 400 GB of layer outputs per step, counted on the meta device
    (train checks this with the model's size, before its run directory exists); it was allocated as the first step
    ran. A batch that fits passes."""
    from gentool.datatypes import Geometry
    from gentool.errors import UsageError
    from gentool.summary import check_size

    cls = get_entry(model).cls
    config = cls.config_class.create(Geometry(3, side, side, 10), None, 0.25)
    before = _peak_mib()
    with pytest.raises(UsageError, match=rf"--batch-size/--image-size: {model} on 3x{side}x{side} images keeps .* of "
                                         rf"layer outputs for a batch of {batch:,}; at most"):
        check_size(cls, config, batch)
    check_size(cls, config, 16)
    assert _peak_mib() - before < 1024


def test_resizing_a_built_in_data_set_beyond_the_memory_bound_is_refused_before_allocating(monkeypatch):
    from gentool import folders
    from gentool.data import load_dataset
    from gentool.errors import UsageError

    monkeypatch.setattr(folders, "memory_bound", lambda: 100 << 20)  # 2,000 images at 256x256 are 125 MiB
    before = _peak_mib()
    with pytest.raises(UsageError, match=r"--image-size: 2,000 images of 1x256x256 pixels take 125.0 MiB; at most"):
        load_dataset("mnist-sample", image_size=256)
    assert _peak_mib() - before < 100


# --- issue 26 F7: the disk the work needs, checked before it starts -----------------------------------------------

def _free(monkeypatch, free: int):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=free))


def test_distill_counts_the_whole_parts_it_draws_and_the_students_run(tmp_path, monkeypatch):
    """64 pairs draw a whole part of 500 (1.18 MB of MNIST pairs): the check counted 64 pairs (151 kB), so a disk
    with 796 KiB free drew 500 for 42 s and then failed writing the part. The student's run on the same disk counts
    too; on another disk it is not counted with the couplings (its own check counts it)."""
    from gentool import couplings as cp
    from gentool.errors import GentoolError

    mnist, latent = {"channels": 1, "height": 28, "width": 28}, (1, 28, 28)
    _free(monkeypatch, 796 << 10)
    with pytest.raises(GentoolError, match=rf"--pairs: only 0.8 MiB free in {tmp_path}; drawing 500 more couplings "
                                           r"needs about 1.1 MiB"):
        cp.check_drawing(tmp_path / "c", mnist, latent, 64, 0)
    _free(monkeypatch, 2 << 20)
    cp.check_drawing(tmp_path / "c", mnist, latent, 64, 0)
    with pytest.raises(GentoolError, match=r"only 2.0 MiB free in .*; drawing 500 more couplings with the student's "
                                           r"run in .*s \(1.0 MiB\) needs about 2.1 MiB"):
        cp.check_drawing(tmp_path / "c", mnist, latent, 64, 0, (tmp_path / "s", 1 << 20))
    cp.check_drawing(tmp_path / "c", mnist, latent, 64, 500, (tmp_path / "s", 1 << 30))  # nothing to draw


def test_a_sweep_on_a_disk_too_small_for_one_trial_is_refused_writing_nothing(tmp_path, monkeypatch, invoke):
    """The sweep wrote sweep.json, results and a figure, then every trial failed its own free-space check (exit 1).
    Now the largest trial's need (train's own check, gentool.rundir.run_bytes) is checked before anything is written."""
    from test_links_and_pipes import one_line

    _free(monkeypatch, 3 << 20)
    out = tmp_path / "sw"
    result = invoke("sweep", "vae", "--data", "mnist-sample", "--limit", "32", "--epochs", "1", "--latent-dim", "2,3",
                    "--out", out)
    one_line(result, 1, "--out: only 3.0 MiB free in", "trial 001-latent_dim3 (its run's checkpoints", "needs about")
    assert not out.exists()
    _free(monkeypatch, 1 << 40)
    listed = invoke("sweep", "vae", "--data", "mnist-sample", "--latent-dim", "2,3", "--out", out, "--list")
    assert listed.exit_code == 0 and not out.exists()


@pytest.mark.parametrize("errno_, exit_code", [("ENOSPC", 1), ("EDQUOT", 1), ("EACCES", 2)])
def test_a_write_check_on_a_full_disk_is_exit_1_not_a_bad_option(tmp_path, monkeypatch, errno_, exit_code):
    """Attacker hour h26x, F6: `evaluate --out` on a full disk said "cannot be written (No space left on device)"
    with exit 2, as a bad option; every write check (an output file, a run or sweep folder, the cache, couplings)
    now exits 1 for a full disk, as the free-space checks and the batch-jobs guide say."""
    import errno

    from gentool import cache, paths, rundir

    def full(*args, **kwargs):
        raise OSError(getattr(errno, errno_), os.strerror(getattr(errno, errno_)))

    monkeypatch.setattr(paths, "write_probe", full)
    monkeypatch.setattr(cache, "write_probe", full)
    for check in (lambda: paths.prepare_output(tmp_path / "e.json", "--out"),
                  lambda: rundir.check_writable(tmp_path / "run"),
                  lambda: cache.prepare_entry(tmp_path / "c" / "e.safetensors")):
        with pytest.raises(Exception) as caught:
            check()
        assert caught.value.exit_code == exit_code, caught.value


def test_a_resume_needs_room_for_its_next_save_before_it_starts(tmp_path, monkeypatch, invoke):
    """Attacker hour h26x, F3: a resume on a disk with less room than one checkpoint passed its start check (it
    counted only the step copies), trained a step, failed writing last.safetensors, and did the same each time it
    was run again. It now needs room for last.safetensors' replacement and an epoch copy, before any work."""
    out = tmp_path / "run"
    first = invoke("train", "vae", "--data", "mnist-sample", "--limit", "32", "--epochs", "1", "--out", out)
    assert first.exit_code == 0, first.stderr
    size = (out / "last.safetensors").stat().st_size
    _free(monkeypatch, int(1.5 * size))
    result = invoke("train", "--resume", out, "--epochs", "2")
    assert result.exit_code == 1 and "--resume: only" in result.stderr and "needs about" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    _free(monkeypatch, 3 * size)
    assert invoke("train", "--resume", out, "--epochs", "2").exit_code == 0
