"""Bad input: one line naming the argument, a non-zero exit code, no traceback, nothing overwritten."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from safetensors.numpy import save

from gentool.errors import UsageError
from gentool.parsing import parse_grid, parse_param

ROOT = Path(__file__).resolve().parents[1]


def gentool(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gentool", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("args,needle", [
    (["train", "vae", "--data", "mnist-sample", "--epochs", "0"], "--epochs"),
    (["train", "vae", "--data", "mnist-sample", "--epochs", "abc"], "--epochs"),
    (["train", "vae", "--data", "mnist-sample", "--lr", "nan"], "--lr"),
    (["train", "vae", "--data", "mnist-sample", "--width", "-1"], "--width"),
    (["train", "vae", "--data", "mnist-sample", "--device", "tpu"], "--device"),
    (["train", "vae", "--data", "mnist-sample", "--precision", "fp8"], "--precision"),
    (["train", "vae", "--data", "mnist-sample", "--checkpoint-minutes", "-1"], "--checkpoint-minutes"),
    (["train", "vae", "--data", "imagenet"], "--data"),
    (["train", "vae"], "--data"),
    (["train", "wgan", "--data", "mnist-sample", "--param", "clip"], "--param"),
    (["train", "wgan", "--data", "mnist-sample", "--param", "bogus=1"], "--param"),
    (["sample", "missing.safetensors"], "CKPT"),
    (["summary", "nosuchmodel"], "TARGET"),  # summary's argument is TARGET (a model, checkpoint or run)
])
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path, entry_point):
    # in-process (the console script's entry point): the executable's start-up is walked by test_device_absent
    result = entry_point(*args, "--out" if args[0] == "train" else "--json",
                         *([tmp_path / "r"] if args[0] == "train" else []), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_device_absent(tmp_path):
    result = gentool("train", "vae", "--data", "mnist-sample", "--device", "cuda", "--out", tmp_path / "r")
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert result.returncode == 2 and "cuda is not available" in result.stderr


def test_existing_run_dir_is_not_reused(invoke, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    result = invoke("train", "vae", "--data", "mnist-sample", "--limit", "32", "--epochs", "1", "--out", run)
    # a folder of the user's files is not called a run, nor offered a --resume of one
    assert result.exit_code == 2 and "not a gentool run" in result.stderr and "--overwrite" in result.stderr
    assert "--resume" not in result.stderr
    result = invoke("train", "vae", "--data", "mnist-sample", "--limit", "32", "--epochs", "1", "--out", run, "--overwrite", "-q")
    assert result.exit_code == 0 and (run / "notes.txt").read_text() == "mine"


def test_sample_does_not_overwrite(invoke, tmp_path):
    run = tmp_path / "run"
    invoke("train", "vae", "--data", "mnist-sample", "--limit", "32", "--epochs", "1", "--out", run, "-q")
    target = tmp_path / "g.png"
    target.write_bytes(b"precious")
    result = invoke("sample", run / "last.safetensors", "--out", target)
    assert result.exit_code == 2 and target.read_bytes() == b"precious"
    assert invoke("sample", run / "last.safetensors", "--out", target, "--overwrite").exit_code == 0
    assert invoke("sample", run / "last.safetensors", "--grid", "8x8", "--n", "4").exit_code == 2


class Boom:
    def __reduce__(self):
        return (Path("/tmp/gentool-pwned").write_text, ("pwned",))


def test_pickle_renamed_to_safetensors_is_rejected_without_running_it(tmp_path):
    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(Boom()))
    Path("/tmp/gentool-pwned").unlink(missing_ok=True)
    result = gentool("sample", bad, "--out", tmp_path / "g.png")
    assert result.returncode == 2 and "is not a gentool checkpoint" in result.stderr
    assert not Path("/tmp/gentool-pwned").exists()


def test_directory_and_empty_file_as_checkpoint(invoke, tmp_path):
    assert "is a directory" in invoke("sample", tmp_path).stderr
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    result = invoke("sample", empty)
    assert result.exit_code == 2 and "not a gentool checkpoint (the file is empty)" in result.stderr


NOT_CHECKPOINTS = {"notes.txt": b"hello\n", "photo.png": b"\x89PNG\r\n\x1a\n" + bytes(64), "empty.bin": b"",
                   "noise.safetensors": bytes(range(256)) * 4,
                   "foreign.safetensors": save({"a": np.zeros(2, np.float32)})}  # a safetensors file, not gentool's


@pytest.mark.parametrize("command", [["sample"], ["summary"], ["export"], ["evaluate"], ["distill"],
                                     ["train", "--resume"]])
def test_a_file_that_is_no_checkpoint_is_one_line_exit_2(command, tmp_path, entry_point):
    # each command that reads a checkpoint says what the file is not and what it accepts, not the library's
    # "header too large"; the same words (gentool.checkpoint_meta.read_metadata) wherever a checkpoint is read
    for name, data in NOT_CHECKPOINTS.items():
        (tmp_path / name).write_bytes(data)
        result = entry_point(*command, name, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (name, result.stderr)
        # (evaluate takes other files too: one not named .safetensors is "not a known kind of input")
        what = "a known kind of input" if command == ["evaluate"] and not name.endswith(".safetensors") \
            else "a gentool checkpoint ("
        assert f"{name} is not {what}" in lines[0] and "; expected " in lines[0], lines[0]
        assert "header" not in lines[0] or "safetensors header" in lines[0]


@given(st.integers(1, 64), st.integers(1, 64))
def test_grid_round_trip(rows, cols):
    assert parse_grid(f"{rows}x{cols}") == (rows, cols)


@given(st.text(max_size=12))
def test_grid_parser_never_crashes(spec):
    try:
        rows, cols = parse_grid(spec)
    except UsageError as exc:
        assert "--grid" in str(exc)
    else:
        assert 1 <= rows <= 64 and 1 <= cols <= 64


@given(st.text(max_size=20))
def test_param_parser_never_crashes(spec):
    try:
        key, _ = parse_param(spec)
    except UsageError as exc:
        assert "--param" in str(exc)
    else:
        assert key.isidentifier()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny VAE checkpoint, trained once for the tests that only read it (they write their copies elsewhere)."""
    from typer.testing import CliRunner

    from gentool.cli.app import app

    run = tmp_path_factory.mktemp("trained") / "run"
    result = CliRunner().invoke(app, ["train", "vae", "--data", "mnist-sample", "--limit", "32", "--epochs", "1",
                                      "--out", str(run), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return run / "last.safetensors"


def with_metadata(src: Path, dst: Path, **changes) -> Path:
    """A copy of checkpoint `src` at `dst` with some metadata entries replaced."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, dst, metadata={**meta, **changes})
    return dst


def test_checkpoint_of_an_unknown_model_names_its_package(invoke, tmp_path, trained):
    alien = with_metadata(trained, tmp_path / "alien.safetensors",
                          model="alien", model_source="gentool-alien")
    result = invoke("sample", alien, "--out", tmp_path / "g.png")
    assert result.exit_code == 1 and "gentool-alien" in result.stderr and "'alien'" in result.stderr


def test_checkpoint_from_a_newer_format_is_refused(invoke, tmp_path, trained):
    newer = with_metadata(trained, tmp_path / "new.safetensors", format_version="99")
    result = invoke("sample", newer, "--out", tmp_path / "g.png")
    assert result.exit_code == 1 and "format 99" in result.stderr and "upgrade" in result.stderr


@given(st.binary(max_size=300))
def test_checkpoint_reader_rejects_arbitrary_bytes(tmp_path_factory, data):
    from gentool.checkpoint import read_metadata
    from gentool.errors import GentoolError

    path = tmp_path_factory.mktemp("fuzz") / "x.safetensors"
    path.write_bytes(data)
    with pytest.raises(GentoolError):
        read_metadata(path)


@given(st.dictionaries(st.sampled_from(["format", "format_version", "gentool_version", "model", "config", "data",
                                        "state", "optimizers"]), st.text(max_size=30), max_size=8))
def test_checkpoint_reader_rejects_forged_metadata(tmp_path_factory, meta):
    from safetensors.torch import save_file
    import torch

    from gentool.checkpoint import load_checkpoint
    from gentool.errors import GentoolError

    path = tmp_path_factory.mktemp("forged") / "x.safetensors"
    save_file({"model.w": torch.zeros(2)}, path, metadata=meta)
    with pytest.raises(GentoolError):
        load_checkpoint(path)


def test_mismatched_shapes_and_truncation_are_rejected(invoke, tmp_path, trained):
    import json as _json

    from gentool.checkpoint import load_checkpoint
    from gentool.errors import GentoolError

    ckpt = trained
    from safetensors import safe_open

    with safe_open(str(ckpt), "pt") as f:
        config = _json.loads(f.metadata()["config"])
    wider = with_metadata(ckpt, tmp_path / "wider.safetensors", config=_json.dumps({**config, "latent_dim": 9}))
    with pytest.raises(GentoolError, match="shape"):
        load_checkpoint(wider)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    result = invoke("sample", truncated, "--out", tmp_path / "g.png")
    assert result.exit_code == 1 and "not a readable" in result.stderr
    typed = with_metadata(ckpt, tmp_path / "typed.safetensors", config=_json.dumps({**config, "latent_dim": "five"}))
    with pytest.raises(GentoolError, match="latent_dim"):
        load_checkpoint(typed)
