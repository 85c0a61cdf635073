"""Figures: a run's loss curves (loss.png) and samples over epochs (progress.gif), and a sweep's sample matrix,
training curves and heat map. Drawn with matplotlib's Agg backend and written atomically.

Nothing here knows a model family: panels come from the metric names found in the records, so a plugin's metrics
are drawn too. matplotlib is imported only when a figure is drawn, which keeps the CLI's start-up fast.
"""

from __future__ import annotations

import io
import itertools
import math
import textwrap
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from gentool import rundir, seed_stats
from gentool.fileio import atomic_write_bytes, open_regular
from gentool.images import make_grid, to_uint8, write_gif
from gentool.results import BOOKKEEPING
from gentool.hooks import TrainHook
from gentool.history import epoch_position as record_position, finished, partial_records

LOSS_PNG, PROGRESS_GIF = rundir.LOSS_PNG, rundir.PROGRESS_GIF
MATRIX_PNG, CURVES_PNG, HEATMAP_PNG = "samples_matrix.png", "curves.png", "heatmap.png"
REFRESH_EVERY = 10  # epochs between loss.png refreshes during a run (the final one is drawn at the end)
MAX_FRAMES = 120  # progress.gif keeps at most this many epochs, evenly spread, always the last one
STRIP = 8  # samples per trial in the sweep's sample matrix
PANELS_PER_ROW = 3
HELDOUT = "heldout_"  # a held-out metric's prefix: drawn beside its training curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path | io.BytesIO) -> Path | io.BytesIO:
    """Write the figure as PNG to `path` atomically, or into it when it is a binary buffer (the HTML report draws
    in memory)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    if isinstance(path, io.BytesIO):
        path.write(buf.getvalue())
    else:
        atomic_write_bytes(path, buf.getvalue())
    return path


def metric_keys(records: list[dict]) -> list[str]:
    """The numeric metric names found in the records, in first-seen order, without the bookkeeping fields."""
    keys = dict.fromkeys(k for r in records for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return [k for k in keys if k not in BOOKKEEPING]


def panel_of(key: str) -> str:
    """Which panel a metric is drawn in: losses share one, accuracies one, distance estimates (JSD, EMD) one, FID
    and mode counts one each; any other metric (a loss term such as the VAE's KL, whose scale differs) its own. A
    held-out metric (heldout_<name>) goes beside its training curve."""
    base = key.removeprefix(HELDOUT)
    k = base.lower()
    groups = (("loss", "losses"), ("acc", "accuracy"), ("jsd", "distance estimate"), ("emd", "distance estimate"),
              ("fid", "FID"), ("mode", "modes"))
    return next((panel for part, panel in groups if part in k), base)


def primary_loss(keys) -> str | None:
    """The key that stands for "the training loss": `loss` itself, else the first one naming a loss."""
    keys = list(keys)
    return "loss" if "loss" in keys else next((k for k in keys if "loss" in k.lower()), None)


def plot_losses(history: dict, path: Path, title: str = "") -> Path | None:
    """Draw the run's curves (one panel per metric group) with its events as vertical lines; None without records.
    A held-out curve (heldout_<name>) is dashed, in the colour of its training curve."""
    records = history.get("epochs", [])
    keys = metric_keys(records)
    if not keys:
        return None
    panels: dict[str, list[str]] = {}
    for key in sorted(keys, key=lambda k: k.startswith(HELDOUT)):  # training curves first: they pick the colours
        panels.setdefault(panel_of(key), []).append(key)
    plt = _pyplot()
    cols = min(len(panels), PANELS_PER_ROW)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharex=True,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (name, names) in zip(axes.flat, panels.items()):
        colours: dict[str, str] = {}
        for key in names:
            base = key.removeprefix(HELDOUT)
            colours[key] = _plot_metric(ax, key, records, colours.get(base), "--" if key != base else "-")
        focus_ylim(ax, [[r[k] for r in finished(records) if _number(r.get(k))] for k in names])
        _mark_events(ax, history.get("events", []))
        _style(ax, name)
        ax.legend(fontsize=8)
    whole_epoch_axis(axes.flat[0], records)
    fig.suptitle(title)
    return _save(fig, path)


def whole_epoch_axis(ax, records: list[dict]) -> None:
    """Records less than an epoch apart (a run stopped inside its first epoch) get an axis from 0 past the next
    whole epoch: over a tiny range matplotlib ticks fractions of an epoch (0.3750, 0.3800, …) that overlap."""
    xs = [epoch_position(r) for r in records if _number(r.get("epoch")) and _number(r.get("epoch_fraction", 1.0))]
    if xs and max(xs) - min(xs) < 1:
        ax.set_xlim(0, math.ceil(max(xs)) + 0.25)


def epoch_position(record: dict) -> float:
    """Where a record sits on the epoch axis: a finished epoch at its number, a partial one at the share done."""
    return record_position(record)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def focus_ylim(ax, curves: list[list[float]]) -> bool:
    """Scale the y-axis to the curves from their second epoch on when their first epochs lie beyond that range by
    more than its width (a VAE's first-epoch loss flattens every later difference, the study's overfitting among
    them); the first points are then off the axis, which the axis label says. Returns whether it did."""
    later = [v for values in curves for v in values[1:]]
    first = [values[0] for values in curves if len(values) > 1]
    if len(later) < 2 or not first:
        return False
    lo, hi = min(later), max(later)
    width = hi - lo
    if width <= 0 or (max(first) <= hi + width and min(first) >= lo - width):
        return False
    ax.set_ylim(lo - 0.08 * width, hi + 0.08 * width)
    ax.set_ylabel("epoch 1 off scale", fontsize=7, color="grey")
    return True


def _plot_metric(ax, key: str, records: list[dict], color=None, linestyle: str = "-") -> str | None:
    """One metric's curve over the finished epochs, and a partial epoch's means (a run stopped inside an epoch) as a
    hollow diamond at the fraction of the epoch done, joined to the curve by a dotted line. Returns its colour."""
    points = [(r["epoch"], r[key]) for r in finished(records) if isinstance(r.get(key), (int, float))]
    if points:
        (line,) = ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, label=key,
                          color=color, linestyle=linestyle)
        color = line.get_color()
    # The epoch in progress: one record when a run stopped inside it, or its running means every few minutes while
    # a long epoch is drawn (gentool.train.draw_progress); joined by a dotted line, the latest one labelled.
    partial = sorted(((epoch_position(r), r[key], r) for r in partial_records(records)
                      if isinstance(r.get(key), (int, float))), key=lambda p: p[0])
    if partial:
        x, y, last = partial[-1]
        label = f"{key}, epoch {last['epoch']} so far ({last.get('epoch_fraction', 1.0):.0%})"
        (mark,) = ax.plot([x], [y], marker="D", markersize=6, fillstyle="none", linestyle="none", color=color,
                          label=label)
        color = mark.get_color()
        trail = points[-1:] + [(px, py) for px, py, _ in partial]
        if len(trail) > 1:
            ax.plot(*zip(*trail), linestyle=":", marker=".", markersize=3, color=color)
    return color


def _style(ax, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set(title=title, xlabel="epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _mark_events(ax, events: list[dict]) -> None:
    # a precision check that kept the choice changed nothing worth a line
    for event in (e for e in events if isinstance(e.get("epoch"), (int, float))
                  and not (e.get("kind") == "precision" and not e.get("switched"))):
        ax.axvline(event["epoch"], color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(str(event.get("kind", "")), (event["epoch"], 1), xycoords=("data", "axes fraction"),
                    rotation=90, fontsize=7, color="grey", va="top", ha="right")


def write_progress_gif(run_dir: Path, path: Path | None = None) -> Path | None:
    """Animate the run's samples/epoch_NNNN.png grids, each frame captioned with its epoch; None without grids."""
    grids = sorted((Path(run_dir) / rundir.SAMPLES).glob("epoch_*.png"))
    if not grids:
        return None
    if len(grids) > MAX_FRAMES:
        picks = np.linspace(0, len(grids) - 1, MAX_FRAMES).round().astype(int)
        grids = [grids[i] for i in sorted(set(picks))]
    frames = [_captioned(_read_grid(g), f"epoch {int(g.stem.split('_')[1])}") for g in grids]
    path = path or Path(run_dir) / PROGRESS_GIF
    write_gif(path, frames, [200] * (len(frames) - 1) + [1500])
    return path


def _read_grid(path: Path) -> np.ndarray:
    with open_regular(path) as f:  # a named pipe there would block a read by name
        return iio.imread(f, extension=".png")


def _captioned(image: np.ndarray, text: str) -> np.ndarray:
    """An RGB copy of `image` with `text` in a black band above it."""
    from PIL import Image, ImageDraw

    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    canvas = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + 14))
    canvas.paste(Image.fromarray(rgb), (0, 14))
    ImageDraw.Draw(canvas).text((3, 1), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def draw_run_figures(run_dir: Path, history: dict | None = None, gif: bool = True) -> list[Path]:
    """loss.png (from `history`, else the run's metrics.json) and, with `gif`, progress.gif; returns what was drawn."""
    run_dir = Path(run_dir)
    if history is None:
        history = rundir.read_metrics(run_dir / rundir.METRICS)
    title = f"{history.get('model', '')} · {run_dir.name}"
    drawn = [plot_losses(history, run_dir / LOSS_PNG, title)]
    if gif:
        drawn.append(write_progress_gif(run_dir))
    return [p for p in drawn if p is not None]


class FigureHook(TrainHook):
    """Draws loss.png every REFRESH_EVERY epochs, every few minutes inside a long epoch (with the epoch in progress),
    when a signal stops the run and at its end, and progress.gif at the end. A figure that cannot be drawn is a
    warning: it never costs the run."""

    def on_epoch_end(self, session, record: dict, reporter) -> None:
        if record["epoch"] % REFRESH_EVERY == 0:
            self._draw(session, reporter, gif=False)

    def on_progress(self, session, history: dict, reporter) -> None:
        self._draw(session, reporter, gif=False, history=history)

    def on_train_end(self, session, reporter) -> None:
        self._draw(session, reporter, gif=True)

    @staticmethod
    def _draw(session, reporter, gif: bool, history: dict | None = None) -> None:
        history = {**(history or session.history), "model": session.model.name}
        try:
            draw_run_figures(session.run_dir, history, gif)
        except Exception as exc:  # a plotting problem must not fail hours of training
            reporter.message(f"warning: figures for {session.run_dir} not drawn ({type(exc).__name__}: {exc})")


# --- sweeps ----------------------------------------------------------------------------------------------------


def sweep_layout(grid: dict[str, list]) -> tuple[str | None, list[str], list[tuple], list]:
    """Rows × columns for a sweep's figures: columns are the latent sizes (else the last axis), rows every
    combination of the other axes (the complexity: width, params); the seeds of a configuration share its cell.
    Returns (column axis, row axes, row value tuples, column values); no column axis when only seeds vary."""
    axes = [a for a in grid if a != seed_stats.SEED]
    col_axis = "latent_dim" if "latent_dim" in axes else axes[-1] if axes else None
    row_axes = [a for a in axes if a != col_axis]
    rows = list(itertools.product(*(grid[a] for a in row_axes)))
    return col_axis, row_axes, rows, list(grid[col_axis]) if col_axis else [None]


def _label(axes: list[str | None], values: tuple) -> str:
    return ", ".join(f"{a}={v:g}" if isinstance(v, float) else f"{a}={v}" for a, v in zip(axes, values)
                     if a is not None) or "all"


def _cells(grid: dict, trials: list[dict]):
    """(row index, column index, trial) for every trial, placed by its values (a configuration's seeds alike)."""
    col_axis, row_axes, rows, cols = sweep_layout(grid)
    for t in trials:
        v = t["values"]
        yield rows.index(tuple(v[a] for a in row_axes)), cols.index(v[col_axis]) if col_axis else 0, t


def _strip(run_dir: Path, seed: int) -> np.ndarray | None:
    from gentool.checkpoint import load_checkpoint

    ckpt = Path(run_dir) / rundir.LAST
    if not ckpt.exists():
        return None
    images = load_checkpoint(ckpt).model.generate(STRIP, torch.Generator().manual_seed(seed))
    return make_grid(to_uint8(images), 1, STRIP)


def plot_sample_matrix(grid: dict, trials: list[dict], path: Path, seed: int = 0) -> Path:
    """One strip of samples per trial (drawn from its last checkpoint with the same seed), laid out rows × columns
    as `sweep_layout` says; trials without a checkpoint stay blank."""
    col_axis, row_axes, rows, cols = sweep_layout(grid)
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.2 * len(cols) + 0.8, 0.5 * len(rows) + 0.5),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    first = (grid.get(seed_stats.SEED) or [None])[0]  # one strip per cell: the first seed's
    for r, c, trial in _cells(grid, trials):
        mine = trial.get("status") == "done" and trial["values"].get(seed_stats.SEED) == first
        strip = _strip(trial["path"], seed) if mine else None
        if strip is not None:
            axes[r][c].imshow(strip[..., 0] if strip.shape[2] == 1 else strip, cmap="gray", vmin=0, vmax=255)
    for c, value in enumerate(cols):
        axes[0][c].set_title(_label([col_axis], (value,)), fontsize=9)
    for r, values in enumerate(rows):
        axes[r][0].set_ylabel(_label(row_axes, values), fontsize=8, rotation=0, ha="right", va="center")
    return _save(fig, path)


