"""What the templates show, built from what collect.py read: tables as plain cells, figures drawn in memory by
gentool.figures (the same code that draws loss.png and a sweep's figures), images ready to embed as data: URIs.
Nothing here computes a number the run did not record; it only arranges, formats and draws them."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

from gentool import figures, sweep_figures
from gentool import seed_stats
from gentool import sweep as sw
from gentool.history import is_partial
from gentool.report.readers import Picture, is_number, picture
from gentool.results import columns as result_columns
from gentool.results import compare_runs, final_metrics, setting_value
from gentool.summary import shape_text

# The sections of every run, in page order: (id suffix, heading). The table of contents is built from this list
# and the templates give each section the id "<run anchor>-<suffix>".
RUN_SECTIONS = (("overview", "Overview"), ("curves", "Training curves"), ("samples", "Samples"),
                ("metrics", "Metrics"), ("evaluation", "Evaluation"), ("events", "Events"),
                ("checkpoints", "Checkpoints"), ("architecture", "Architecture"), ("config", "Configuration"),
                ("provenance", "How the numbers were made"))
HISTORY_KEYS = {"epochs", "events", "model", "run_dir", "evaluation", "best", "heldout"}  # what metrics.json holds by default
WATCHED = ("fid", "modes", "class_kl")  # what --eval-every adds to an epoch's record
HELDOUT = "heldout_"


def fmt(value) -> str:
    """A value as a table shows it: integers with thousands separators, floats to 4 significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value):
        return ", ".join(map(fmt, value))  # e.g. a class histogram
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def cell(value, href: str | None = None) -> dict:
    return {"text": fmt(value), "num": is_number(value), "href": href}


def table(caption: str, columns: list[str], rows: list[list[dict]], foot: list[tuple[str, object]] = (),
          classes: list[str] | None = None, kind: str = "") -> dict:
    """A table for the `data_table` macro: the first cell of each row is its header (th scope=row); `foot` rows
    are (label, value) pairs under the body; `classes` style rows, `kind` the table."""
    return {"caption": caption, "columns": columns, "rows": rows, "classes": classes or [""] * len(rows),
            "foot": [(label, cell(value)) for label, value in foot], "kind": kind}


def key_values(caption: str, pairs, name: str = "field") -> dict:
    return table(caption, [name, "value"], [[cell(k), cell(v)] for k, v in pairs], kind="kv")


def data_uri(p: Picture) -> str:
    return f"data:{p.mime};base64,{base64.b64encode(p.data).decode('ascii')}"


def ordered(keys) -> list[str]:
    """Metric names with each held-out one right after its training counterpart."""
    keys = list(keys)
    result = [k for k in keys if not k.startswith(HELDOUT)]
    for k in (k for k in keys if k.startswith(HELDOUT)):
        base = k[len(HELDOUT):]
        result.insert(result.index(base) + 1 if base in result else len(result), k)
    return result


def drawn(draw, alt: str, caption: str, notes: list[str], what: str) -> Picture | None:
    """A figure drawn by `draw(buffer)` into memory; a figure that cannot be drawn becomes a note."""
    buf = io.BytesIO()
    try:
        if draw(buf) is None:
            return None
    except Exception as exc:  # a figure is one view among many: the rest of the report still stands
        notes.append(f"{what} not drawn ({type(exc).__name__}: {exc})")
        return None
    return picture(buf.getvalue(), alt, caption)


def curves(run: dict) -> Picture | None:
    records, history = run["records"], run["history"]
    panels: dict[str, list[str]] = {}
    for key in figures.metric_keys(records):
        panels.setdefault(figures.panel_of(key), []).append(key)
    described = "; ".join(f"{panel}: {', '.join(keys)}" for panel, keys in panels.items())
    events = ", ".join(f"{e.get('kind')} at epoch {e['epoch']}" for e in run["events"])
    alt = (f"Training curves of {run['name']} over epochs {records[0]['epoch']} to {records[-1]['epoch']}, one panel "
           f"per group ({described})" + (f"; dashed lines mark events: {events}" if events else "")) if records else ""
    caption = "Curves per epoch as metrics.json records them (the study's Figures 2, 5 and 8)."
    if run["partial"]:
        caption += f" Epoch(s) {', '.join(map(str, run['partial']))} stopped mid-way: their points average the steps run."
    title = f"{run['config']['model']} · {run['name']}"
    return drawn(lambda buf: figures.plot_losses({**history, "epochs": records}, buf, title), alt, caption,
                 run["notes"], "training curves")


