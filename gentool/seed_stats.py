"""Comparisons across seeds: a sweep's trials grouped by configuration (every axis but the seed), each metric's mean
and spread over the seeds, and which configurations are within noise of the best. Used by the sweep's tables, its
heat map and the report, so that all three say the same.

The spread is the sample standard deviation over the seeds (n − 1 in the denominator), shown as mean ± std with the
minimum and maximum beside it in the files. A configuration is within noise of the best when the difference of the
two means is smaller than twice their combined standard error, 2·√(s₁²/n₁ + s₂²/n₂): roughly a 95 % interval of the
difference, so that a difference inside it could be a reseeding rather than the configuration. With one seed there is
no spread, and nothing is marked.

Imports nothing heavy (no torch, no numpy).
"""

from __future__ import annotations

import math

SEED = "seed"  # the axis `gentool sweep --seeds N` makes
BEST, TIED = "best", "within noise"
RULE = ("best: the best mean; within noise: its difference from the best mean is less than twice their combined "
        "standard error, 2·√(s₁²/n₁ + s₂²/n₂) (s: standard deviation over the seeds, n: seeds)")
SPREAD = "mean ± standard deviation over the seeds (sample, n − 1)"
# Metrics where higher is better (gentool evaluate's scores, the VAE's ELBO); every other one is lower-is-better
# (losses, FID, KID, KL), except the pixel statistics, where closer to the real images' value is better: they have no
# best.
HIGHER_IS_BETTER = frozenset({"is_mean", "precision", "recall", "modes", "class_agreement", "class_agreement_min",
                              "elbo"})
NO_BEST_PREFIX = "pixel_"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def seeded(grid: dict) -> bool:
    """Whether the sweep's grid repeats each configuration over several seeds."""
    return len(grid.get(SEED) or ()) > 1


def groups(grid: dict, trials: list[dict]) -> list[tuple[dict, list[dict]]]:
    """(configuration values, its trials) in grid order: the trials grouped by every axis but the seed."""
    found: dict[tuple, tuple[dict, list[dict]]] = {}
    for trial in trials:
        config = {a: v for a, v in trial["values"].items() if a != SEED}
        found.setdefault(tuple(map(repr, config.values())), (config, []))[1].append(trial)
    return list(found.values())


def spread(values: list[float]) -> dict | None:
    """mean, std (sample; None for one value), min, max and n of the finite values; None when there are none."""
    values = [v for v in values if _number(v)]
    if not values:
        return None
    n, mean = len(values), math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}


def within_noise(a: dict, b: dict) -> bool:
    """Whether two spreads' means differ by less than twice their combined standard error (both need 2+ seeds)."""
    if a["std"] is None or b["std"] is None:
        return False
    return abs(a["mean"] - b["mean"]) < 2 * math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])


def marks(stats: list[dict | None], metric: str) -> list[str]:
    """For each configuration's spread of `metric`: BEST, TIED (within noise of the best) or ""."""
    if metric.startswith(NO_BEST_PREFIX) or not any(stats):
        return [""] * len(stats)
    sign = -1 if metric in HIGHER_IS_BETTER else 1
    best = min((s for s in stats if s), key=lambda s: sign * s["mean"])
    return [BEST if s is best else TIED if s and within_noise(s, best) else "" for s in stats]


def direction(metric: str) -> str:
    if metric.startswith(NO_BEST_PREFIX):
        return "closer to the real images' value is better"
    return "higher is better" if metric in HIGHER_IS_BETTER else "lower is better"


def config_rows(grid: dict, trials: list[dict], metric: str | None) -> list[dict]:
    """One row per configuration: its values, the seeds done, and for each metric its mean, std, min and max over
    those seeds (`trials` hold `values`, `status` and `final`: the merged final metrics); with `metric`, the
    configuration's standing on it (best, within noise, or empty). A value is named apart from a metric column
    of the same name (`setting_columns`)."""
    from gentool.results import setting_columns

    rows, spreads, found = [], [], groups(grid, trials)
    metrics = {k for t in trials if t.get("status") == "done" for k, v in (t.get("final") or {}).items() if _number(v)}
    taken = {"seeds", f"{metric}_vs_best", *(f"{m}{s}" for m in metrics for s in ("", "_std", "_min", "_max"))}
    named = setting_columns(dict.fromkeys(a for config, _ in found for a in config), taken)
    for config, members in found:
        done = [t for t in members if t.get("status") == "done"]
        names = dict.fromkeys(k for t in done for k, v in (t.get("final") or {}).items() if _number(v))
        row = {**{named[a]: v for a, v in config.items()}, "seeds": len(done)}
        for name in names:
            s = spread([(t.get("final") or {}).get(name) for t in done])
            row.update({name: s["mean"], f"{name}_std": s["std"], f"{name}_min": s["min"], f"{name}_max": s["max"]}
                       if s else {})
        rows.append(row)
        spreads.append(spread([(t.get("final") or {}).get(metric) for t in done]) if metric else None)
    if metric:
        for row, mark in zip(rows, marks(spreads, metric)):
            row[f"{metric}_vs_best"] = mark
    return rows


def as_text(mean: float | None, std: float | None) -> str:
    """'12.3 ± 0.4', or the mean alone without a spread (one seed), or "" without a mean."""
    if mean is None:
        return ""
    return f"{mean:.4g} ± {std:.2g}" if std is not None else f"{mean:.4g}"


def shown(row: dict, name: str) -> str:
    """A configuration row's metric as mean ± std."""
    return as_text(row.get(name), row.get(f"{name}_std"))