def curve_terms(records: list[dict]) -> list[str]:
    """What a sweep's curves show for a trial: its training loss, then every other term with a held-out curve
    (the VAE's reconstruction and KL)."""
    keys = metric_keys(records)
    main = primary_loss(k for k in keys if not k.startswith(HELDOUT))
    others = [k for k in keys if not k.startswith(HELDOUT) and k != main and HELDOUT + k in keys]
    return ([main] if main else []) + others


def plot_sweep_curves(grid: dict, trials: list[dict], path: Path) -> Path | None:
    """Each trial's curves over epochs: one column of panels per row of the layout (the complexity), one row per
    term (training loss, then the terms recorded on held-out data too), one colour per column value (the latent
    size); training solid, held-out dashed. Panels of a term share their y-axis, scaled so that a first epoch far
    above the rest does not flatten them. None when no trial has records."""
    col_axis, row_axes, rows, cols = sweep_layout(grid)
    found = []
    for r, c, trial in sorted(_cells(grid, trials), key=lambda cell: cell[:2]):
        metrics = Path(trial["path"]) / rundir.METRICS
        records = [x for x in (rundir.read_metrics(metrics).get("epochs", []) if metrics.exists() else []) if not x.get("partial")]
        if records:
            found.append((r, c, records))
    terms = list(dict.fromkeys(t for _, _, records in found for t in curve_terms(records)))
    if not terms:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(terms), len(rows), figsize=(4.2 * len(rows), 3.0 * len(terms) + 0.4), squeeze=False,
                             sharex=True, sharey="row", layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    heldout = False
    for t, term in enumerate(terms):
        curves, labelled = [], set()
        for r, c, records in found:
            for key, style in ((term, "-"), (HELDOUT + term, "--")):
                points = [(x["epoch"], x[key]) for x in records if _number(x.get(key))]
                if points:  # a configuration's seeds: one colour, one legend entry
                    label = _label([col_axis], (cols[c],)) if style == "-" and (r, c) not in labelled else None
                    labelled.add((r, c))
                    axes[t][r].plot(*zip(*points), linestyle=style, color=colours[c % len(colours)],
                                    marker="o" if len(points) < 30 and style == "-" else None, markersize=3,
                                    label=label)
                    curves.append([v for _, v in points])
                    heldout |= style == "--"
        cut = focus_ylim(axes[t][0], curves)
        axes[t][0].set_ylabel(term + (" (epoch 1 off scale)" if cut else ""))
    for r, values in enumerate(rows):
        for t in range(len(terms)):
            _style(axes[t][r], _label(row_axes, values) if t == 0 else "")
        if axes[0][r].get_lines():
            if heldout:
                axes[0][r].plot([], [], color="grey", linestyle="-", label="training")
                axes[0][r].plot([], [], color="grey", linestyle="--", label="held-out")
            axes[0][r].legend(fontsize=7)
    return _save(fig, path)