def metric_tables(run: dict) -> dict:
    """The final metrics (value and held-out value side by side) and every epoch's record."""
    records = run["records"]
    if not records:
        return {}
    final = final_metrics(records)
    keys = [k for k in ordered(figures.metric_keys([final])) if not k.startswith(HELDOUT) or k[len(HELDOUT):] not in final]
    heldout = any(k.startswith(HELDOUT) for k in final)
    columns = ["metric", "value"] + (["held-out"] if heldout else [])
    rows = [[cell(k), cell(final[k])] + ([cell(final.get(HELDOUT + k))] if heldout else []) for k in keys]
    last = records[-1]
    caption = f"Final metrics (epoch {last['epoch']}" + (", partial" if is_partial(last) else "") + ")"
    every = ["step", "seconds"] + ordered(figures.metric_keys(records))
    all_rows = [[cell(f"{r['epoch']} (partial)" if is_partial(r) else r["epoch"])]
                + [cell(r.get(k)) for k in every] for r in records]
    classes = ["partial" if is_partial(r) else "" for r in records]
    return {"final": table(caption, columns, rows),
            "epochs": table("Each epoch's record, as metrics.json holds it", ["epoch", *every], all_rows, classes=classes)}


def watch_view(run: dict) -> dict | None:
    """--eval-every: the evaluated epochs and how they were scored."""
    evaluated = [r for r in run["records"] if is_number(r.get("fid"))]
    made = run["history"].get("evaluation") or {}
    if not evaluated and not made:
        return None
    keys = [k for k in WATCHED if any(k in r for r in evaluated)]
    rows = [[cell(r["epoch"])] + [cell(r.get(k)) for k in keys] for r in evaluated]
    return {"table": table("Scores at each evaluated epoch",
                           ["epoch", *keys], rows),
            "made": key_values("How --eval-every scored them", provenance_pairs(made))}


def provenance_pairs(made: dict) -> list[tuple[str, object]]:
    """An evaluation's provenance (extractor, split, N, seed, …) flattened one level for a key-value table."""
    pairs = []
    for key, value in made.items():
        if isinstance(value, dict):
            pairs += [(f"{key}.{k}", v) for k, v in value.items()]
        elif key not in ("metrics", "notes") or not isinstance(value, list):
            pairs.append((key, value))
    return pairs


def evaluation_view(result: dict) -> dict:
    """One `gentool evaluate --out` file: its metrics and how they were made."""
    pairs = provenance_pairs(result["metrics"])
    made = {k: v for k, v in result.items() if k not in ("file", "metrics", "notes")}
    notes = [n for n in result.get("notes", []) if isinstance(n, str)] if isinstance(result.get("notes"), list) else []
    return {"file": result["file"], "metrics": key_values(f"Metrics in {result['file']}", pairs, "metric"),
            "made": key_values(f"How the numbers in {result['file']} were made", provenance_pairs(made)),
            "notes": notes}


def overview(run: dict) -> dict:
    config, records = run["config"], run["records"]
    opts, data = config.get("options", {}), config.get("data", {})
    pairs = [("model", f"{config['model']} ({config.get('model_source', 'built-in')})"),
             ("data", data.get("name") or opts.get("data")), ("training images", opts.get("limit") or "all"),
             ("epochs recorded", records[-1]["epoch"] if records else 0), ("epochs asked for", opts.get("epochs")),
             ("steps", records[-1].get("step") if records else 0),
             ("training time (s)", round(sum(r["seconds"] for r in records if is_number(r.get("seconds"))), 1)),
             ("gentool version", config.get("gentool_version")), ("run directory", run["path"])]
    return key_values("Run at a glance", pairs)


