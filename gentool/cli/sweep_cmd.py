"""gentool sweep."""

from __future__ import annotations

import signal
import sys
from collections import Counter
from pathlib import Path

from gentool import results, rundir, stops
from gentool.cli import options as o
from gentool.errors import GentoolError, UsageError, bad_value
from gentool.history import read_records
from gentool.progress import LOG_EVERY, Pace, make_reporter
from gentool.sweep_options import SWEEPS_ENV, SweepOptions

# gentool.sweep (which imports torch) and gentool.guards are imported in the functions that use them, so that
# `gentool --help` never loads torch.

# in results.csv/json but not in the terminal's table
DETAIL_COLUMNS = ("run_dir", "kid_std", "kid_subset_size", "is_std", "classes", "vae_n")


def default_out(model: str, data: str) -> Path:
    """$GENTOOL_SWEEPS (else sweeps)/<model>-<data>: the same command finds the same folder again, so re-running it
    resumes."""
    name = Path(data).name if Path(data).expanduser().is_dir() else data.lower()
    from gentool.environment import home_folder

    return (home_folder(SWEEPS_ENV, "the folder new sweeps go in") or Path("sweeps")) / f"{model}-{name}"


def show_trials(spec: sw.SweepSpec, json_out: bool) -> None:
    """--list: the trials with their values, status and run directory (from the manifest when there is one)."""
    from gentool import sweep as sw

    trials = spec.trials()
    if (spec.out / sw.MANIFEST).exists():
        manifest = sw.read_manifest(spec.out)
        diffs = sw.differences(manifest, spec)
        if diffs:
            raise UsageError(f"--out: {spec.out} holds a different sweep: {'; '.join(diffs)}")
        trials = manifest["trials"]
    axes = dict.fromkeys(a for t in trials for a in t["values"])
    named = results.setting_columns(axes, {"trial", "status", "run_dir"})
    rows = [{"trial": t["index"], **{named[a]: v for a, v in t["values"].items()}, "status": t["status"],
             "run_dir": str(spec.out / t["run_dir"])} for t in trials]
    if json_out:
        o.print_json(rows)
    else:
        results.print_table(rows, f"{len(rows)} trials of {spec.model} on {spec.data}")