def plot_heatmap(grid: dict, trials: list[dict], metric: str, path: Path) -> Path:
    """The trials' final `metric` over the grid (rows × columns), each cell annotated; missing values are blank.
    With several seeds a cell is the mean over its seeds, annotated mean ± std, and the best cell and those within
    noise of it are marked (the rule in seed_stats, stated under the map)."""
    col_axis, row_axes, rows, cols = sweep_layout(grid)
    cells: dict[tuple, list] = {}
    for r, c, trial in _cells(grid, trials):
        cells.setdefault((r, c), []).append((trial.get("final") or {}).get(metric))
    places, values = list(cells), np.full((len(rows), len(cols)), np.nan)
    stats = [seed_stats.spread(cells[p]) for p in places]
    marks = dict(zip(places, seed_stats.marks(stats, metric))) if seed_stats.seeded(grid) else {}
    for (r, c), s in zip(places, stats):
        values[r, c] = s["mean"] if s else np.nan
    plt = _pyplot()
    width = max(1.5 * len(cols) + 2.8, 6.4 if marks else 0)  # room for the rule under the map
    fig, ax = plt.subplots(figsize=(width, 0.8 * len(rows) + (2.4 if marks else 1.8)), layout="constrained")
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_xticks(range(len(cols)), [_label([col_axis], (v,)) for v in cols], fontsize=8)
    ax.set_yticks(range(len(rows)), [_label(row_axes, v) for v in rows], fontsize=8)
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    symbol = {seed_stats.BEST: "★ ", seed_stats.TIED: "≈ "}
    for (r, c), s in zip(places, stats):
        text = "–" if s is None else seed_stats.as_text(s["mean"], s["std"]).replace(" ± ", "\n± ")
        ax.text(c, r, symbol.get(marks.get((r, c)), "") + text, ha="center", va="center", fontsize=8,
                color="grey" if s is None else "black" if s["mean"] > middle else "white")
    ax.set_title(f"final {metric} ({seed_stats.direction(metric)})" + (f", {seed_stats.SPREAD}" if marks else ""),
                 fontsize=8)
    if marks:  # the rule under the map, where the marks are read
        rule = f"{len(grid[seed_stats.SEED])} seeds per cell. ★ " + seed_stats.RULE.replace("; within", "; ≈ within")
        ax.set_xlabel(textwrap.fill(rule, int(width * 15)), fontsize=7)
    return _save(fig, path)


def pick_metric(trials: list[dict], metric: str | None = None) -> str | None:
    """The heat map's metric: `metric`, else FID when the trials were evaluated, else their training loss."""
    keys = metric_keys([t.get("final") or {} for t in trials])
    return metric or ("fid" if "fid" in keys else primary_loss(keys))


def draw_sweep_figures(sweep_dir: Path, grid: dict, trials: list[dict], metric: str | None) -> list[Path]:
    """samples_matrix.png, curves.png and heatmap.png (of `metric`, else FID when evaluated, else the training loss)
    in `sweep_dir`; each trial dict holds `values`, `status`, `final` and `path` (its run directory)."""
    sweep_dir = Path(sweep_dir)
    drawn = [plot_sample_matrix(grid, trials, sweep_dir / MATRIX_PNG), plot_sweep_curves(grid, trials, sweep_dir / CURVES_PNG)]
    metric = pick_metric(trials, metric)
    if metric:
        drawn.append(plot_heatmap(grid, trials, metric, sweep_dir / HEATMAP_PNG))
    return [p for p in drawn if p is not None]
