"""`gentool report PATH`: one self-contained HTML page for a run, a sweep or a folder of runs: a view over the files
they recorded (collect.py reads them, views.py arranges them and draws the figures in memory, render.py fills the
templates)."""

from __future__ import annotations

from pathlib import Path

from gentool.errors import UsageError

REPORT_HTML = "report.html"


def default_out(path: Path) -> Path:
    return Path(path) / REPORT_HTML


def build_report(path: str | Path, out: str | Path | None = None, overwrite: bool = False) -> dict:
    """Write the report of PATH to `out` (default PATH/report.html); returns {"report", "kind", "runs"}."""
    from gentool.report import collect, render, views

    path = Path(path)
    kind = collect.kind_of(path)
    out = Path(out) if out else default_out(path)
    if out.is_dir():
        raise UsageError(f"--out: {out} is a directory; expected a file path for the HTML report")
    if out.exists() and not overwrite:
        raise UsageError(f"--out: {out} already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise UsageError(f"--out: folder {out.parent} does not exist")
    taken: set[str] = set()
    if kind == "run":
        run = collect.collect_run(path, path.resolve().name, collect.slug("run", taken))
        view, runs = views.run_view(run), 1
    elif kind == "sweep":
        view = views.sweep_view(collect.collect_sweep(path, taken))
        runs = sum(t["run"] is not None for t in view["trials"])
    else:
        found = collect.collect_runs(path, taken)
        view, runs = views.folder_view(path, found), len(found)
    render.write_page(out, render.render_page(kind, view))
    return {"report": str(out), "kind": kind, "runs": runs}