def architecture_view(arch: dict | None) -> list[dict]:
    """`gentool summary`'s tables: one per network with its totals."""
    if not arch:
        return []
    tables = []
    for name, net in arch["networks"].items():
        rows = [[cell(r["name"]), cell(r["type"]), cell(shape_text(r["output_shape"])), cell(r["params"])]
                for r in net["layers"]]
        foot = [("trainable", net["trainable_params"]), ("non-trainable", net["non_trainable_params"]),
                ("total", net["total_params"]), ("size (MB)", net["size_mb"])]
        tables.append(table(f"{arch['model']} · {name} ({arch['preset']})", ["layer", "type", "output shape", "params"],
                            rows, foot))
    return tables



def config_tables(config: dict) -> list[dict]:
    """config.json as three key-value tables: the model's config, the training options and the data."""
    data = {k: v for k, v in config.get("data", {}).items() if k != "class_names"}
    names = config.get("data", {}).get("class_names")
    if isinstance(names, list):
        data["class_names"] = ", ".join(map(str, names))
    return [key_values(caption, config.get(key, {}).items() if key != "data" else data.items())
            for key, caption in (("config", "Model config"), ("options", "Training options"), ("data", "Data"))]


def provenance(run: dict) -> list[str]:
    """One sentence per kind of number in the report, saying how it was made (from the run's own records)."""
    config, records = run["config"], run["records"]
    opts, model_config = config.get("options", {}), config.get("config", {})
    data = config.get("data", {}).get("name") or opts.get("data")
    keys = figures.metric_keys(records)
    train_keys = [k for k in keys if not k.startswith(HELDOUT) and k not in WATCHED]
    said = [f"Training metrics ({', '.join(train_keys) or 'none recorded'}): means over each epoch's optimizer steps "
            f"on the training split of {data} ({fmt(opts.get('limit') or 'all')} images, batch size "
            f"{fmt(model_config.get('batch_size'))}, seed {fmt(opts.get('seed'))}); seconds is each epoch's "
            f"wall-clock training time."]
    heldout = [k for k in keys if k.startswith(HELDOUT)]
    if heldout:
        made = run["history"].get("heldout") or {}
        how = (f" ({fmt(made.get('n'))} of the {fmt(made.get('of'))} images of the {fmt(made.get('split'))}, the same "
               f"images every epoch, noise seed {fmt(made.get('seed'))}, {fmt(made.get('weights'))} weights, since epoch "
               f"{fmt(made.get('since_epoch'))})") if made else ""
        said.append(f"Held-out metrics ({', '.join(heldout)}): the same terms on the held-out split{how}, as the "
                    f"run recorded them after each epoch (in eval mode, with seeded noise).")
    made = run["history"].get("evaluation") or {}
    if made:
        ex = made.get("extractor") if isinstance(made.get("extractor"), dict) else {}
        what = "FID alone" if made.get("metrics") == ["fid"] else "FID, modes and class_kl"
        said.append(f"{what} (--eval-every {fmt(made.get('every'))}): {fmt(made.get('n'))} samples "
                    f"drawn with seed {fmt(made.get('seed'))}, scored against the {fmt(made.get('split'))} split "
                    f"({fmt(made.get('real_source'))}, {fmt(made.get('n_real'))} images) in the features of extractor "
                    f"{fmt(ex.get('id'))} ({_accuracy(ex)}); uniform noise scores FID "
                    f"{fmt(made.get('fid_uniform_noise'))} with it.")
    for result in run["evaluations"]:
        ex = result["extractor"]
        said.append(f"{result['file']}: gentool evaluate of {fmt(result.get('source'))} "
                    f"({fmt(result.get('weights') or result.get('kind'))}, epoch {fmt(result.get('epoch'))}): "
                    f"{fmt(result['n'])} samples, seed {fmt(result.get('seed'))}, against the {result['split']} split "
                    f"({fmt(result.get('real_source'))}), extractor {fmt(ex.get('id'))} ({_accuracy(ex)}), gentool "
                    f"{fmt(result.get('gentool_version'))}.")
    said.append("Architecture: the networks rebuilt from config.json (no weights) and counted as gentool summary "
                "counts them, like the study's tables.")
    return said


