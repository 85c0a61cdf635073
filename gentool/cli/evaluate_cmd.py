"""gentool evaluate."""

from __future__ import annotations

from rich.console import Console

from gentool.cli import options as o
from gentool.evaluate_options import EvalOptions
from gentool.progress import make_reporter

# key → (label, meaning); the table shows the keys present in the result, in this order.
ROWS = {
    "fid": ("FID", "Fréchet distance of extractor features (lower is better)"),
    "fid_inf": ("FID∞", "FID extrapolated to infinitely many samples: a line through FID at several N against 1/N"),
    "kid_mean": ("KID", "unbiased polynomial-kernel MMD² (lower is better; ≈ 0 for the same distribution)"),
    "is_mean": ("IS", "inception-style score from class probabilities (higher is better, 1 to classes)"),
    "precision": ("precision", "share of samples on the real feature manifold (k-NN, higher is better)"),
    "recall": ("recall", "share of real images on the samples' manifold (k-NN, higher is better)"),
    "modes": ("modes", "classes covered (≥ 20 % of their real share)"),
    "class_kl": ("class KL", "KL(generated ‖ real) of predicted-class histograms (lower is better)"),
    "jsd": ("pixel JSD", "Jensen–Shannon distance of pixel-intensity histograms (0 to 1, lower is better)"),
    "emd": ("sliced EMD", "sliced Wasserstein distance between images in [0, 1] (lower is better)"),
    "pixel_mean": ("pixel mean", "mean pixel value in [0, 1] (closer to the real value is better)"),
    "pixel_std": ("pixel std", "standard deviation of all pixel values (closer to the real value is better)"),
    "pixel_spread": ("pixel spread",
                     "each pixel's standard deviation across images, averaged (0: all alike; near real is better)"),
    "pixel_saturated": ("saturated",
                        "share of pixel values below 0.01 or above 0.99 (closer to the real value is better)"),
    "class_agreement": ("class agreement", "conditional model: share of samples the classifier assigns to the class asked for"),
    "class_agreement_min": ("worst class", "conditional model: the lowest per-class agreement"),
    "vae_reconstruction": ("reconstruction", "VAE: BCE summed over pixels, per real image (lower is better)"),
    "vae_kl": ("KL", "VAE: KL of the posterior from the prior, per real image"),
    "elbo": ("ELBO", "VAE: evidence lower bound per real image, nats (higher is better)"),
}


CI_KEYS = {"kid_mean": "kid_ci"}  # the interval's key when it is not <key>_ci


def _value(key: str, metrics: dict) -> str:
    """The table's text for a metric, with its interval when there is one."""
    ci = metrics.get(CI_KEYS.get(key, f"{key}_ci"))
    text = _plain(key, metrics)
    return f"{text} [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else text


def _plain(key: str, metrics: dict) -> str:
    if key == "fid_inf":
        points = ", ".join(f"{f:.4g} at {n:,}" for n, f in metrics["fid_by_n"])
        return f"{metrics['fid_inf']:.4g} (FID {points})"
    if key == "kid_mean":
        return f"{metrics['kid_mean']:.5f} ± {metrics['kid_std']:.5f}"
    if key == "is_mean":
        return f"{metrics['is_mean']:.3f} ± {metrics['is_std']:.3f}"
    if key.startswith("class_agreement"):
        return f"{metrics[key]:.1%}"
    if key.startswith("pixel_"):
        value, real = metrics[key], metrics[f"real_{key}"]
        return f"{value:.1%} (real {real:.1%})" if key == "pixel_saturated" else f"{value:.3f} (real {real:.3f})"
    if key == "modes":
        return f"{metrics['modes']} of {metrics['classes']}"
    return f"{metrics[key]:.4g}"


def render(result: dict, console: Console) -> None:
    """The metrics as a rich table, then how they were made and any notes."""
    weights = f" ({result['weights']} weights)" if result.get("weights") == "ema" else ""
    title = (f"{o.escape(result['source'])}{weights} vs {o.escape(result['data'])} {result['split']} · "
             f"N={result['n']:,} · seed {result['seed']}")
    table = o.table("metric", "value", "meaning", title=title)
    for key, (label, meaning) in ROWS.items():
        if key in result["metrics"]:
            table.add_row(label, _value(key, result["metrics"]), meaning)
    console.print(table)
    if "interval" in result:
        i = result["interval"]
        console.print(f"in brackets: {i['level']:.0%} intervals, a {i['method']} ({i['resamples']} resamples); the "
                      f"real set is {'also' if i['real_resampled'] else 'not'} resampled", highlight=False,
                      soft_wrap=True)
    ex = result["extractor"]
    made = (f"weights {ex['weights']}, sha256 {ex['weights_sha256'][:16]}…, torch-fidelity "
            f"{ex['torch_fidelity_version']}" if "weights_sha256" in ex else f"test accuracy {ex['test_accuracy']:.2%}"
            if ex.get("kind", "classifier") == "classifier" else
            f"{ex['kind']}: no classes; rotation accuracy on held-out images {ex['test_accuracy']:.2%}")
    console.print(f"extractor {ex['id']} ({made}); real images: {o.escape(result['real_source'])} "
                  f"({result['n_real']:,}); "
                  f"gentool {result['gentool_version']}", highlight=False, soft_wrap=True)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {o.escape(note)}", highlight=False, soft_wrap=True)


@o.cli_errors
@o.options_command(EvalOptions)
def evaluate(opts: EvalOptions, quiet: o.QuietOpt = False, json_out: o.JsonOpt = False):
    """Score generated images against real data: with a reference classifier gentool trains (once) per data set, or
    with the standard Inception-v3 network when you have its weights (--extractor inception-v3)."""
    from gentool.metrics.evaluate import evaluate as run_evaluation

    result = run_evaluation(opts, make_reporter(quiet))
    if json_out:
        o.print_json(result)
    else:  # --quiet silences the progress, not the result
        render(result, o.out_console())
