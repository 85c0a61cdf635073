"""Shell conventions: completion, the environment variables that set default folders (and --help naming them),
--deterministic. The installed `gentool` runs in subprocesses where the process is part of it (completion, --help,
two runs that must repeat); the default folders are read by the entry point in-process."""

from __future__ import annotations

import json
import subprocess

import torch
from safetensors.numpy import load_file

from gentool.device import use_deterministic
from test_journeys import ENV, GENTOOL, gentool

SMALL = ["--data", "mnist-sample", "--limit", "128", "--epochs", "1", "--threads", "1", "--sample-every", "0", "-q"]


def test_completion_installs_and_completes(tmp_path):
    """--install-completion from bash (Typer detects the shell it was started from), then the installed script
    completes commands, model names and options the way bash calls it."""
    env = {**ENV, "HOME": str(tmp_path)}
    installed = subprocess.run(["bash", "-c", f"{GENTOOL} --install-completion; true"], cwd=tmp_path, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert "bash completion installed in" in installed.stdout, installed.stderr
    script = tmp_path / ".bash_completions" / "gentool.sh"
    assert "complete -o default -F _gentool_completion gentool" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()

    def complete(words: str) -> list[str]:
        line = (f"source {script}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); "
                f"_gentool_completion gentool; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env={**env, "PATH": ENV["PATH"]},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        return done.stdout.split()

    assert complete("gentool tr") == ["train"]
    assert complete("gentool sweep wgan") == ["wgan", "wgan-gp"]
    assert complete("gentool train --print") == ["--print-config"]


def test_help_names_the_environment_variables(tmp_path):
    train = gentool("train", "--help", cwd=tmp_path, env={**ENV, "COLUMNS": "200"}).stdout
    assert "$GENTOOL_DATA" in train and "$GENTOOL_RUNS" in train
    assert "$GENTOOL_SWEEPS" in gentool("sweep", "--help", cwd=tmp_path, env={**ENV, "COLUMNS": "200"}).stdout


def test_default_folders_from_the_environment(tmp_path, entry_point, monkeypatch):
    """The variables as the gentool process reads them (in-process: the run, not the process start, is tested)."""
    monkeypatch.setenv("GENTOOL_RUNS", str(tmp_path / "scratch runs"))
    monkeypatch.setenv("GENTOOL_SWEEPS", str(tmp_path / "scratch sweeps"))
    run = entry_point("train", "vae", *SMALL, "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    run_dir = json.loads(run.stdout)["run_dir"]
    assert run_dir.startswith(str(tmp_path / "scratch runs" / "vae-mnist-sample-"))
    listed = entry_point("sweep", "vae", "--data", "mnist-sample", "--latent-dim", "2,4", "--list", "--json",
                         cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["run_dir"].startswith(str(tmp_path / "scratch sweeps" / "vae-mnist-sample"))


def test_deterministic_runs_repeat_and_are_recorded(tmp_path):
    for out in ("a", "b"):  # wgan-gp: convolutions, BatchNorm-free critic differentiated twice
        result = gentool("train", "wgan-gp", *SMALL, "--deterministic", "--out", out, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    a, b = load_file(tmp_path / "a/last.safetensors"), load_file(tmp_path / "b/last.safetensors")
    assert all((a[k] == b[k]).all() for k in a if k.startswith("model."))
    assert json.loads((tmp_path / "a/config.json").read_text())["options"]["deterministic"] is True


def test_use_deterministic_sets_torch_flags():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        use_deterministic(torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)
