"""Sweeps: a grid of ordinary training runs (the product of value lists) under one folder, with a sweep.json
manifest that records each trial's values, status and run directory.

Every trial runs through `run_trial`, whether in this process, as `gentool sweep --trial K` (job arrays) or in a
worker subprocess (`--workers W`). The manifest is only changed under a file lock (the portable `filelock`
library) and written atomically, and a second lock per trial keeps two processes from training the same trial and
records which process holds it; a process that dies releases both. A trial with a checkpoint is resumed from it, so
re-running the same sweep continues where it stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import gentool
from gentool import fileio, links, rundir, seed_stats, sweep_checks
from gentool import schema as s
from gentool.errors import GentoolError, UsageError, listed
from gentool.fileio import atomic_write_json
from gentool.guards import Interrupted, StopSignals
from gentool.history import read_records
from gentool.progress import Reporter
from gentool.results import final_metrics, setting_columns, write_results
from gentool.api import train
from gentool.evaluate_options import INCEPTION
from gentool.sweep_options import MAX_TRIALS
from gentool.train_options import EVAL_N, FIELDS, FIXED, RESTORED, RESUME_RULES, TrainOptions, cli_message

MANIFEST, LOCK, TRIAL_LOCKS, EVAL_LOCK, LOGS = "sweep.json", rundir.SWEEP_LOCK, ".locks", ".eval.lock", "logs"
BY_CONFIG = "results_by_config"  # with several seeds: one row per configuration
# the files a sweep writes, replaces, appends to or locks in its folder (beside its trials' run directories)
OWNED_GLOBS = (MANIFEST, f"{LOCK}*", f"{EVAL_LOCK}*", "results*.csv", "results*.json", "*.png", f"{LOGS}/*",
               f"{TRIAL_LOCKS}/*", ".*.tmp")
FORMAT, FORMAT_VERSION = "gentool-sweep", 1
DONE, FAILED, INTERRUPTED, RUNNING, PENDING = "done", "failed", "interrupted", "running", "pending"
BUSY = "busy"  # not a manifest status: what run_trial reports when another process holds the trial


@dataclass
class SweepSpec:
    """A sweep as asked for: the model and data, the value list of each axis (latent_dim, width or a config field)
    in grid order, the options every trial shares and the per-invocation ones, and the sweep folder."""

    model: str
    data: str
    axes: dict[str, list]
    out: Path
    # train options shared by every trial, part of what the sweep is (changing one is another sweep): those given one
    # value whose resume rule is fixed or restored (SweepOptions.options)
    options: dict = field(default_factory=dict)
    # may change from one invocation to the next: the other train options given one value, epochs, data_dir,
    # eval_n, tensorboard (the root folder of the trials' event folders) and --eval's settings (SweepOptions.runtime)
    runtime: dict = field(default_factory=dict)

    def trials(self) -> list[dict]:
        """Every combination of the axes' values, in order (the last axis varies fastest)."""
        names = list(self.axes)
        combos = itertools.product(*self.axes.values())
        return [{"index": i, "values": dict(zip(names, combo)), "run_dir": trial_dir_name(i, dict(zip(names, combo))),
                 "status": PENDING} for i, combo in enumerate(combos)]

    def manifest(self) -> dict:
        """A fresh manifest: what the sweep is and every trial pending."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "gentool_version": gentool.__version__,
                "model": self.model, "data": self.data, "grid": self.axes, "options": self.options,
                "epochs": self.runtime.get("epochs"), "trials": self.trials()}


def _short(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value).lower()
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def trial_dir_name(index: int, values: dict) -> str:
    """'004-latent_dim5-width1': the trial's index and values, safe as a folder name."""
    return "-".join([f"{index:03d}", *(f"{k}{_short(v)}" for k, v in values.items())])


@contextlib.contextmanager
def locked(path: Path, wait: bool = True, record: bool = False):
    """Hold an exclusive lock on `path` (created if needed); yields False when `wait` is off and another process
    holds it. The lock goes with the process, so a killed process never leaves it behind; with `record`, the
    holder writes who it is beside the lock (`holder`)."""
    lock = rundir.ProcessLock(path, record)
    acquired = lock.acquire(wait)
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()