def run_view(run: dict, sweep_scores: dict | None = None) -> dict:
    """Everything a run's section shows, ready for the templates; `sweep_scores`: a sweep trial's --eval metrics."""
    if "error" in run:
        return run
    extra = {k: v for k, v in run["history"].items() if k not in HISTORY_KEYS}
    return {**run, "sections": [(f"{run['anchor']}-{key}", title) for key, title in RUN_SECTIONS],
            "titles": dict(RUN_SECTIONS),
            "overview": overview(run), "curves": curves(run) if run["records"] else None,
            "tables": metric_tables(run), "watch": watch_view(run),
            "evaluations": [evaluation_view(r) for r in run["evaluations"]],
            "sweep_scores": key_values("Scores from sweep --eval", provenance_pairs(sweep_scores), "metric")
            if sweep_scores else None,
            "events_table": table("Events recorded in metrics.json", ["epoch", "step", "kind", "message"],
                                  [[cell(e.get("epoch")), cell(e.get("step")), cell(e.get("kind")),
                                    cell(e.get("message"))] for e in run["events"]]),
            "checkpoint_table": table("Checkpoint files", ["file", "size (MiB)"],
                                      [[cell(c["file"]), cell(round(c["bytes"] / 2**20, 2))] for c in run["checkpoints"]]),
            "arch_tables": architecture_view(run["architecture"]), "config_tables": config_tables(run["config"]),
            "extra": key_values("Other fields metrics.json records", extra.items()) if extra else None,
            "provenance": provenance(run)}


def sweep_view(sweep: dict) -> dict:
    """The sweep's overview, figures (matrix as recorded; curves and heat map drawn from the trials' records), the
    results table with each trial linked to its section, and the trials' sections."""
    grid, trials, notes = sweep["grid"], sweep["trials"], sweep["notes"]
    manifest = sweep["manifest"]
    fig_trials = [{**t, "final": sw.trial_metrics(t)} for t in trials]
    metric = sweep_figures.pick_metric(fig_trials)  # as the sweep picks its heat map's metric
    seeded = seed_stats.seeded(grid)
    col_axis, row_axes, _, _ = sweep_figures.sweep_layout(grid)
    figs = [sweep["matrix"],
            drawn(lambda buf: sweep_figures.plot_sweep_curves(grid, fig_trials, buf),
                  f"Curves per epoch of every trial: the training loss (and the loss terms recorded on held-out "
                  f"data too), training solid and held-out dashed; one column of panels per "
                  f"{', '.join(row_axes) or 'grid'} value, one colour per {col_axis}",
                  "Each trial's losses over the epochs, training and held-out (the study's Figure 11).",
                  notes, "curves")]
    if metric:
        spread = (f", each cell the {seed_stats.SPREAD} of its {len(grid[seed_stats.SEED])} seeds; ★ marks the best "
                  f"and ≈ those within noise of it ({seed_stats.RULE})") if seeded else \
            ", each cell annotated with its value"
        figs.append(drawn(lambda buf: sweep_figures.plot_heatmap(grid, fig_trials, metric, buf),
                          f"Heat map of the final {metric} over the grid: rows by {', '.join(row_axes) or 'grid'}, "
                          f"columns by {col_axis or 'configuration'}{spread}",
                          f"Final {metric} over the grid ({seed_stats.direction(metric)}){spread}.", notes,
                          "heat map"))
    rows = sw.result_rows({"trials": trials})
    columns = [c for c in dict.fromkeys(k for r in rows for k in r)  # the link replaces run_dir; no empty columns
               if c != "run_dir" and any(r.get(c) is not None for r in rows)]
    links = {t["index"]: t["anchor"] for t in trials}
    body = [[cell(r[c], f"#{links[r['trial']]}" if c == "trial" else None) for c in columns] for r in rows]
    status = {}
    for t in trials:
        status[t["status"]] = status.get(t["status"], 0) + 1
    pairs = [("model", manifest.get("model")), ("data", manifest.get("data")),
             *((f"axis {a}", ", ".join(map(fmt, v))) for a, v in grid.items()),
             *((f"option {k}", v) for k, v in (manifest.get("options") or {}).items() if v is not None),
             ("epochs asked for", manifest.get("epochs")),
             ("trials", ", ".join(f"{n} {s}" for s, n in status.items())),
             ("gentool version", manifest.get("gentool_version")), ("sweep directory", sweep["path"])]
    return {"anchor": "sweep", **sweep, "overview": key_values("Sweep at a glance", pairs),
            "by_config": config_view(grid, fig_trials, metric) if seeded else None,
            "figures": [f for f in figs if f],
            "results": table("Results: one row per trial (final training metrics and, with --eval, its scores)",
                             columns, body),
            "trials": [{**t, "run": run_view(t["run"], t.get("metrics")) if t.get("run") else None,
                        "label": ", ".join(f"{a}={fmt(t['values'][a])}" for a in grid)} for t in trials]}


