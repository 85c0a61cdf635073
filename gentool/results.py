"""Comparing runs: one row per run (model, the values that set it apart, epochs, final metrics) from the files a
run directory holds, written as a rich table, CSV or JSON. Used by `gentool summary DIR` and by sweeps."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.table import Table
from rich.text import Text

from gentool import rundir
from gentool.errors import printable
from gentool.fileio import atomic_write_bytes, atomic_write_json
from gentool.history import BOOKKEEPING, finished_epochs, read_records

ALWAYS_SHOWN = ("latent_dim", "width")  # the study's two axes of model size
GEOMETRY = {"channels", "image_height", "image_width", "num_classes"}
SETTING = "{} (setting)"  # a setting's column where a metric has its name (setting_columns)


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


def setting_columns(settings, others) -> dict[str, str]:
    """Each setting's column in a table that also has the `others` columns (metrics, epochs, status...): its own
    name, or SETTING's where one of those has it. distill's `adversarial` is both the critic's weight and the loss
    term it records: the metric's value stood under one header for both and the setting was lost. Metrics keep
    their names: they are what is compared (and what --metric names)."""
    others = set(others)
    return {k: SETTING.format(k) if k in others else k for k in settings}


def setting_value(row: dict, name: str):
    """The value of setting `name` in a row made with `setting_columns`, under whichever name it has there."""
    return row[SETTING.format(name)] if SETTING.format(name) in row else row.get(name)


def compare_runs(root: Path, run_dirs: list[Path] | None = None) -> list[dict]:
    """Rows for every run below `root` (or for `run_dirs` below it): latent size and width always, and the other
    config fields that differ (named apart from the metrics, `setting_columns`)."""
    runs = [run_row(d, Path(root)) for d in (find_runs(root) if run_dirs is None else run_dirs)]
    fields = dict.fromkeys(k for r in runs for k in r["config"] if k not in GEOMETRY)
    varying = [k for k in fields if k in ALWAYS_SHOWN or len({repr(r["config"].get(k)) for r in runs}) > 1]
    named = setting_columns(varying, {k for r in runs for k in r if k != "config"})
    rows = []
    for r in runs:
        config = r.pop("config")
        rows.append({"run": r.pop("run"), "model": r.pop("model"), "data": r.pop("data"),
                     **{named[k]: config.get(k) for k in varying}, **r})
    return rows


TRAILING = ("seconds", "partial")  # about the run rather than a metric: last, for one run as for a folder of them


def columns(rows: list[dict]) -> list[str]:
    """Every key in the rows, in first-seen order, TRAILING last (first-seen order put `partial` before `seconds`
    for a run stopped inside its last epoch, and after it when the folder's first run was not)."""
    seen = list(dict.fromkeys(k for r in rows for k in r))
    return [k for k in seen if k not in TRAILING] + [k for k in TRAILING if k in seen]


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


def table(rows: list[dict], title: str, names: list[str]) -> Table:
    """A rich table of the rows' `names` columns (floats to 4 significant digits)."""
    result = Table(title=_text(title))
    for name in names:  # fold rather than cut: a narrow terminal or batch log still shows every name and digit
        result.add_column(_text(name), overflow="fold")
    for row in rows:
        style = "red" if row.get("status") == "failed" else None
        result.add_row(*(_cell(row.get(c)) for c in names), style=style)
    return result


def print_table(rows: list[dict], title: str, hide: tuple[str, ...] = ()) -> None:
    """The rows on stdout as tables as wide as the terminal or, in a file or pipe (no width to fit), TABLE_WIDTH
    (the console every command prints its results with): runs of several families a table each, with the columns
    its runs have; columns beyond the width in further tables that repeat the first (the run). One table of every
    column was 618 columns wide in a batch log."""
    from gentool.cli.options import out_console

    console = out_console()
    tables = list(_tables(rows, title, hide, console.width))
    for shown, block, names in tables:
        if len(tables) == 1:
            console.print(table(block, shown, names))
        else:  # a line of its own: a title wider than its table's few columns was wrapped inside them
            console.print(_text(shown), soft_wrap=True)
            console.print(table(block, "", names))


def _tables(rows: list[dict], title: str, hide: tuple[str, ...], width: int):
    """(title, rows, columns) of each table `print_table` prints: a family's columns that any of its runs has."""
    for block_title, block in blocks(rows, title):
        names = [c for c in columns(block) if c not in hide and any(r.get(c) is not None for r in block)]
        parts = column_groups(block, names, width)
        for k, part in enumerate(parts, 1):
            yield (f"{block_title}, columns {k} of {len(parts)}" if len(parts) > 1 else block_title), block, part


def blocks(rows: list[dict], title: str) -> list[tuple[str, list[dict]]]:
    """The rows of each model family with its title, or all the rows when they are of one (a sweep)."""
    models = list(dict.fromkeys(r.get("model") for r in rows))
    if len(models) < 2:
        return [(title, rows)]
    picked = [[{k: v for k, v in r.items() if k != "model"} for r in rows if r.get("model") == m] for m in models]
    return [(f"{title} · {model} ({len(block)})", block) for model, block in zip(models, picked)]


def column_groups(rows: list[dict], names: list[str], width: int) -> list[list[str]]:
    """`names` in groups whose table fits `width` columns, each led by the first name (what tells the rows
    apart); a column wider than that alone is folded by rich."""
    if not names:
        return [names]
    size = {c: 3 + max(len(_text(c)), *(len(_cell(r.get(c))) for r in rows)) for c in names}  # padding, rule
    groups = [[names[0]]]
    for name in names[1:]:
        if len(groups[-1]) > 1 and 1 + sum(size[c] for c in groups[-1]) + size[name] > width:
            groups.append([names[0]])
        groups[-1].append(name)
    return groups


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