NAME_KEY = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
TRIAL = s.Obj({"index": s.Int(0, MAX_TRIALS), "values": s.Map(s.SCALAR, key=NAME_KEY, max_len=100),
               # a folder name inside the sweep directory, never a path out of it
               "run_dir": s.Str(255, r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"), "status": s.Str(20)},
              {"epochs": s.Int(0, 10**9), "final": s.Opt(s.Map(s.SCALAR, max_len=1000)),
               "metrics": s.Opt(s.Map(s.Any(), max_len=1000)), "error": s.Opt(s.Str(10_000))})
# the bound on trials is the one `gentool sweep` checks before it writes anything: a sweep can read its own file
MANIFEST_SPEC = s.Obj({"model": s.Str(200), "data": s.Str(),
                       "grid": s.Map(s.List(s.SCALAR, MAX_TRIALS), key=NAME_KEY),
                       "options": s.Map(s.SCALAR, key=NAME_KEY), "trials": s.List(TRIAL, MAX_TRIALS)},
                      {"epochs": s.Opt(s.Int(1, 10**9)), "gentool_version": s.Str(100)})


def read_manifest(sweep_dir: Path) -> dict:
    """The sweep.json of a sweep folder, every field gentool uses checked."""
    path = Path(sweep_dir) / MANIFEST
    if not os.path.lexists(path):
        raise UsageError(f"--out: {sweep_dir} holds no {MANIFEST}; expected a sweep directory")
    try:
        # never through a link: the sweep writes this file back (a link is named, not read as the sweep's)
        manifest = s.read(path, s.Obj({"format": s.Str(100), "format_version": s.Int()}), follow=False)
        if manifest["format"] != FORMAT or manifest["format_version"] > FORMAT_VERSION:
            raise GentoolError(f"{path}: not a sweep manifest this gentool {gentool.__version__} reads")
        manifest = s.check(manifest, MANIFEST_SPEC, "")
    except s.Invalid as exc:
        raise GentoolError(f"--out: {links.described(path)}: {exc}") from None
    except fileio.NotRegular as exc:  # a link, a pipe, a folder: refused, as the file the user gave
        raise UsageError(f"--out: {fileio.cannot_read(path, exc)}") from None
    except OSError as exc:
        raise GentoolError(f"--out: {fileio.cannot_read(path, exc)}") from None
    if [t["index"] for t in manifest["trials"]] != list(range(len(manifest["trials"]))):
        raise GentoolError(f"--out: {path}: field trials is not numbered 0, 1, 2, ... in order")
    return manifest


def differences(manifest: dict, spec: SweepSpec) -> list[str]:
    """What the sweep in `manifest` and `spec` disagree on (model, data, grid, shared options), one phrase each. An
    option missing on either side is its fallback (a manifest lists options not given as null, or not at all)."""
    saved = {"model": manifest["model"], "data": manifest["data"], **manifest["options"]}
    wanted = {"model": spec.model, "data": spec.data, **spec.options}

    def value(values: dict, key: str):
        found = values.get(key)
        return FIELDS[key].metadata["fallback"] if found is None and key in FIELDS and key not in spec.axes else found

    diffs = [f"{k} {value(saved, k)!r} (now {value(wanted, k)!r})" for k in dict.fromkeys([*saved, *wanted])
             if value(saved, k) != value(wanted, k)]
    grid, axes = manifest["grid"], spec.axes
    for name in dict.fromkeys([*grid, *axes]):
        if grid.get(name) != axes.get(name):
            diffs.append(f"{name} values {listed(grid.get(name) or [], 20) or 'not swept'} (now "
                         f"{listed(axes.get(name) or [], 20) or 'not swept'})")
    if not diffs and list(grid) != list(axes):
        diffs.append(f"axis order {listed(grid, 20)} (now {listed(axes, 20)})")
    return diffs


def open_sweep(spec: SweepSpec) -> dict:
    """Create the sweep folder and manifest, or reopen them when they describe the same sweep (an error listing what
    differs otherwise); records the epochs asked for now."""
    out = spec.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a directory; expected a sweep directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        links.own(out)
        links.refuse_linked(out, OWNED_GLOBS)  # before anything there is locked, read, written or appended to
    except links.LinkRefused as exc:
        raise UsageError(f"--out: {exc}") from None
    except OSError as exc:
        raise UsageError(f"--out: cannot create sweep directory {out} ({exc.strerror})") from None
    with locked(out / LOCK):
        if os.path.lexists(out / MANIFEST):  # a dangling link too: read_manifest names it
            manifest = read_manifest(out)
            diffs = differences(manifest, spec)
            if diffs:
                raise UsageError(f"--out: {out} holds a different sweep: {'; '.join(diffs)}; repeat its options or "
                                 f"choose another --out")
        elif any(p.name not in (LOCK, TRIAL_LOCKS, EVAL_LOCK) for p in out.iterdir()):
            raise UsageError(f"--out: {out} is not empty and holds no {MANIFEST}; expected a new or sweep directory")
        else:
            manifest = spec.manifest()
        manifest["epochs"] = spec.runtime.get("epochs")
        atomic_write_json(out / MANIFEST, manifest)
    fileio.make_dirs(out / TRIAL_LOCKS)
    return manifest


def update_trial(sweep_dir: Path, index: int, **changes) -> dict:
    """Change one trial's entry in the manifest under the sweep lock; returns the updated entry."""
    with locked(Path(sweep_dir) / LOCK):
        manifest = read_manifest(sweep_dir)
        trial = manifest["trials"][index]
        trial.update(changes, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write_json(Path(sweep_dir) / MANIFEST, manifest)
    return trial


def is_finished(trial: dict, runtime: dict) -> bool:
    """Done, trained to at least runtime["epochs"] (asking for more resumes finished trials) and, with
    runtime["eval"], evaluated."""
    return (trial.get("status") == DONE and trial.get("epochs", 0) >= runtime["epochs"]
            and (not runtime.get("eval") or trial.get("metrics") is not None))


def trial_lock(sweep_dir: Path, index: int) -> Path:
    return Path(sweep_dir) / TRIAL_LOCKS / f"{index:03d}.lock"


def trial_options(manifest: dict, trial: dict, sweep_dir: Path, runtime: dict) -> TrainOptions:
    """TrainOptions for a trial: resume its run when it has a checkpoint, else start it in its own folder. The
    trial's values and the sweep's options are routed by name: a train option's is that option, any other a
    --param. A resume is given only what a resumed run may change (the rest is the run's own)."""
    run_dir = Path(sweep_dir) / trial["run_dir"]
    common = {"model": manifest["model"], "data": manifest["data"],
              **{k: v for k, v in runtime.items() if k in FIELDS and v is not None}}
    values = trial["values"]
    swept = {k: v for k, v in values.items() if k in FIELDS}
    if (run_dir / rundir.LAST).exists():
        changeable = {k: v for k, v in swept.items() if RESUME_RULES[k] not in (FIXED, RESTORED)}
        return TrainOptions(**common, **changeable, resume=str(run_dir))
    shared = {k: v for k, v in manifest["options"].items() if k in FIELDS and v is not None}
    # overwrite: a trial interrupted before its first checkpoint left only gentool's own files in its folder
    return TrainOptions(**{**common, **shared, **swept}, params={k: v for k, v in values.items() if k not in FIELDS},
                        out=str(run_dir), overwrite=True)


def describe(exc: BaseException) -> str:
    """An error as one line: gentool's own message (a model's naming the option that sets the field), else the
    exception's type and text."""
    return cli_message(exc) if isinstance(exc, GentoolError) else f"{type(exc).__name__}: {exc}"


def run_trial(sweep_dir: Path, index: int, runtime: dict, reporter: Reporter | None = None) -> dict:
    """Train trial `index` to runtime["epochs"] (resuming it when it has a checkpoint) and record the outcome: done
    (with final metrics), failed (with the error; the exception is not raised) or interrupted (re-raised). Returns
    the trial's entry; status "busy" when another process is training it."""
    manifest = read_manifest(sweep_dir)
    trial = manifest["trials"][index]
    with locked(trial_lock(sweep_dir, index), wait=False, record=True) as mine:
        if not mine:
            return {**trial, "status": BUSY, "holder": trial_holder(sweep_dir, index)}
        if is_finished(trial, runtime):
            return trial
        update_trial(sweep_dir, index, status=RUNNING, error=None, host=socket.gethostname(), pid=os.getpid())
        try:
            result = train(trial_options(manifest, trial, sweep_dir, runtime), reporter)
            stale = result["epochs"] != trial.get("epochs")  # evaluated at another epoch count
            metrics = evaluate_run(sweep_dir / trial["run_dir"], runtime) if runtime.get("eval") else \
                None if stale else trial.get("metrics")
        except (KeyboardInterrupt, Interrupted):
            update_trial(sweep_dir, index, status=INTERRUPTED)
            raise
        except Exception as exc:  # a failing trial is recorded and must not stop the others
            return update_trial(sweep_dir, index, status=FAILED, error=describe(exc))
        final = final_metrics(read_records(Path(result["metrics_file"])))
        return update_trial(sweep_dir, index, status=DONE, epochs=result["epochs"], final=final, metrics=metrics)


def evaluate_run(run_dir: Path, runtime: dict) -> dict:
    """`gentool evaluate`'s metrics for a run's last checkpoint against its own data set's test split."""
    from gentool.metrics.evaluate import EvalOptions, evaluate

    req = EvalOptions(source=str(Path(run_dir) / rundir.LAST), data_dir=runtime.get("data_dir"),
                      n=runtime.get("eval_n") or EVAL_N, device=runtime.get("device") or "auto",
                      extractor=runtime.get("extractor") or "gentool", extractor_weights=runtime.get("extractor_weights"))
    return evaluate(req)["metrics"]


def prepare_evaluation(spec: SweepSpec, reporter: Reporter) -> None:
    """Fail early when evaluation is unavailable; otherwise make sure the data set's reference extractor exists,
    training it here, once, under a lock, rather than in several trials at the same time."""
    try:
        from gentool.device import pick_device
        from gentool.metrics.extractor import get_extractor
        from gentool.metrics.reference import resolve_reference
    except ImportError as exc:
        raise GentoolError(f"--eval: evaluation is unavailable in this gentool ({exc})") from None
    manifest = spec.manifest()  # a folder is evaluated at each --image-size its trials train at (mixed sizes)
    sizes = {trial_options(manifest, t, spec.out / "-", spec.runtime).image_size for t in manifest["trials"]}
    references = [resolve_reference(spec.data, spec.runtime.get("data_dir")).at_size(s) for s in sorted(
        sizes, key=lambda s: s or 0)]
    device = pick_device(spec.runtime.get("device") or "auto")
    with locked(spec.out / EVAL_LOCK):
        for reference in references:
            if spec.runtime.get("extractor") == INCEPTION:  # checks the weights file, caches the real features
                from gentool.metrics.inception import InceptionEvaluator

                InceptionEvaluator(reference, "train", device, spec.runtime["extractor_weights"], reporter)
            else:
                get_extractor(reference, device, reporter)


def trial_metrics(trial: dict) -> dict:
    """The trial's final training metrics and its evaluation's numbers (prefixed eval_ where a name is taken; lists
    such as the class histogram stay in sweep.json)."""
    merged = dict(trial.get("final") or {})
    for key, value in (trial.get("metrics") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[f"eval_{key}" if key in merged else key] = value
    return merged


def trial_busy(sweep_dir: Path, index: int) -> bool:
    """Whether another process holds the trial's lock (is training it right now)."""
    with locked(trial_lock(sweep_dir, index), wait=False) as free:
        return not free


def trial_holder(sweep_dir: Path, index: int) -> str:
    """Which process holds the trial's lock, as a phrase for messages."""
    return rundir.ProcessLock(trial_lock(sweep_dir, index)).holder()


def busy_trials(sweep_dir: Path) -> dict[int, str]:
    """The unfinished trials another process is training right now, and which process that is."""
    trials = read_manifest(sweep_dir)["trials"]
    return {t["index"]: trial_holder(sweep_dir, t["index"]) for t in trials
            if t["status"] != DONE and trial_busy(sweep_dir, t["index"])}


def check_spec(spec: SweepSpec) -> None:
    """Check every trial (sweep_checks) and the room the sweep needs, so that a bad value fails before any training
    starts."""
    try:  # the trials' checks look inside it: a name longer than the file system takes fails them unnamed
        spec.out.exists()
    except OSError as exc:
        raise UsageError(f"--out: sweep directory {spec.out} cannot be made ({fileio.cause(exc)})") from None
    check_room(spec.out, sweep_checks.check_trials(spec, trial_options))


def check_room(sweep_dir: Path, planned: list[tuple[str, TrainOptions, int]]) -> None:
    """Before any work: the sweep folder (made later, if need be) holds the longest path the sweep writes (a trial's
    longest run file, a worker's log, a trial lock's owner record, its tables and figures), and each --tensorboard
    folder the longest trial's event files; one line naming the path otherwise. One probe per kind of path, on the
    trial whose path is longest (a grid of 10,000 trials is not probed 10,000 times)."""
    from gentool.sweep_figures import CURVES_PNG, HEATMAP_PNG, MATRIX_PNG

    if sweep_dir.exists() and not sweep_dir.is_dir():
        return  # open_sweep refuses it, saying what it is
    links.own(sweep_dir)  # no probe goes through a link in it (a trial's folder)
    last = len(planned) - 1  # the longest index
    written = [MANIFEST, "results.json", f"{BY_CONFIG}.json", MATRIX_PNG, CURVES_PNG, HEATMAP_PNG,
               f"{TRIAL_LOCKS}/{trial_lock(Path(), last).name}.owner"]  # through temporaries
    names = [f"{LOGS}/{last:03d}.log"] + [str(Path(n).parent / fileio.temporary_name(Path(n).name)) for n in written]
    rundir.check_writable(sweep_dir, 0, max(names, key=len), what="sweep")
    sweep_checks.check_disk(sweep_dir, planned)
    runs = [(name, opts, f"{name}/{rundir.longest_path(opts, 1)}") for name, opts, _ in planned]
    longest = max(runs, key=lambda run: len(run[2]))
    rundir.check_writable(sweep_dir, 0, longest[2], what="sweep")
    if longest[1].tensorboard:
        name, opts, _ = max(runs, key=lambda run: len(run[0]))
        rundir.check_room(sweep_dir / name, opts, 1)


def run_in_process(sweep_dir: Path, indices: list[int], runtime: dict, make_reporter, announce) -> None:
    """Run the trials one after another in this process; `announce(trial)` before each, a fresh reporter each. A
    stop signal ends the sweep even when it lands after a trial's last check (its closing figures) or between two
    trials: the next trial is not started (Interrupted); after the last one the results are written as usual."""
    trials = read_manifest(sweep_dir)["trials"]
    with StopSignals():
        for index in indices:
            if StopSignals.pending:
                raise Interrupted(f"{signal.Signals(StopSignals.pending).name} received", StopSignals.pending)
            announce(trials[index])
            run_trial(sweep_dir, index, runtime, make_reporter())


def result_rows(manifest: dict) -> list[dict]:
    """One row per trial: index, values, status, epochs, final metrics, error and run directory (a value named
    apart from a metric of the same name, `setting_columns`)."""
    trials = manifest["trials"]
    rows = [{"trial": t["index"], "status": t["status"], "epochs": t.get("epochs", 0), **trial_metrics(t),
             "error": t.get("error"), "run_dir": t["run_dir"]} for t in trials]
    named = setting_columns(dict.fromkeys(a for t in trials for a in t["values"]), {k for r in rows for k in r})
    return [{"trial": r.pop("trial"), **{named[a]: v for a, v in t["values"].items()}, **r}
            for t, r in zip(trials, rows)]


def report(sweep_dir: Path, metric: str | None = None) -> dict:
    """Write results.csv, results.json and the sweep's figures for the trials as they stand, and with several seeds
    results_by_config.csv/.json (each metric's mean, std, min and max over a configuration's seeds, and its standing
    on the heat map's metric: best, within noise or neither); returns the rows, the files written, whether every
    trial is done and, with several seeds, the configuration rows and the metric they are compared on."""
    from gentool.sweep_figures import draw_sweep_figures, pick_metric

    manifest = read_manifest(sweep_dir)
    rows = result_rows(manifest)
    files = write_results(sweep_dir, rows)
    trials = [{**t, "final": trial_metrics(t), "path": Path(sweep_dir) / t["run_dir"]} for t in manifest["trials"]]
    seeds = {}
    if seed_stats.seeded(manifest["grid"]):
        seeds = {"metric": pick_metric(trials, metric)}
        seeds["by_config"] = seed_stats.config_rows(manifest["grid"], trials, seeds["metric"])
        files += write_results(sweep_dir, seeds["by_config"], BY_CONFIG)
    figures = draw_sweep_figures(sweep_dir, manifest["grid"], trials, metric)
    return {"sweep_dir": str(sweep_dir), "ok": all(t["status"] == DONE for t in manifest["trials"]),
            "trials": rows, **seeds, "files": [str(f) for f in files + figures]}
