"""One writer per run and per sweep trial, with locks the operating system releases when their process dies (the
portable `filelock`, no fcntl import anywhere); periodic checkpoints lost between two writes come back on resume."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from gentool import rundir

ROOT = Path(__file__).resolve().parents[1]


def gentool(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "gentool", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env=env)


def holder(*lock_paths: Path, record: bool = True) -> subprocess.Popen:
    """Another process holding the given locks (as a training run holds its run directory) until it is killed."""
    script = ("import sys, time\nfrom pathlib import Path\nfrom gentool.rundir import ProcessLock\n"
              f"locks = [ProcessLock(Path(p), {record}) for p in sys.argv[1:]]\n"
              "assert all(lock.acquire(wait=False) for lock in locks)\nprint('held', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, lock_paths)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def one_line(result, code=1):
    code_of = getattr(result, "returncode", getattr(result, "exit_code", None))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert code_of == code and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from gentool.train import TrainOptions, train

    path = tmp_path_factory.mktemp("locks") / "run"
    train(TrainOptions(model="vae", data="mnist-sample", limit=64, epochs=1, width=0.25, out=str(path), sample_every=0))
    return path


@pytest.mark.parametrize("args", [
    ["train", "vae", "--data", "mnist-sample", "--limit", "64", "--epochs", "1", "--out", "{run}", "--overwrite"],
    ["train", "vae", "--resume", "{run}", "--epochs", "2"],
    ["train", "vae", "--resume", "{run}/last.safetensors", "--epochs", "2"],
    ["train", "vae", "--data", "mnist-sample", "--limit", "64", "--epochs", "1", "--out", "{run}"],
])
def test_a_busy_run_is_refused_naming_its_writer(run, tmp_path, invoke, args):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {p.name: p.stat().st_mtime_ns for p in copy.iterdir()}
    other = holder(copy / rundir.LOCK)
    try:
        line = one_line(invoke(*[a.format(run=copy) for a in args], "-q"))
        assert f"is in use by process {other.pid} on " in line, line
        assert {p.name: p.stat().st_mtime_ns for p in copy.iterdir() if p.name in before} == before  # untouched
    finally:
        other.kill()
        other.wait()
    # the lock died with its process: the same command now runs
    result = invoke(*[a.format(run=copy) for a in args], "-q")
    assert result.exit_code in (0, 2), result.stderr  # 2: a plain --out on an existing run asks for --resume
    assert "in use" not in result.stderr


def test_a_running_training_holds_its_run(tmp_path, invoke):
    """The real thing: a second writer while `gentool train` runs, then after it is killed with SIGKILL."""
    out = tmp_path / "live"
    first = subprocess.Popen([sys.executable, "-m", "gentool", "train", "vae", "--data", "mnist-sample", "--epochs",
                              "500", "--width", "0.25", "--out", str(out), "-q", "--threads", "1"])
    try:
        deadline = time.monotonic() + 300
        # until it holds the run and has recorded it (before config.json, --resume finds nothing to resume: a slow
        # start on a loaded machine, e.g. beside another test worker, must not turn the lock test into that one)
        while not all((out / name).exists() for name in (rundir.LOCK + ".owner", rundir.CONFIG)) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        for args in (["--overwrite"], ["--resume"]):
            command = ["--out", out, "--overwrite"] if args == ["--overwrite"] else ["--resume", out]
            line = one_line(invoke("train", "vae", "--data", "mnist-sample", "--epochs", "1", *command, "-q"))
            assert f"process {first.pid}" in line and "gentool train vae --data mnist-sample --epochs 500" in line
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    result = invoke("train", "vae", "--data", "mnist-sample", "--epochs", "1", "--width", "0.25", "--limit", "64",
                    "--out", out, "--overwrite", "-q", "--sample-every", "0")
    assert result.exit_code == 0, result.stderr


def test_locks_are_reentrant_in_one_process_and_released_after_train(tmp_path):
    rundir.lock_run(tmp_path, "--out")
    rundir.lock_run(tmp_path, "--out")  # the same process may take it again
    assert f'"pid": {os.getpid()}' in (tmp_path / (rundir.LOCK + ".owner")).read_text()
    rundir.release_runs()
    assert not (tmp_path / (rundir.LOCK + ".owner")).exists()
    other = holder(tmp_path / rundir.LOCK)
    try:
        with pytest.raises(Exception, match=f"in use by process {other.pid}"):
            rundir.lock_run(tmp_path, "--out")
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("every, epochs, lost, restored", [
    (1, 2, [2], [1, 2]),       # the periodic checkpoint of the last finished epoch
    (2, 4, [4], [2, 4]),
    (2, 3, [2], []),           # last.safetensors is epoch 3: epoch 2's cannot be rebuilt from it
])
def test_periodic_checkpoints_lost_between_two_writes_come_back(tmp_path, invoke, every, epochs, lost, restored):
    out = tmp_path / "run"
    assert invoke("train", "vae", "--data", "mnist-sample", "--limit", "64", "--epochs", epochs, "--width", "0.25",
                  "--checkpoint-every", every, "--sample-every", "0", "--out", out, "-q").exit_code == 0
    last_state = (out / rundir.LAST).read_bytes()
    for epoch in lost:  # a kill after last.safetensors, before epoch_NNNN.safetensors
        rundir.epoch_checkpoint(out, epoch).unlink()
    assert invoke("train", "vae", "--resume", out, "--epochs", epochs + 1, "-q").exit_code == 0
    have = sorted(int(p.stem.split("_")[1]) for p in out.glob("epoch_*.safetensors"))
    expected = sorted({e for e in range(every, epochs + 2, every)} - (set(lost) - set(restored)))
    assert have == expected
    for epoch in set(lost) & set(restored):
        assert rundir.epoch_checkpoint(out, epoch).read_bytes() == last_state


def test_no_module_imports_fcntl(tmp_path, mnist_root):
    """With fcntl unavailable (as on Windows) the CLI still imports and a sweep still runs."""
    script = f"""
import sys
sys.modules["fcntl"] = None  # any `import fcntl` now fails
import gentool.cli.app, gentool.sweep, gentool.sweep_workers, gentool.rundir
sys.argv = ["gentool", "sweep", "vae", "--data", "mnist", "--data-dir", {str(mnist_root)!r}, "--latent-dim", "2",
            "--epochs", "1", "--limit", "32", "--out", {str(tmp_path / 'sw')!r}, "-q"]
gentool.cli.app.main()
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "sw" / "results.csv").exists()


def test_a_second_sweep_reports_trials_another_process_holds(tmp_path, mnist_root, invoke):
    from gentool import sweep

    args = ["sweep", "vae", "--data", "mnist", "--data-dir", mnist_root, "--latent-dim", "2,3,4", "--epochs", "1",
            "--limit", "32", "--sample-every", "0", "--out", tmp_path / "sw", "-q"]
    assert invoke(*args, "--trial", "2").exit_code == 0  # creates the sweep; trial 2 is done
    locks = [tmp_path / "sw" / ".locks" / f"{i:03d}.lock" for i in (0, 1)]
    other = holder(*locks)
    try:
        line = one_line(invoke(*args))
        assert (f"2 of 3 trials are being trained by another process right now (trial 0, 1: process {other.pid}"
                in line), line
        assert "did not finish" not in line
        line = one_line(invoke(*args, "--trial", "1"))
        assert f"trial 1 is being trained by another process right now: process {other.pid}" in line
        assert sweep.busy_trials(tmp_path / "sw").keys() == {0, 1}
    finally:
        other.kill()
        other.wait()
    assert sweep.busy_trials(tmp_path / "sw") == {}  # released with the process
