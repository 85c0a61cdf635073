"""`gentool report PATH`: one self-contained HTML page for a run, a sweep or a folder of runs: a view over the files
they recorded (collect.py reads them through readers.py's bounded readers, views.py arranges them and draws the
figures in memory, render.py fills the templates)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from gentool.errors import UsageError
from gentool.paths import check_replace, prepare_output

REPORT_HTML = "report.html"
LARGE_MB = 20  # above this many MB a page is too large for many mail servers


@dataclass(kw_only=True)
class ReportOptions:
    """What `gentool report` was asked for."""

    path: str
    out: str | None = None  # default: PATH/report.html
    overwrite: bool = False
    animations: bool = True  # embed each run's progress.gif

    def target(self) -> Path:
        """The output file, checked: not a folder, not an existing file unless overwrite, in an existing folder."""
        out = Path(self.out) if self.out else Path(self.path) / REPORT_HTML
        if os.path.isdir(out):  # os.path: a name too long is prepare_output's to say, not an OSError here
            raise UsageError(f"--out: {out} is a directory; expected a file path for the HTML report")
        check_replace(out, "--out", self.overwrite)
        if not out.parent.is_dir():
            raise UsageError(f"--out: folder {out.parent} does not exist")
        return prepare_output(out, "--out")  # written now, before the runs are read and drawn: not after


def build_report(opts: ReportOptions) -> dict:
    """Write the report of opts.path; returns {"report": its path, "kind": run/sweep/folder, "runs": runs shown,
    "bytes": its size}. A page too large for many mail servers gives a warning."""
    from gentool.report import collect, render, views

    path = Path(opts.path)
    kind = collect.kind_of(path)
    out = opts.target()
    taken: set[str] = set()
    if kind == "run":
        view = views.run_view(collect.collect_run(path, path.resolve().name, collect.slug("run", taken),
                                                  opts.animations))
        runs = 1
    elif kind == "sweep":
        view = views.sweep_view(collect.collect_sweep(path, taken, opts.animations))
        runs = sum(t["run"] is not None for t in view["trials"])
    else:
        folders = collect.find_sweeps(path)
        found = collect.collect_runs(path, taken, opts.animations, skip=folders)
        sweeps = collect.collect_sweeps(path, folders, taken, opts.animations)
        view = views.folder_view(path, found, sweeps)
        runs = sum("error" not in r for r in found) + sum(t["run"] is not None for s in view["sweeps"]
                                                          if "error" not in s for t in s["trials"])
    html = render.render_page(kind, view).encode("utf-8")
    render.write_page(out, html)
    if len(html) > LARGE_MB * 2**20:
        warnings.warn(f"{out} is {len(html) / 2**20:.0f} MB, more than many mail servers accept; --no-animations "
                      f"leaves out the progress animations", stacklevel=2)
    return {"report": str(out), "kind": kind, "runs": runs, "bytes": len(html)}
