"""`gentool evaluate`: score a checkpoint's samples, an `.npz` of images or a folder of PNGs against a real data set,
and record how every number was made (extractor, its accuracy, split, N, seed, gentool version)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

import gentool
from gentool.data import ImageData, RecordedDir, holds_data
from gentool.device import check_precision, choose_precision, pick_device, prepare, use_threads
from gentool.errors import SAMPLER, ConfigError, UsageError, bad_value
from gentool.evaluate_options import INCEPTION, MAX_N, MIN_N, EvalOptions  # noqa: F401 (MAX_N: the watch's)
from gentool.fileio import atomic_write_json
from gentool.folders import listed_once
from gentool.load import load_warning
from gentool.metrics.distances import histogram_jsd, pixel_summary, sliced_wasserstein
from gentool.metrics.extractor import get_extractor
from gentool.metrics.likelihood import BATCH, fixed_subset, loss_terms
from gentool.metrics.fid_kid import (fid_by_sample_count, frechet_distance, gaussian_stats, inception_score,
                                     kernel_distance)
from gentool.metrics.intervals import Bootstrap, IntervalPlan
from gentool.metrics.manifold import class_histogram, membership, mode_coverage
from gentool.metrics.pretext import CLASS_METRICS, DESCRIPTION, NO_CLASSES
from gentool.metrics.reference import Reference, own_shape, reference_geometry, resolve_reference
from gentool.metrics.sources import Source, check_geometry, open_source
from gentool.metrics.stats import ImageStats, real_stats, stream_stats
from gentool.progress import Drawing, Reporter

KID_SUBSETS, KID_SUBSET_SIZE, PR_K = 100, 1000, 3


class Evaluator:
    """A reference data set's extractor and one split's real statistics, ready to score sets of images (with
    intervals as `plan` says; None: none)."""

    def __init__(self, reference: Reference, split: str, device: torch.device, reporter: Reporter | None = None,
                 plan: IntervalPlan | None = None):
        self.reference, self.split, self.plan = reference, split, plan
        self.extractor = get_extractor(reference, device, reporter)
        self.real = real_stats(self.extractor, reference, split, reporter)
        self._real_gaussian = gaussian_stats(self.real.features)

    def provenance(self) -> dict:
        """How scores from this evaluator are made: extractor identity, kind and accuracy, split, real-set size."""
        m = self.extractor.meta
        ex = {"id": m["id"], "kind": m.get("kind", "classifier"), "recipe_hash": m["recipe_hash"],
              "trained_on": m.get("trained_on"), "test_accuracy": m["test_accuracy"], "held_out": m.get("held_out"),
              "train_seconds": m["train_seconds"], "feature_dim": int(self.real.features.shape[1])}
        if self.extractor.classifier:
            ex["classes"] = m["num_classes"]
        else:  # its accuracy is at the pretext task, and it has no classes to count
            ex.update(what=DESCRIPTION, test_accuracy_of="predicting the rotation of the held-out images")
        return {"data": self.reference.name, "split": self.split,
                "real_source": self.reference.describe_split(self.split), "n_real": len(self.real),
                "gentool_version": gentool.__version__, "extractor": ex}

    def score(self, images, wanted, seed: int, labels: torch.Tensor | None = None) -> tuple[dict, list[str]]:
        """The metrics in `wanted` (except vae) for uint8 N×C×H×W images (a tensor, or an iterable of such chunks,
        which are never all held at once), and notes on their reliability; with the `labels` a conditional model
        drew them for, also how often the classifier agrees (class_agreement)."""
        chunks = [images] if torch.is_tensor(images) else images
        if not self.extractor.classifier:  # its probabilities are of rotations: no class metric comes from them
            wanted = [m for m in wanted if m not in CLASS_METRICS]
        gen = stream_stats(self.extractor, chunks, projections="emd" in wanted)
        metrics, notes = score_stats(self.real, self._real_gaussian, gen, wanted, seed, self.plan)
        if labels is not None and self.extractor.classifier:
            metrics.update(class_agreement(gen.probs, labels))
        return metrics, notes


def score_stats(real: ImageStats, real_gaussian: tuple, gen: ImageStats, wanted, seed: int,
                plan: IntervalPlan | None = None) -> tuple[dict, list[str]]:
    """The metrics in `wanted` of generated stats against real ones (whose Gaussian fit is `real_gaussian`), with
    `<key>_ci` intervals when `plan` asks for resamples; and notes on their reliability."""
    metrics, notes = {}, []
    n, dim = len(gen), gen.features.shape[1]
    rng = np.random.default_rng(seed)
    boot = Bootstrap(plan, n, dim, seed) if plan and plan.resamples else None
    if "fid" in wanted or "fid-inf" in wanted:
        metrics["fid"] = frechet_distance(*real_gaussian, *gaussian_stats(gen.features))
        if boot:
            boot.fid(gen.features, *real_gaussian)
        if n <= dim:
            notes.append(f"fid: N={n} is not above the feature dimension {dim}, so the covariance is singular; "
                         f"FID is then biased upward and not meaningful (use N ≥ {10 * dim})")
        if len(real) <= dim:  # e.g. a small folder's held-out part: the interval cannot show it (never resampled)
            notes.append(f"fid: the real set has {len(real)} images, not above the feature dimension {dim}, so its "
                         f"covariance is singular and FID is not meaningful, whatever its interval says; score "
                         f"against more real images (--split train, or a larger folder)")
    if "fid-inf" in wanted:
        metrics.update(fid_by_sample_count(real_gaussian, gen.features, seed))
        if metrics["fid_by_n"][0][0] <= dim:
            notes.append(f"fid_inf: its smallest sample count {metrics['fid_by_n'][0][0]} is not above the feature "
                         f"dimension {dim}; the extrapolation needs N ≥ {5 * dim}")
    if "kid" in wanted:
        mean, std, size = kernel_distance(real.features, gen.features, KID_SUBSETS, KID_SUBSET_SIZE, seed)
        metrics.update(kid_mean=mean, kid_std=std, kid_subset_size=size)
        if boot:
            boot.kid(real.features, gen.features)
    if "is" in wanted:
        metrics["is_mean"], metrics["is_std"] = inception_score(gen.probs)
    if "pr" in wanted:
        subset = real.features[rng.choice(len(real), min(n, len(real)), replace=False)]
        member = membership(subset, gen.features, PR_K, cover=boot is not None)
        metrics["precision"], metrics["recall"] = member.precision, member.recall
        if boot:
            boot.share("precision", member.fake_inside)
            boot.recall(member.real_cover)
    if "modes" in wanted:
        metrics.update(mode_coverage(gen.probs, real.probs))
        if boot:
            boot.classes(gen.probs, class_histogram(real.probs, real.probs.shape[1]))
    metrics.update(pixel_scores(real, gen, wanted))
    if boot:
        metrics.update(boot.intervals(metrics))
    if min(n, len(real)) < 1000 and {"kid", "pr"} & set(wanted):
        which = f"{len(real):,} real images" if len(real) < n else f"{n:,} generated images"
        notes.append(f"{which} (scored: {n:,} generated against {len(real):,} real) are few: KID and "
                     f"precision/recall vary a lot between seeds at this size")
    return metrics, notes


def pixel_scores(real: ImageStats, gen: ImageStats, wanted) -> dict:
    """The pixel-space metrics in `wanted`: jsd, emd and the pixel summary (beside the real one)."""
    metrics = {}
    if "jsd" in wanted:
        metrics["jsd"] = histogram_jsd(real.pixel_hist, gen.pixel_hist)
    if "emd" in wanted:
        metrics["emd"] = sliced_wasserstein(real.projections, gen.projections)
    if "pixels" in wanted:
        metrics.update(pixel_summary(gen.pixel_hist, gen.pixel_moments))
        metrics.update({f"real_{k}": v for k, v in pixel_summary(real.pixel_hist, real.pixel_moments).items()})
    return metrics


def class_agreement(probs: np.ndarray, labels: torch.Tensor) -> dict:
    """How often the reference classifier names the class a conditional model was asked to draw: overall, for the
    worst class and per class index. Meaningful when the model was trained on the reference's classes."""
    hits = np.asarray(probs).argmax(axis=1) == labels.numpy()
    y = labels.numpy()
    per_class = {str(k): float(hits[y == k].mean()) for k in np.unique(y)}
    return {"class_agreement": float(hits.mean()), "class_agreement_min": min(per_class.values()),
            "class_agreement_by_class": per_class}


