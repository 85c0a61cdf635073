"""Figures: a run's loss curves (loss.png) and samples over epochs (progress.gif), drawn with matplotlib's Agg
backend and written atomically (a sweep's figures, drawn with the same pieces: gentool.sweep_figures).

Nothing here knows a model family: panels come from the metric names found in the records, so a plugin's metrics
are drawn too. matplotlib is imported only when a figure is drawn, which keeps the CLI's start-up fast.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from gentool import rundir
from gentool.fileio import atomic_write_bytes, open_regular
from gentool.images import write_gif
from gentool.hooks import TrainHook
from gentool.history import BOOKKEEPING, epoch_position, finished, partial_records, read_history

LOSS_PNG, PROGRESS_GIF = rundir.LOSS_PNG, rundir.PROGRESS_GIF
REFRESH_EVERY = 10  # epochs between loss.png refreshes during a run (the final one is drawn at the end)
MAX_FRAMES = 120  # progress.gif keeps at most this many epochs, evenly spread, always the last one
PANELS_PER_ROW = 3
HELDOUT = "heldout_"  # a held-out metric's prefix: drawn beside its training curve
SCALE_APART = 10  # curves of one panel whose largest values differ by this factor or more are drawn apart
MAX_PLOTTED = 1e100  # a larger value is left out of a figure: matplotlib's axis arithmetic overflows near 1e308 (a
# hook recorded 1e308 and loss.png failed on every later epoch), and no loss or score gentool draws comes near


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path | io.BytesIO) -> Path | io.BytesIO:
    """Write the figure as PNG to `path` atomically, or into it when it is a binary buffer (the HTML report draws
    in memory)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    pyplot().close(fig)
    if isinstance(path, io.BytesIO):
        path.write(buf.getvalue())
    else:
        atomic_write_bytes(path, buf.getvalue())
    return path


def metric_keys(records: list[dict]) -> list[str]:
    """The numeric metric names found in the records, in first-seen order, without the bookkeeping fields."""
    keys = dict.fromkeys(k for r in records for k, v in r.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool))
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


def group_panels(keys: list[str], records: list[dict]) -> dict[str, list[str]]:
    """Panel name → its metrics (training curves first: they pick the colours). A curve whose values are a
    SCALE_APART-th of its panel's largest or less gets a panel of its own: a distilled student's regression loss
    (~0.02) beside its critic's hinge loss (~2) was a flat line at zero."""
    panels: dict[str, list[str]] = {}
    for key in sorted(keys, key=lambda k: k.startswith(HELDOUT)):
        panels.setdefault(panel_of(key), []).append(key)
    scale = {k: max((abs(r[k]) for r in records if is_number(r.get(k))), default=0.0) for k in keys}
    def size(key: str) -> float:  # a held-out curve goes with its training curve
        return scale.get(key.removeprefix(HELDOUT), scale[key])

    for name, names in list(panels.items()):
        top = max(size(k) for k in names)
        small = [k for k in names if size(k) * SCALE_APART <= top]
        if small and len(small) < len(names):
            panels[name] = [k for k in names if k not in small]
            for key in small:
                panels.setdefault(key.removeprefix(HELDOUT), []).append(key)
    return panels


def primary_loss(keys) -> str | None:
    """The key that stands for "the training loss": `loss` itself, else the first one naming a loss."""
    keys = list(keys)
    return "loss" if "loss" in keys else next((k for k in keys if "loss" in k.lower()), None)


def plot_losses(history: dict, path: Path, title: str = "") -> Path | None:
    """Draw the run's curves (one panel per metric group) with its events as vertical lines; None without records.
    A held-out curve (heldout_<name>) is dashed, in the colour of its training curve."""
    records = history.get("epochs", [])
    keys = [k for k in metric_keys(records) if any(is_number(r.get(k)) for r in records)]
    if not keys:
        return None
    panels = group_panels(keys, records)
    plt = pyplot()
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
        focus_ylim(ax, [[r[k] for r in finished(records) if is_number(r.get(k))] for k in names])
        _event_lines(ax, history.get("events", []))
        style_axes(ax, name)
        ax.legend(fontsize=8)
    whole_epoch_axis(axes.flat[0], records)
    for ax in axes.flat[:len(panels)]:  # once the shared x-axis has its final range
        _event_labels(ax, history.get("events", []))
    fig.suptitle(title)
    return save(fig, path)