def config_view(grid: dict, trials: list[dict], metric: str | None) -> dict:
    """The results by configuration over the seeds: each metric as mean ± std (min–max), the seeds done, and the
    standing on the heat map's metric; rows within noise of the best are marked."""
    rows = seed_stats.config_rows(grid, trials, metric)
    axes = [a for a in grid if a != seed_stats.SEED]
    means = [k[:-len("_std")] for k in dict.fromkeys(k for r in rows for k in r) if k.endswith("_std")]
    standing = f"{metric}_vs_best"
    body = [[cell(", ".join(f"{a}={fmt(setting_value(r, a))}" for a in axes) or "all"), cell(r["seeds"]),
             cell(r.get(standing) or ""),
             *(cell(f"{seed_stats.shown(r, m)} ({fmt(r.get(m + '_min'))}–{fmt(r.get(m + '_max'))})") for m in means)]
            for r in rows]
    return table(f"Results by configuration: {seed_stats.SPREAD}, with the minimum–maximum in brackets; the third "
                 f"column compares {metric} ({seed_stats.direction(metric)}). {seed_stats.RULE[0].upper()}"
                 f"{seed_stats.RULE[1:]}.", ["configuration", "seeds", f"vs best ({metric})", *means], body,
                 classes=["best" if r.get(standing) == seed_stats.BEST else "tied" if r.get(standing) else ""
                          for r in rows])


def folder_view(root: Path, runs: list[dict], sweeps: list[dict] = ()) -> dict:
    """A comparison table (as `gentool summary DIR` prints it) with each run linked, and the runs' sections; then
    each sweep found in the folder, as its own page would show it (its trials are not among the runs)."""
    readable = [r for r in runs if "error" not in r]
    rows = compare_runs(root, [Path(r["path"]) for r in readable])
    links = {r["name"]: r["anchor"] for r in readable}
    columns = result_columns(rows)  # the order summary prints them in (seconds and partial last)
    body = [[cell(r.get(c), f"#{links[r['run']]}" if c == "run" else None) for c in columns] for r in rows]
    return {"name": root.name or str(root), "path": str(root),
            "comparison": table(f"{len(rows)} run(s) compared: the values that set them apart, epochs and final "
                                f"metrics", columns, body),
            "runs": [run_view(r) for r in runs],
            "sweeps": [s if "error" in s else sweep_view(s) for s in sweeps]}


def _accuracy(ex: dict) -> str:
    """What an extractor's accuracy measures: a classifier's on the held-out classes; a folder without classes has
    a rotation-prediction extractor, whose accuracy is at that pretext task (and which has no class metrics)."""
    if ex.get("kind", "classifier") == "classifier":
        return f"test accuracy {fmt(ex.get('test_accuracy'))}"
    return f"{fmt(ex.get('kind'))}: no classes; rotation accuracy on held-out images {fmt(ex.get('test_accuracy'))}"