def vae_scores(model, data: ImageData, n: int, seed: int, batch_size: int = BATCH) -> dict:
    """Reconstruction error (BCE summed over pixels), KL and ELBO per image (nats) on up to `n` real images, in eval
    mode with the reparameterisation noise seeded (and the caller's RNG streams left as they were)."""
    images, labels = fixed_subset(data, min(n, len(data)), seed)
    terms = loss_terms(model, images, labels, seed, batch_size)
    rec, kl = terms["reconstruction"], terms["kl"]
    return {"vae_reconstruction": rec, "vae_kl": kl, "elbo": -(rec + kl), "vae_n": len(images)}


def _class_plan(wanted: list[str], req: EvalOptions, reference: Reference, explicit: bool) -> tuple[list, list]:
    """The metrics that can be computed against `reference`, and notes on those left out: gentool's extractor of
    a folder without classes has none to score (inception-v3's are ImageNet's). Named explicitly, a refusal."""
    if req.extractor == INCEPTION or reference.labelled:
        return wanted, []
    left = [m for m in wanted if m in CLASS_METRICS]
    if left and explicit:
        raise bad_value("--metrics", left[0], f"a metric other than {' and '.join(CLASS_METRICS)} for --data "
                        f"{reference.spec}: {NO_CLASSES}")
    notes = [f"{', '.join(left)}: not computed; {NO_CLASSES}"] if left else []
    return [m for m in wanted if m not in CLASS_METRICS], notes