def whole_epoch_axis(ax, records: list[dict]) -> None:
    """Records less than an epoch apart (a run stopped inside its first epoch) get an axis from 0 past the next
    whole epoch: over a tiny range matplotlib ticks fractions of an epoch (0.3750, 0.3800, …) that overlap."""
    xs = [epoch_position(r) for r in records if is_number(r.get("epoch")) and is_number(r.get("epoch_fraction", 1.0))]
    if xs and max(xs) - min(xs) < 1:
        ax.set_xlim(0, math.ceil(max(xs)) + 0.25)


def is_number(value) -> bool:
    """A value a figure can plot: a number no larger than MAX_PLOTTED (so never NaN or infinite)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= MAX_PLOTTED


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
    points = [(r["epoch"], r[key]) for r in finished(records) if is_number(r.get(key))]
    if points:
        (line,) = ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, label=key,
                          color=color, linestyle=linestyle)
        color = line.get_color()
    # The epoch in progress: one record when a run stopped inside it, or its running means every few minutes while
    # a long epoch is drawn (gentool.train.draw_progress); joined by a dotted line, the latest one labelled.
    partial = sorted(((epoch_position(r), r[key], r) for r in partial_records(records)
                      if is_number(r.get(key))), key=lambda p: p[0])
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


def style_axes(ax, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set(title=title, xlabel="epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _shown_events(events: list[dict]) -> list[dict]:
    # a precision check that kept the choice changed nothing worth a line
    return [e for e in events if is_number(e.get("epoch")) and not (e.get("kind") == "precision"
                                                                    and not e.get("switched"))]


def _event_lines(ax, events: list[dict]) -> None:
    for event in _shown_events(events):
        ax.axvline(event["epoch"], color="grey", linestyle="--", linewidth=0.8)


def _event_labels(ax, events: list[dict]) -> None:
    """Each event's name along its line, on the side facing the panel's middle, clipped to the panel: put left of
    a line at the axis's start (distill's "initialised", at epoch 0) it lay over the y tick labels."""
    x0, x1 = ax.get_xlim()
    for event in _shown_events(events):
        right = (event["epoch"] - x0) / ((x1 - x0) or 1) < 0.5
        ax.annotate(str(event.get("kind", "")), (event["epoch"], 1), xycoords=("data", "axes fraction"),
                    xytext=(2 if right else -2, -2), textcoords="offset points", rotation=90, fontsize=7,
                    color="grey", va="top", ha="left" if right else "right", annotation_clip=True, clip_on=True)


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
        history = read_history(run_dir / rundir.METRICS)
    title = f"{history.get('model', '')} · {run_dir.name}"
    drawn = [plot_losses(history, run_dir / LOSS_PNG, title)]
    if gif:
        drawn.append(write_progress_gif(run_dir))
    return [p for p in drawn if p is not None]


def gif_is_stale(run_dir: Path) -> bool:
    """Whether an epoch's grid is newer than progress.gif (or there is none): drawn again then, when a signal stops
    the run, whose end (where the GIF is drawn) never comes; a resumed run stopped so kept the last run's GIF."""
    grids = list((Path(run_dir) / rundir.SAMPLES).glob("epoch_*.png"))
    if not grids:
        return False
    try:
        made = (Path(run_dir) / PROGRESS_GIF).stat().st_mtime
    except OSError:
        return True
    return max(g.stat().st_mtime for g in grids) >= made  # the same clock tick: drawn again, to be sure


class FigureHook(TrainHook):
    """Draws loss.png every REFRESH_EVERY epochs, every few minutes inside a long epoch (with the epoch in progress),
    when a signal stops the run and at its end, and progress.gif at the end and whenever it is older than the
    newest epoch grid at those times. A figure that cannot be drawn is a warning: it never costs the run."""

    def on_epoch_end(self, session, record: dict, reporter) -> None:
        if record["epoch"] % REFRESH_EVERY == 0:
            self._draw(session, reporter, gif=False)

    def on_progress(self, session, history: dict, reporter) -> None:
        self._draw(session, reporter, gif=gif_is_stale(session.run_dir), history=history)

    def on_train_end(self, session, reporter) -> None:
        self._draw(session, reporter, gif=True)

    @staticmethod
    def _draw(session, reporter, gif: bool, history: dict | None = None) -> None:
        history = {**(history or session.history), "model": session.model.name}
        try:
            draw_run_figures(session.run_dir, history, gif)
        except Exception as exc:  # a plotting problem must not fail hours of training
            reporter.message(f"warning: figures for {session.run_dir} not drawn ({type(exc).__name__}: {exc})")