class TrialsBar:
    """Overall progress of worker processes: trials done / running (with their epoch) / failed, as one rich bar on
    a terminal; in a log, a first line, one when a trial ends and otherwise at the pace of progress lines (`Pace`:
    a line per epoch of each trial was hundreds); nothing with --quiet."""

    def __init__(self, sweep_dir: Path, total: int, epochs: int, quiet: bool):
        self.sweep_dir, self.epochs, self.quiet, self.last = sweep_dir, epochs, quiet, ""
        self.ended, self.lines = (0, 0), Pace(LOG_EVERY)  # trials done and failed at the last line
        self.progress = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                     console=Console(stderr=True))
            self.task = self.progress.add_task("sweep", total=total, status="")
            self.progress.start()

    def _epoch(self, trial: dict) -> str:
        path = self.sweep_dir / trial["run_dir"] / rundir.METRICS
        try:
            records = read_records(path)
        except GentoolError:  # caught mid-rename on a slow file system: the next poll reads it
            records = []
        return f"#{trial['index']} epoch {records[-1]['epoch'] if records else 0}/{self.epochs}"

    def __call__(self, manifest: dict, running: list[int]) -> None:
        from gentool import sweep as sw

        trials = manifest["trials"]
        count = {s: sum(t["status"] == s for t in trials) for s in (sw.DONE, sw.FAILED)}
        busy = [self._epoch(trials[i]) for i in running if trials[i]["status"] not in (sw.DONE, sw.FAILED)]
        detail = f" ({', '.join(busy)})" if busy else ""
        line = f"{count[sw.DONE]} done, {len(busy)} running{detail}, {count[sw.FAILED]} failed"
        ended = (count[sw.DONE], count[sw.FAILED])
        if self.progress is not None:
            self.progress.update(self.task, completed=sum(ended), status=line)
        elif not self.quiet and line != self.last and self.lines.due(last=ended != self.ended or not self.last):
            print(f"trials: {line}", file=sys.stderr, flush=True)
            self.last, self.ended = line, ended

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def run_all(spec: sw.SweepSpec, manifest: dict, workers: int, quiet: bool) -> None:
    """Train every trial not finished yet: here one after another, or in `workers` processes."""
    import torch

    from gentool import sweep as sw
    from gentool import sweep_workers as sww

    todo = [t["index"] for t in manifest["trials"] if not sw.is_finished(t, spec.runtime)]
    if workers == 1:
        def announce(trial):
            if not quiet:
                values = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial["values"].items())
                o.err_console().print(f"[bold]trial {trial['index']}[/] of {len(manifest['trials'])}: "
                                      f"{o.escape(values)}", highlight=False)
        sw.run_in_process(spec.out, todo, spec.runtime, lambda: make_reporter(quiet), announce)
        return
    bar = TrialsBar(spec.out, len(manifest["trials"]), spec.runtime["epochs"], quiet)
    try:
        sww.run_workers(spec.out, todo, spec.runtime, workers, max(1, torch.get_num_threads() // workers), bar)
    finally:
        bar.close()


def interrupted(sweep_dir: Path, exc: BaseException) -> Interrupted:
    """The one line for a stopped sweep: where its trials stand and how to go on (exit code 130, 143 for SIGTERM)."""
    from gentool import sweep as sw
    from gentool.guards import Interrupted

    trials = sw.read_manifest(sweep_dir)["trials"]
    counts = Counter(t["status"] for t in trials)
    where = ", ".join(f"{n} {status}" for status, n in counts.items())
    signum = exc.exit_code - 128 if isinstance(exc, Interrupted) else getattr(exc, "signum", signal.SIGINT)
    return Interrupted(f"sweep {stops.word(signum)} ({where}); re-run the same command to resume it", signum)


def show_report(report: dict, json_out: bool) -> None:
    """The results table (or JSON), each failed trial's error, and where the files went."""
    if json_out:
        o.print_json(report)
        return
    rows = report["trials"]
    hide = DETAIL_COLUMNS + (() if any(r.get("error") for r in rows) else ("error",))
    results.print_table(rows, f"sweep {report['sweep_dir']}", hide=hide)
    if report.get("by_config"):
        results.print_table(*config_table(report["by_config"], report.get("metric")))
    o.out_console().print("written: " + ", ".join(report["files"]), markup=False, highlight=False)


def config_table(rows: list[dict], metric: str | None) -> tuple[list[dict], str]:
    """By configuration: each metric as mean ± std over the seeds, and the standing on the heat map's metric (the
    rows and the title of their table)."""
    from gentool import seed_stats

    means = [k[:-len("_std")] for k in results.columns(rows) if k.endswith("_std")]
    spread = {f"{m}{s}" for m in means for s in ("_std", "_min", "_max")} | {f"{metric}_vs_best", *means}
    shown = [{**{k: v for k, v in r.items() if k not in spread},
              **({f"vs best ({metric})": r.get(f"{metric}_vs_best")} if metric else {}),
              **{m: seed_stats.shown(r, m) for m in means}} for r in rows]
    return shown, f"by configuration: {seed_stats.SPREAD}; {seed_stats.RULE}"


@o.cli_errors
@o.options_command(SweepOptions)
def sweep(opts: SweepOptions, quiet: o.QuietOpt = False, json_out: o.JsonOpt = False):
    """Train MODEL over a grid of latent sizes, widths and other settings; each trial is a run directory under the
    sweep directory, recorded in its sweep.json. Re-running the same command resumes it."""
    from gentool import sweep as sw
    from gentool.guards import Interrupted

    opts.validate()
    if opts.threads:  # worker processes get an even share of this (run_workers)
        import torch

        torch.set_num_threads(opts.threads)
    spec = sw.SweepSpec(opts.model, opts.data, opts.axes(),
                        Path(opts.out) if opts.out else default_out(opts.model, opts.data), opts.options(),
                        opts.runtime())
    if opts.tensorboard:
        from gentool.loggers.tensorboard import AUTO, DIR_NAME, check_target

        check_target(opts.tensorboard)
        spec.runtime["tensorboard"] = str(spec.out / DIR_NAME) if opts.tensorboard == AUTO else opts.tensorboard
    if opts.list_trials:  # the trials listed are those the sweep would run: checked as it checks them
        from gentool.sweep_checks import check_trials

        check_trials(spec, sw.trial_options)
        return show_trials(spec, json_out)
    sw.check_spec(spec)
    manifest = sw.open_sweep(spec)
    if opts.evaluate:
        sw.prepare_evaluation(spec, make_reporter(quiet))  # a terminal's bar, else lines at the pace of train's
    if opts.trial is not None:
        return run_one(spec, manifest, opts.trial, quiet, json_out, opts.metric)
    try:
        run_all(spec, manifest, opts.workers, quiet)
    except (KeyboardInterrupt, Interrupted) as exc:
        raise interrupted(spec.out, exc) from None
    report = sw.report(spec.out, opts.metric)
    show_report(report, json_out)
    if not report["ok"]:
        raise unfinished(spec.out, report["trials"])


def unfinished(sweep_dir: Path, rows: list[dict]) -> GentoolError:
    """The one line for a sweep left unfinished: trials another process is training now (named with it), and
    those that failed or were stopped."""
    from gentool import sweep as sw

    busy = sw.busy_trials(sweep_dir)
    stopped = [r["trial"] for r in rows if r["status"] != sw.DONE and r["trial"] not in busy]
    parts = []
    if busy:
        holders = "; ".join(f"{', '.join(map(str, [i for i in busy if busy[i] == h]))}: {h}"
                            for h in dict.fromkeys(busy.values()))
        parts.append(f"{len(busy)} of {len(rows)} trials are being trained by another process right now "
                     f"(trial {holders}); the sweep's results are written when they finish")
    if stopped:  # the first causes here too: a batch job's log may keep stderr alone, not the table on stdout
        causes = [f"trial {r['trial']}: {str(r['error'])[:300]}" for r in rows
                  if r["trial"] in stopped and r.get("error")]
        why = (f" ({'; '.join(causes[:2])}{'; …' if len(causes) > 2 else ''})" if causes
               else " (see the status column)")
        parts.append(f"{len(stopped)} of {len(rows)} trials did not finish{why}; "
                     f"{'fix that, then ' if causes else ''}re-run the same command to retry them")
    return GentoolError("; ".join(parts))


def run_one(spec: sw.SweepSpec, manifest: dict, index: int, quiet: bool, json_out: bool, metric: str | None) -> None:
    """--trial K: train that trial here; the process that finishes the sweep's last trial writes the results."""
    from gentool import sweep as sw
    from gentool.guards import Interrupted

    if not 0 <= index < len(manifest["trials"]):
        raise bad_value("--trial", index, f"a trial index from 0 to {len(manifest['trials']) - 1}")
    try:
        entry = sw.run_trial(spec.out, index, spec.runtime, make_reporter(quiet))
    except (KeyboardInterrupt, Interrupted) as exc:
        raise interrupted(spec.out, exc) from None
    if entry["status"] == sw.BUSY:
        raise GentoolError(f"--trial: trial {index} is being trained by another process right now: {entry['holder']}")
    trials = sw.read_manifest(spec.out)["trials"]
    if all(t["status"] in (sw.DONE, sw.FAILED) for t in trials):
        sw.report(spec.out, metric)
    if json_out:
        o.print_json(entry)
    elif not quiet:
        o.out_console().print(f"trial {index}: {entry['status']}  run directory: "
                              f"{o.escape(spec.out / entry['run_dir'])}",
                              highlight=False)
    if entry["status"] != sw.DONE:
        raise GentoolError(f"trial {index} failed: {entry.get('error')}")