def _metric_plan(wanted: list[str], source: Source, explicit: bool) -> list[str]:
    has_elbo = source.checkpoint is not None and source.checkpoint.model.likelihood_terms
    if "vae" in wanted and not has_elbo:
        if explicit:
            raise bad_value("--metrics", "vae", "vae only for a checkpoint of a model that declares likelihood terms "
                            "(a VAE)")
        wanted = [m for m in wanted if m != "vae"]
    return wanted


@listed_once  # an image folder is listed once for the whole command
def evaluate(req: EvalOptions, reporter: Reporter | None = None) -> dict:
    """Score req.source against the reference data's split; returns the result (also written to req.out)."""
    started = time.perf_counter()
    wanted = req.validate()
    device = pick_device(req.device)
    use_threads(req.threads, device)
    check_precision(req.precision, device)
    source = open_source(req.source, device, req.weights)
    precision = None  # samples from a file were drawn elsewhere: no precision applies
    if source.checkpoint is not None:
        precision = choose_precision(req.precision, device)
        prepare(source.checkpoint.model, device, precision.used)
    wanted = _metric_plan(wanted, source, explicit=req.metrics.strip().lower() != "all")
    settings = _sample_settings(source, req.sample_options)
    reference = _reference(req, source, reporter)
    wanted, class_notes = _class_plan(wanted, req, reference, explicit=req.metrics.strip().lower() != "all")
    check_geometry(source, reference_geometry(reference).shape, reference.spec, own_shape(reference))
    count = source.count(req.n)
    if count < MIN_N:
        raise UsageError(f"SOURCE: {source.path} holds {count} images; evaluation needs at least {MIN_N}")
    plan = IntervalPlan(req.intervals, float(req.level))
    if reporter is not None and req.extractor != INCEPTION:  # before the extractor and statistics load (seconds)
        # (Inception's weights are the user's file, checked first: a refusal of them stays one line)
        reporter.message(f"scoring {count:,} samples of {source.path} against {reference.describe_split(req.split)}")
    evaluator = _evaluator(req, reference, device, reporter, plan)
    labels = source.labels(count)
    drawing = None if source.checkpoint is None or reporter is None else Drawing(count, reporter, "to score")
    chunks = source.chunks(req.n, req.seed, settings, progress=drawing)
    metrics, notes = evaluator.score(chunks, wanted, req.seed, labels)
    notes = class_notes + notes
    if "class_agreement_by_class" in metrics:
        names = source.checkpoint.data.get("class_names") or []
        metrics["class_agreement_by_class"] = {names[int(k)] if int(k) < len(names) else k: v
                                               for k, v in metrics["class_agreement_by_class"].items()}
    if req.extractor == INCEPTION and req.intervals:
        notes.append("intervals: not computed with inception-v3 (a bootstrap of its 2,048-dimensional features "
                     "costs more than the evaluation); gentool's extractor gives them")
    if count < req.n:
        default = EvalOptions.__dataclass_fields__["n"].default
        asked = f"--n {req.n:,}" if req.n != default else f"--n's default of {req.n:,}"
        notes.append(f"{req.source} holds {count:,} images, fewer than {asked}; all of them were scored")
    busy = load_warning(torch.get_num_threads()) if device.type == "cpu" else None
    if busy:  # the scores stand; the seconds this evaluate reports do not describe the machine
        notes.append(busy)
    if "vae" in wanted:
        metrics.update(vae_scores(source.checkpoint.model, reference.load(req.split), req.n, req.seed))
    result = {"source": str(source.path), "kind": source.kind, **_checkpoint_info(source),
              "n": count, "seed": req.seed, "sampling_precision": precision and precision.used,
              **({"sampling_precision_reason": precision.reason} if precision else {}),
              **({"sampling": settings} if source.checkpoint is not None else {}),
              **evaluator.provenance(), "metrics": metrics, "notes": notes,
              **({"interval": plan.describe()} if any(k.endswith("_ci") for k in metrics) else {}),
              "seconds": round(time.perf_counter() - started, 1)}
    if req.out:
        atomic_write_json(req.out, result)
    return result


