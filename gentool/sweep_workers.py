"""`gentool sweep --workers W`: trials in W subprocesses (`python -m gentool.sweep_workers`), each training one trial
through `gentool.sweep.run_trial` with its share of the CPU threads and recording its own outcome in the manifest;
the parent starts them, polls them, records the outcome of any that died without doing so, and stops them all on a
signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# A worker the sweep stops while it still imports torch (seconds) exits 130 in silence, not with a KeyboardInterrupt
# traceback in its log; and at once (os._exit): a SystemExit unwinding a half-done import of torch ran its teardown
# on a half-made module, which once ended in a RecursionError traceback. It has written nothing yet to finish.
if __name__ == "__main__":
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))

import gentool
from gentool import fileio, links, rundir
from gentool.errors import GentoolError
from gentool.guards import STOP_SIGNALS, Interrupted
from gentool.progress import PlainReporter
from gentool.train_options import cli_message
from gentool.sweep import (DONE, FAILED, INTERRUPTED, LOGS, RUNNING, locked, read_manifest, run_trial, trial_busy,
                           trial_lock, update_trial)

POLL_SECONDS, STOP_GRACE_SECONDS = 0.5, 30


def _launch(sweep_dir: Path, index: int, threads: int, runtime: dict) -> subprocess.Popen:
    """Start `python -m gentool.sweep_workers` for one trial, logging to logs/NNN.log, in its own session so that a
    Ctrl-C at the terminal reaches only the parent, which then stops the workers itself."""
    links.own(sweep_dir)
    fileio.make_dirs(sweep_dir / LOGS)
    package_root = str(Path(gentool.__file__).resolve().parents[1])  # the worker imports this very gentool
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    with fileio.open_append(sweep_dir / LOGS / f"{index:03d}.log") as log:
        return subprocess.Popen([sys.executable, "-m", "gentool.sweep_workers", str(sweep_dir), str(index),
                                 str(threads), json.dumps(runtime)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def _settle(sweep_dir: Path, index: int, code: int) -> None:
    """A worker has exited: if it could not record its outcome (killed, crashed), record it for it."""
    with locked(trial_lock(sweep_dir, index), wait=False) as free:
        trial = read_manifest(sweep_dir)["trials"][index]
        if free and trial.get("status") == RUNNING:
            interrupted = code in (130, 143, 128 + signal.SIGUSR1, -signal.SIGINT, -signal.SIGTERM, -signal.SIGUSR1)
            update_trial(sweep_dir, index, status=INTERRUPTED if interrupted else FAILED,
                         error=None if interrupted else f"worker exited with code {code} (see {LOGS}/{index:03d}.log)")


def _stop(sweep_dir: Path, running: dict[int, subprocess.Popen]) -> None:
    """Ask each worker to stop (SIGINT: it saves and records itself as interrupted), then insist."""
    for proc in running.values():
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for index, proc in running.items():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _settle(sweep_dir, index, proc.returncode)


def run_workers(sweep_dir: Path, indices: list[int], runtime: dict, workers: int, threads: int, on_poll) -> None:
    """Run the trials in up to `workers` subprocesses with `threads` torch threads each; `on_poll(manifest, running)`
    is called about twice a second. SIGINT, SIGTERM or SIGUSR1 stops the workers, records their trials as
    interrupted and raises Interrupted."""
    pending, running = list(indices), {}
    # like train's own handling: also when started with SIGINT ignored (a background job), SIGINT stops the sweep
    previous = {s: signal.signal(s, _raise_interrupt) for s in STOP_SIGNALS}
    try:
        while pending or running:
            while pending and len(running) < workers:
                index = pending.pop(0)
                if not trial_busy(sweep_dir, index):
                    running[index] = _launch(sweep_dir, index, threads, runtime)
            for index, proc in list(running.items()):
                if proc.poll() is not None:
                    _settle(sweep_dir, index, running.pop(index).returncode)
            on_poll(read_manifest(sweep_dir), sorted(running))
            time.sleep(POLL_SECONDS)
    except (KeyboardInterrupt, Interrupted):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        _stop(sweep_dir, running)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_interrupt(signum, frame):
    raise Interrupted(f"{signal.Signals(signum).name} received", signum)


def worker_main(argv: list[str]) -> int:
    """`python -m gentool.sweep_workers SWEEP_DIR INDEX THREADS RUNTIME_JSON`: train one trial (the worker of
    `--workers`); exit 0 when it is done, 1 when it failed, 130 when interrupted."""
    import torch

    signal.signal(signal.SIGINT, signal.default_int_handler)  # imported: a stop is the trial's to record, below
    sweep_dir, index, threads, runtime = Path(argv[0]), int(argv[1]), int(argv[2]), json.loads(argv[3])
    rundir.PROCESS[:] = [f"a gentool sweep worker training trial {index} of {sweep_dir}"]
    torch.set_num_threads(threads)
    try:
        trial = run_trial(sweep_dir, index, runtime, PlainReporter())
    except (KeyboardInterrupt, Interrupted):
        return 130
    except GentoolError as exc:
        print(f"error: {cli_message(exc)}", file=sys.stderr)
        return 1
    if trial.get("error"):
        print(f"error: {trial['error']}", file=sys.stderr)
    return 0 if trial["status"] == DONE else 1


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
