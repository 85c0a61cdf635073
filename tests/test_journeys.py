"""The used-by journeys, walked as a user walks them: the installed `gentool` executable in a subprocess, no
terminal (stdin closed, stdout and stderr captured), real signals, and every command gentool prints run verbatim
through a shell. Data: the tiny MNIST files of conftest.py, so each test takes seconds. A step that only has to be
refused or to succeed, after the journey's own processes, runs the console script's entry point in-process."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gentool.checkpoint import load_checkpoint

TORCHLESS_COMMANDS = [["--help"], ["models"], ["models", "--json"]] + [
    [cmd, "--help"] for cmd in ("train", "sample", "evaluate", "sweep", "summary", "models")]


def _executable() -> Path:
    here = Path(sys.executable).with_name("gentool")  # the console script installed with this interpreter
    found = here if here.is_file() else shutil.which("gentool")
    if not found:
        pytest.skip("the gentool executable is not installed (pip install -e .)")
    return Path(found)


GENTOOL = _executable()
# The shell that runs printed commands finds this very executable first; one thread per process keeps the tests
# from fighting over the cores.
ENV = {**os.environ, "PATH": f"{GENTOOL.parent}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
       "COLUMNS": "80"}
ENV.pop("GENTOOL_DEBUG", None)


def gentool(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(GENTOOL), *map(str, args)], cwd=cwd, env=env or ENV, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def start(*args, cwd: Path, env: dict | None = None, ignore_sigint: bool = False) -> subprocess.Popen:
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen([str(GENTOOL), *map(str, args)], cwd=cwd, env=env or ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore)


SHELL = shutil.which("bash") or "/bin/sh"  # bash runs a lone command in its own process (exec): signals reach it


def shell(command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command exactly as gentool printed it."""
    return subprocess.run(command, shell=True, executable=SHELL, cwd=cwd, env=ENV, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def wait_until(condition, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"gentool exited with {proc.returncode} too early: {proc.stderr.read()}")
        assert time.monotonic() < end, "timed out"
        time.sleep(poll)


def stop(proc: subprocess.Popen, signum: int, timeout: float = 120) -> tuple[str, str]:
    proc.send_signal(signum)
    try:
        return proc.communicate(timeout=timeout)
    finally:
        proc.kill()


def printed_command(stderr: str, marker: str) -> str:
    """The command gentool printed after `marker` (to the end of its line)."""
    match = re.search(re.escape(marker) + r"\s*(.+)$", stderr, re.MULTILINE | re.IGNORECASE)
    assert match, f"no {marker!r} in: {stderr}"
    return match.group(1).strip()


def epochs_of(run: Path) -> list[int]:
    return [r["epoch"] for r in json.loads((run / "metrics.json").read_text())["epochs"]]


def test_ctrl_c_prints_a_resume_command_that_runs_verbatim(tmp_path, mnist_root, entry_point):
    """Journey 1: Ctrl-C, then the printed resume line as is (a run path with a space, no MODEL, no --data-dir:
    the run recorded it), then SIGTERM on the resumed run; MODEL given for another family is refused."""
    run = tmp_path / "my runs" / "wgan 1"
    proc = start("train", "wgan", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1000", "--limit", "64",
                 "--batch-size", "16", "--sample-every", "0", "--out", run, cwd=tmp_path)
    wait_until(lambda: (run / "last.safetensors").exists(), proc)
    _, err = stop(proc, signal.SIGINT)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert (run / "loss.png").is_file()  # drawn as the signal stopped the run, not only every 10 epochs
    command = printed_command(err, "Resume with:")
    assert command.startswith("gentool train --resume ") and "--data-dir" not in command
    done = len(epochs_of(run))

    resumed = subprocess.Popen(command, shell=True, executable=SHELL, cwd=tmp_path, env=ENV, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len(epochs_of(run)) > done + 1, resumed)
    _, err = stop(resumed, signal.SIGTERM)  # what a batch system sends before it kills a job
    assert resumed.returncode == 143 and "Traceback" not in err, err
    assert "resuming" in err and printed_command(err, "Resume with:") == command
    load_checkpoint(run / "last.safetensors")  # what SIGTERM saved loads
    epochs = epochs_of(run)
    assert epochs == list(range(1, len(epochs) + 1))

    other = entry_point("train", "vae", "--resume", run, "--epochs", "1000", cwd=tmp_path)  # a refusal: in-process
    assert other.returncode == 2 and "'vae'" in other.stderr and "'wgan'" in other.stderr, other.stderr


def test_time_budget_message_runs_verbatim(tmp_path, mnist_root):
    """--max-minutes stops with a resume line that asks for the same budget again (it is the invocation's, not the
    run's: without it the line trained to --epochs unbounded); run as printed, it goes on from where the first
    stopped, and stops at its budget with the same line (or finishes)."""
    first = gentool("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "3", "--limit", "256",
                    "--batch-size", "4", "--max-minutes", "0.005", "--out", "budget", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    command = printed_command(first.stderr, "resume with:")
    assert command.endswith("--epochs 3 --max-minutes 0.005"), command
    again = shell(command + " --json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["step"] > json.loads(first.stdout)["step"], (first.stdout, again.stdout)
    assert result["epochs"] == 3 or printed_command(again.stderr, "resume with:") == command, again.stderr


@pytest.mark.parametrize("how", ["--resume auto", "plain", "printed --resume"])
def test_same_command_after_a_kill_before_the_first_checkpoint(tmp_path, mnist_root, how, entry_point):
    """A kill at any moment, before the first checkpoint too: the same command line starts the run cleanly (with
    --resume auto, or plainly with --out), and so does `--resume RUN` without MODEL or --data. The killed run is a
    real process; the commands after it, which find what the kill left, run the entry point in-process."""
    # 32 steps an epoch: a first checkpoint far enough from the start for the kill to come before it
    args = ["train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "2", "--limit", "64",
            "--batch-size", "2", "--out", "run"] + (["--resume", "auto"] if how == "--resume auto" else [])
    run = tmp_path / "run"
    proc = start(*args, cwd=tmp_path)
    wait_until(lambda: (run / "config.json").exists(), proc, poll=0.005)
    proc.kill()
    proc.wait()
    assert not (run / "last.safetensors").exists(), "the kill came too late for this test"
    again = entry_point(*(["train", "--resume", "run"] if how == "printed --resume" else args), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert epochs_of(run) == [1, 2] and (run / "last.safetensors").is_file()
    resumed_again = entry_point(*args, "--epochs", "3", cwd=tmp_path) if how == "--resume auto" else None
    if resumed_again is not None:  # the same line with a checkpoint there: it continues
        assert resumed_again.returncode == 0 and epochs_of(run) == [1, 2, 3], resumed_again.stderr


SITE_FULL_DISK = """
import shutil
_real = shutil.disk_usage
shutil.disk_usage = lambda path: _real(path)._replace(free=1000)  # a disk with 1000 bytes free
"""


def test_a_start_that_fails_its_checks_leaves_no_run_directory(tmp_path, entry_point):
    """The free-space check fails (a full disk, simulated in the gentool process through sitecustomize): no run
    directory is left, so the same command works once there is space."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_FULL_DISK)
    args = ["train", "vae", "--data", "mnist-sample", "--epochs", "1", "--limit", "32", "--out", "runs/full"]
    full = gentool(*args, cwd=tmp_path, env={**ENV, "PYTHONPATH": str(site)})
    assert full.returncode == 1 and "MiB free" in full.stderr and "Traceback" not in full.stderr, full.stderr
    assert not (tmp_path / "runs" / "full").exists()
    assert entry_point(*args, "-q", cwd=tmp_path).returncode == 0  # in-process: the disk is not full there


def _loading_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("ignored", [False, True], ids=["", "SIGINT ignored"])
@pytest.mark.parametrize("moment", ["importing torch", "creating the run"])
def test_ctrl_c_at_start_up_gives_no_traceback(tmp_path, moment, ignored):
    """Ctrl-C while gentool is still importing torch, or while it sets the run up: exit 130, no traceback, and no
    dead-end run directory. (A signal that lands while the Python interpreter itself starts, before any gentool
    code runs, is Python's to report.)"""
    if moment == "importing torch" and not Path(f"/proc/{os.getpid()}/maps").exists():
        pytest.skip("needs /proc to see when the process loads torch")
    run = tmp_path / "run"
    # a script's background job (`gentool ... &`) starts with SIGINT ignored; `kill -INT` must stop it all the same
    proc = start("train", "vae", "--data", "mnist-sample", "--epochs", "1000", "--out", run, cwd=tmp_path,
                 ignore_sigint=ignored)
    if moment == "importing torch":
        wait_until(lambda: _loading_torch(proc.pid), proc, poll=0.001)
    else:
        wait_until(run.exists, proc, poll=0.001)
    _, err = stop(proc, signal.SIGINT)
    assert proc.returncode == 130 and "Traceback" not in err, err
    if (run / "last.safetensors").exists():  # under load the test may see the folder late, once the loop runs:
        assert "Resume with: " in err, err  # the run is saved there, and says how to continue it
    else:  # no run: the start was undone
        assert not run.exists() and err.strip().endswith("interrupted"), err


def test_batch_log_has_progress_lines_within_an_epoch(tmp_path, mnist_root):
    """Without a terminal: the run directory first, then a line every --log-every seconds within the epoch with
    step/steps, img/s, losses and the run's ETA; stdout is never wrapped at 80 columns."""
    out = tmp_path / ("a-run-directory-whose-path-is-longer-than-eighty-columns-" + "x" * 40)
    result = gentool("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "2", "--limit", "128",
                     "--batch-size", "2", "--log-every", "0.05", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"run directory: {out}")
    within = [l for l in lines if re.match(r"epoch 1/2 step \d+/64 ", l)]
    assert len(within) >= 2, result.stderr
    assert all("img/s" in l and "loss=" in l and "run eta " in l for l in within)
    ends = [l for l in lines if re.match(r"epoch \d/2 done at step \d+ in ", l)]
    assert len(ends) == 2 and ends[-1].endswith("run eta 0:00:00")
    assert result.stdout.splitlines() == [f"run directory: {out}  checkpoint: {out / 'last.safetensors'}"]


@pytest.mark.parametrize("args", TORCHLESS_COMMANDS, ids=" ".join)
def test_help_and_models_do_not_import_torch(tmp_path, args):
    """Start-up: `--help`, `models` and every command's `--help` import neither torch nor scipy (the import log
    of the gentool process itself, PYTHONPROFILEIMPORTTIME)."""
    result = gentool(*args, cwd=tmp_path, env={**ENV, "PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert imported and not {m for m in imported if m.split(".")[0] in ("torch", "scipy", "torchvision")}
    if args[0] == "models" and "--help" not in args:
        listed = result.stdout
        assert all(name in listed for name in ("vae", "gan", "wgan", "wgan-gp", "sngan", "cgan", "cvae"))
        assert "Variational autoencoder" in listed


def test_help_reads_well_at_80_columns(tmp_path):
    """Types as words, lines within 80 columns, required arguments marked, every command named in the app's
    description."""
    root = gentool("--help", cwd=tmp_path).stdout
    description = root.split("Options:")[0]
    for command in ("train", "sample", "evaluate", "sweep", "summary", "models"):
        assert f"`{command}`" in description or f"`gentool {command}`" in description, command
    for command in ("train", "sample", "evaluate", "sweep", "summary", "models"):
        text = gentool(command, "--help", cwd=tmp_path).stdout
        assert "<" not in re.sub(r"<(model|data|time)>", "", text), text  # no <int>, <bool>, <str>
        assert max(map(len, text.splitlines())) <= 80, text
    sample = gentool("sample", "--help", cwd=tmp_path).stdout
    assert re.search(r"Usage: gentool sample \[OPTIONS\] CKPT\b", sample) and "[required]" in sample