def _evaluator(req: EvalOptions, reference: Reference, device: torch.device, reporter: Reporter | None,
               plan: IntervalPlan):
    """gentool's own extractor, or Inception-v3 with the user's weights (--extractor inception-v3)."""
    if req.extractor == INCEPTION:
        from gentool.metrics.inception import InceptionEvaluator  # needs the optional torch-fidelity

        return InceptionEvaluator(reference, req.split, device, req.extractor_weights, reporter)
    return Evaluator(reference, req.split, device, reporter, plan)


def _sample_settings(source: Source, given: dict) -> dict:
    """The checkpoint's sampler settings with `given` applied; settings for stored images are refused."""
    if source.checkpoint is not None:
        return source.checkpoint.model.sample_settings(given)
    named = [k for k, v in given.items() if v is not None]
    if named:
        raise ConfigError(named[0], f"a sampler setting, but SOURCE {source.path} holds images, not a checkpoint",
                          section=SAMPLER)
    return {}


def _reference(req: EvalOptions, source: Source, reporter: Reporter | None) -> Reference:
    """The real data to score against (a folder's at the size the model was trained at): --data (and --data-dir),
    else what the checkpoint was trained on, in the --data-dir it was trained with (a run on a cluster's scratch
    copy of MNIST is scored there without repeating it) while that folder holds the data as it is: the folder is
    named by a file, so it is only read, never made, written or downloaded into (else a note, and $GENTOOL_DATA or
    the cache folder as with none recorded)."""
    data = req.data or source.data_spec
    if not data:
        raise UsageError("--data: missing; say which data set SOURCE imitates: mnist, cifar10, mnist-sample or a "
                         "folder of images")
    recorded = None if req.data or req.data_dir else source.data_dir
    data_dir = req.data_dir
    if recorded and os.path.isabs(recorded) and holds_data(data.lower(), Path(recorded)):
        data_dir = RecordedDir(recorded)  # named so in messages: the user gave no --data-dir
    elif recorded and reporter is not None:
        reporter.message(f"note: SOURCE was trained with --data-dir {recorded}, which does not hold {data} now "
                         f"(gentool never downloads into it); using the default data folder (--data-dir to choose)")
    try:
        reference = resolve_reference(data, data_dir)
    except UsageError:
        if req.data:
            raise
        raise UsageError(f"--data: SOURCE was trained on {data!r}, which is not found from here; pass --data "
                         f"(and --data-dir) to name the real data") from None
    return reference.sized_for(source.shape)


def _checkpoint_info(source: Source) -> dict:
    if source.checkpoint is None:
        return {}
    ckpt = source.checkpoint
    info = {"model": ckpt.model.name, "epoch": ckpt.state.get("epoch"), "step": ckpt.state.get("step"),
            "weights": ckpt.weights}
    teacher = ckpt.data.get("teacher")  # a distilled student: what it imitates is part of how its score was made
    return {**info, "teacher": teacher} if teacher else info
