"""Comparing runs: one row per run (model, the values that set it apart, epochs, final metrics) from the files a
run directory holds, written as a rich table, CSV or JSON. Used by `gentool summary DIR` and by sweeps."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gentool import rundir
from gentool.errors import printable
from gentool.fileio import atomic_write_bytes, atomic_write_json
from gentool.history import BOOKKEEPING, finished_epochs, read_records

ALWAYS_SHOWN = ("latent_dim", "width")  # the study's two axes of model size
GEOMETRY = {"channels", "image_height", "image_width", "num_classes"}


def final_metrics(records: list[dict]) -> dict:
    """The last epoch's metrics without bookkeeping (with `partial: true` when that epoch was stopped inside), plus
    `seconds`: the training time over all epochs."""
    if not records:
        return {}
    final = {k: v for k, v in records[-1].items() if k not in BOOKKEEPING}
    final["seconds"] = round(sum(r.get("seconds", 0) for r in records), 1)
    return final


def find_runs(root: Path) -> list[Path]:
    """Run directories at or below `root` (folders holding a config.json written by train), sorted."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob(rundir.CONFIG)})


def run_row(run_dir: Path, root: Path) -> dict:
    """One run's model, data, config, epochs and final metrics (config under `config`, for picking columns)."""
    config = rundir.read_run_config(run_dir / rundir.CONFIG, "TARGET")
    records = read_records(run_dir / rundir.METRICS, "TARGET")
    name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
    return {"run": name, "model": config.get("model"), "data": (config.get("data") or {}).get("name"),
            "config": config.get("config", {}), "epochs": finished_epochs(records),
            **final_metrics(records)}


def compare_runs(root: Path, run_dirs: list[Path] | None = None) -> list[dict]:
    """Rows for every run below `root` (or for `run_dirs` below it): latent size and width always, and the other
    config fields that differ."""
    runs = [run_row(d, Path(root)) for d in (find_runs(root) if run_dirs is None else run_dirs)]
    fields = dict.fromkeys(k for r in runs for k in r["config"] if k not in GEOMETRY)
    varying = [k for k in fields if k in ALWAYS_SHOWN or len({repr(r["config"].get(k)) for r in runs}) > 1]
    rows = []
    for r in runs:
        config = r.pop("config")
        rows.append({"run": r.pop("run"), "model": r.pop("model"), "data": r.pop("data"),
                     **{k: config.get(k) for k in varying}, **r})
    return rows


def columns(rows: list[dict]) -> list[str]:
    """Every key in the rows, in first-seen order."""
    return list(dict.fromkeys(k for r in rows for k in r))


def _cell(value) -> Text:
    if value is None:
        return Text("")
    if isinstance(value, float):
        return Text(f"{value:.4g}")
    return _text(value)


def _text(value) -> Text:
    """A run's name, value or path as the table shows it: as is (never rich markup), its control characters
    escaped (a run's files may hold anything)."""
    return Text(printable(str(value)))


def table(rows: list[dict], title: str, hide: tuple[str, ...] = ()) -> Table:
    """A rich table of the rows (floats to 4 significant digits); `hide` drops columns."""
    names = [c for c in columns(rows) if c not in hide]
    result = Table(title=_text(title))
    for name in names:  # fold rather than cut: a narrow terminal or batch log still shows every name and digit
        result.add_column(_text(name), overflow="fold")
    for row in rows:
        style = "red" if row.get("status") == "failed" else None
        result.add_row(*(_cell(row.get(c)) for c in names), style=style)
    return result


def print_table(result: Table) -> None:
    """Print on stdout; when that is a file or pipe, at the table's full width rather than 80 columns."""
    console = Console()
    if not console.is_terminal:
        natural = console.measure(result, options=console.options.update_width(10_000)).maximum
        console = Console(width=max(console.width, natural))
    console.print(result)


def write_csv(path: Path, rows: list[dict]) -> None:
    """The rows as CSV (one column per key seen in any row), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def write_results(folder: Path, rows: list[dict], name: str = "results") -> list[Path]:
    """NAME.csv and NAME.json in `folder`; returns their paths."""
    csv_path, json_path = Path(folder) / f"{name}.csv", Path(folder) / f"{name}.json"
    write_csv(csv_path, rows)
    atomic_write_json(json_path, rows)
    return [csv_path, json_path]
