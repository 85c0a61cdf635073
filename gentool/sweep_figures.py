"""A sweep's figures: its sample matrix (samples_matrix.png), training curves (curves.png) and heat map of a final
metric (heatmap.png), laid out rows × columns over the grid's axes, with the run figures' pieces (gentool.figures).
"""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import numpy as np
import torch

from gentool import figures, rundir, seed_stats
from gentool.history import finished, read_records
from gentool.images import make_grid, to_uint8

MATRIX_PNG, CURVES_PNG, HEATMAP_PNG = "samples_matrix.png", "curves.png", "heatmap.png"
STRIP = 8  # samples per trial in the sweep's sample matrix


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
    plt = figures.pyplot()
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
    return figures.save(fig, path)


def curve_terms(records: list[dict]) -> list[str]:
    """What a sweep's curves show for a trial: its training loss, then every other term with a held-out curve
    (the VAE's reconstruction and KL)."""
    keys = figures.metric_keys(records)
    main = figures.primary_loss(k for k in keys if not k.startswith(figures.HELDOUT))
    others = [k for k in keys if not k.startswith(figures.HELDOUT) and k != main and figures.HELDOUT + k in keys]
    return ([main] if main else []) + others


def plot_sweep_curves(grid: dict, trials: list[dict], path: Path) -> Path | None:
    """Each trial's curves over epochs: one column of panels per row of the layout (the complexity), one row per
    term (training loss, then the terms recorded on held-out data too), one colour per column value (the latent
    size); training solid, held-out dashed. Panels of a term share their y-axis, scaled so that a first epoch far
    above the rest does not flatten them. None when no trial has records."""
    col_axis, row_axes, rows, cols = sweep_layout(grid)
    found = []
    for r, c, trial in sorted(_cells(grid, trials), key=lambda cell: cell[:2]):
        records = finished(read_records(Path(trial["path"]) / rundir.METRICS))
        if records:
            found.append((r, c, records))
    terms = list(dict.fromkeys(t for _, _, records in found for t in curve_terms(records)))
    if not terms:
        return None
    plt = figures.pyplot()
    fig, axes = plt.subplots(len(terms), len(rows), figsize=(4.2 * len(rows), 3.0 * len(terms) + 0.4), squeeze=False,
                             sharex=True, sharey="row", layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    heldout = False
    for t, term in enumerate(terms):
        curves, labelled = [], set()
        for r, c, records in found:
            for key, style in ((term, "-"), (figures.HELDOUT + term, "--")):
                points = [(x["epoch"], x[key]) for x in records if figures.is_number(x.get(key))]
                if points:  # a configuration's seeds: one colour, one legend entry
                    label = _label([col_axis], (cols[c],)) if style == "-" and (r, c) not in labelled else None
                    labelled.add((r, c))
                    axes[t][r].plot(*zip(*points), linestyle=style, color=colours[c % len(colours)],
                                    marker="o" if len(points) < 30 and style == "-" else None, markersize=3,
                                    label=label)
                    curves.append([v for _, v in points])
                    heldout |= style == "--"
        cut = figures.focus_ylim(axes[t][0], curves)
        axes[t][0].set_ylabel(term + (" (epoch 1 off scale)" if cut else ""))
    for r, values in enumerate(rows):
        for t in range(len(terms)):
            figures.style_axes(axes[t][r], _label(row_axes, values) if t == 0 else "")
        if axes[0][r].get_lines():
            if heldout:
                axes[0][r].plot([], [], color="grey", linestyle="-", label="training")
                axes[0][r].plot([], [], color="grey", linestyle="--", label="held-out")
            axes[0][r].legend(fontsize=7)
    return figures.save(fig, path)


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
    plt = figures.pyplot()
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
    return figures.save(fig, path)


def pick_metric(trials: list[dict], metric: str | None = None) -> str | None:
    """The heat map's metric: `metric`, else FID when the trials were evaluated, else their training loss."""
    keys = figures.metric_keys([t.get("final") or {} for t in trials])
    return metric or ("fid" if "fid" in keys else figures.primary_loss(keys))


def draw_sweep_figures(sweep_dir: Path, grid: dict, trials: list[dict], metric: str | None) -> list[Path]:
    """samples_matrix.png, curves.png and heatmap.png (of `metric`, else FID when evaluated, else the training loss)
    in `sweep_dir`; each trial dict holds `values`, `status`, `final` and `path` (its run directory)."""
    sweep_dir = Path(sweep_dir)
    drawn = [plot_sample_matrix(grid, trials, sweep_dir / MATRIX_PNG),
             plot_sweep_curves(grid, trials, sweep_dir / CURVES_PNG)]
    metric = pick_metric(trials, metric)
    if metric:
        drawn.append(plot_heatmap(grid, trials, metric, sweep_dir / HEATMAP_PNG))
    return [p for p in drawn if p is not None]
