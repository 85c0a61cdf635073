"""Training that watches itself (`gentool train --eval-every K --stop-on-divergence`).

After each epoch: each loss and distance estimate in the epoch's record is compared with its recent range, and a
jump far outside it (or a non-finite value, or steps dropped for non-finite gradients) is a divergence. Every K
epochs the model's samples are scored (FID and mode coverage against the real test split; FID alone against a
folder without classes), the lowest-FID state is kept as best.safetensors (a new best only when its FID interval
lies wholly below the best FID so far: BEST_RULE), an FID more than doubling from its best (or worse than uniform
noise's and not improving) is a divergence too, and coverage of at most half the classes is a mode collapse. Each
finding is printed as a warning and recorded in metrics.json under "events"; with --stop-on-divergence a divergence
ends the run cleanly.
"""

from __future__ import annotations

import math

import torch

from gentool import rundir
from gentool.data import peek_geometry
from gentool.errors import UsageError, bad_value
from gentool.images import to_uint8
from gentool.metrics.evaluate import MAX_N, MIN_N, Evaluator
from gentool.metrics.intervals import IntervalPlan
from gentool.metrics.pretext import CLASS_METRICS
from gentool.metrics.reference import resolve_reference
from gentool.progress import Reporter, format_metrics
from gentool.sampling import sample_chunks
from gentool.hooks import EVALUATION_KEYS, RunView, TrainHook
from gentool.train_options import EVERY, TrainOptions


WINDOW = 5  # recent epochs a value is compared with
MIN_HISTORY = 3  # values needed before a jump is judged (early epochs move a lot)
JUMP = 4.0  # "far outside": beyond the recent range by this many times its width ...
REL_FLOOR = 0.25  # ... where the width counts as at least this share of the recent magnitude
# What is judged for jumps: losses (any key naming one) and the families' distance estimates. Loss components such
# as the VAE's KL are left out: one rising from near zero as training starts to use the latents is no divergence.
ESTIMATES = ("emd", "jsd")
WATCH_METRICS = ("fid", "modes")
BEST_RULE = ("a new best only when the upper end of its FID interval (bootstrap over the generated samples) is "
             "below the best FID so far")
FID_JUMP = 2.0  # an FID above this multiple of its best so far is a divergence
NOT_WARNINGS = ("best_within_noise",)  # event kinds printed as notes
NO_PROGRESS = 0.9  # ... and so is one worse than noise's that is above this share of the previous one


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def find_jump(recent: list[float], value: float) -> tuple[float, float] | None:
    """The recent range (lo, hi) when `value` is non-finite or lies far outside it, else None (also when there is
    too little history to judge)."""
    recent = [v for v in recent[-WINDOW:] if _finite(v)]
    if len(recent) < MIN_HISTORY:
        return None
    lo, hi = min(recent), max(recent)
    if not _finite(value):
        return lo, hi
    width = max(hi - lo, REL_FLOOR * max(abs(lo), abs(hi)), 1e-12)
    if value > hi + JUMP * width or value < lo - JUMP * width:
        return lo, hi
    return None


def _event(record: dict, kind: str, message: str, **extra) -> dict:
    clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in extra.items()}
    return {"epoch": record["epoch"], "step": record["step"], "kind": kind, "message": message, **clean}


def divergence_events(previous: list[dict], record: dict) -> list[dict]:
    """Divergence events for an epoch's record given the earlier records (losses need no extractor)."""
    events = []
    if record.get("skipped_steps"):
        events.append(_event(record, "divergence", f"{record['skipped_steps']} optimizer steps had non-finite "
                                                   f"gradients in epoch {record['epoch']}", key="skipped_steps"))
    for key, value in record.items():
        if not ("loss" in key or key in ESTIMATES) or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        jump = find_jump([r[key] for r in previous if key in r], value)
        if jump:
            lo, hi = jump
            events.append(_event(record, "divergence", f"{key} = {value:.4g} in epoch {record['epoch']} is far "
                                                       f"outside its recent range {lo:.4g} to {hi:.4g}",
                                 key=key, value=value, recent_low=lo, recent_high=hi))
    return events


def collapse_event(record: dict, classes: int) -> dict | None:
    """A mode-collapse event when the samples cover at most half of the classes."""
    modes = record.get("modes")
    if modes is None or classes < 2 or modes * 2 > classes:
        return None
    return _event(record, "mode_collapse", f"mode collapse: samples cover only {modes} of {classes} classes in "
                                           f"epoch {record['epoch']}", modes=modes, classes=classes)


class _Relay(Reporter):
    """Shows the extractor's training (first use) as messages inside the run's own progress output."""

    def __init__(self, target: Reporter):
        self.target = target

    def epoch_end(self, record: dict) -> None:
        self.target.message(f"  extractor epoch {record['epoch']}: {record['seconds']:.0f} s "
                            f"{format_metrics(record, ['train_accuracy'])}")

    def message(self, text: str) -> None:
        self.target.message(text)

    def pace(self):
        return self.target.pace()


class TrainingWatch(TrainHook):
    """Divergence detection every epoch; with eval_every, FID/mode evaluation, best.safetensors and collapse
    detection; with stop_on_divergence, a divergence ends the run (best.safetensors kept)."""

    def __init__(self):
        self.eval_every, self.eval_n, self.stop, self.seed = 0, 0, False, 0
        self.evaluator = None
        self.noise_fid = math.inf  # FID of uniform noise: samples scoring worse than that have left the data
        self.fid_ci = None  # the last evaluation's FID interval

    def setup(self, opts: TrainOptions) -> None:
        check_watch_options(opts)
        self.eval_every, self.eval_n, self.stop = opts.eval_every, opts.eval_n, opts.stop_on_divergence
        self.seed = opts.seed

    def on_epoch_end(self, session: RunView, record: dict, reporter: Reporter) -> None:
        previous = [r for r in session.history["epochs"] if r is not record]
        events = divergence_events(previous, record)
        epoch = record["epoch"]
        if self.eval_every and (epoch % self.eval_every == 0 or epoch == session.opts.epochs):
            classes = self._evaluate(session, record, reporter)
            events += self._judge_samples(previous, record, classes)
        diverged = any(e["kind"] == "divergence" for e in events)
        events += filter(None, [self._keep_best(session, record, diverged)])
        for event in events:
            reporter.message(f"{'note' if event['kind'] in NOT_WARNINGS else 'warning'}: {event['message']}")
            session.history.setdefault("events", []).append(event)
        if diverged and self.stop:
            best = session.run_dir / rundir.BEST
            kept = f"; best checkpoint kept: {best}" if best.exists() else ""
            session.stop(f"stopped after epoch {epoch}: training diverged (--stop-on-divergence){kept}")

    def _evaluate(self, session: RunView, record: dict, reporter: Reporter) -> int:
        """Score the model's samples into the record (fid, modes, class_kl; fid alone against a folder without
        classes); returns the number of classes (0: none)."""
        if self.evaluator is None:
            c = session.model.config
            # couplings are scored against the data set their teacher imitates
            real = (session.data.origin or {}).get("source") or session.opts.data
            reference = resolve_reference(real, session.opts.data_dir).sized_for(
                (c.channels, c.image_height, c.image_width))
            self.evaluator = Evaluator(reference, "test", session.model.device, _Relay(reporter), IntervalPlan())
            noise = torch.randint(0, 256, (self.eval_n, c.channels, c.image_height, c.image_width),
                                  generator=torch.Generator().manual_seed(self.seed), dtype=torch.uint8)
            self.noise_fid = self.evaluator.score(noise, ("fid",), self.seed)[0]["fid"]
            session.history["evaluation"] = {**self.evaluator.provenance(), "n": self.eval_n, "seed": self.seed,
                                             "metrics": self._metrics(), "every": self.eval_every,
                                             "fid_uniform_noise": self.noise_fid, "best_rule": BEST_RULE,
                                             "interval": IntervalPlan().describe(),
                                             "sampling": session.sample_settings}
        with session.sampling() as model:
            drawn = sample_chunks(model, self.eval_n, torch.Generator().manual_seed(self.seed),
                                  settings=session.sample_settings)
            chunks = (torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).contiguous() for images in drawn)
            metrics, _ = self.evaluator.score(chunks, self._metrics(), self.seed)
        record.update({key: metrics[key] for key in EVALUATION_KEYS if key in metrics})
        self.fid_ci = metrics.get("fid_ci")
        return metrics.get("classes", 0)

    def _metrics(self) -> list[str]:
        """WATCH_METRICS, without mode coverage when the extractor has no classes (a folder without any)."""
        return [m for m in WATCH_METRICS if self.evaluator.extractor.classifier or m not in CLASS_METRICS]

    def _fid_problem(self, fids: list[tuple[float, int]], fid: float, epoch: int) -> tuple[str, dict] | None:
        """Why an FID means divergence, given the earlier (fid, epoch) pairs: over FID_JUMP× the best so far, or
        worse than uniform noise's without improving on the previous one (a run that broke in its first epoch)."""
        if not fids:
            return None
        best, best_epoch = min(fids)
        if fid > FID_JUMP * best:
            return (f"fid = {fid:.4g} in epoch {epoch} is over {FID_JUMP:g}× its best so far ({best:.4g}, epoch "
                    f"{best_epoch})", {"best": best})
        if fid >= self.noise_fid and fid > NO_PROGRESS * fids[-1][0]:
            return (f"fid = {fid:.4g} in epoch {epoch} is worse than uniform noise's ({self.noise_fid:.4g}) and not "
                    f"improving", {"noise_fid": self.noise_fid})
        return None

    def _judge_samples(self, previous: list[dict], record: dict, classes: int) -> list[dict]:
        """Events for an evaluation (divergence from the FID, mode collapse from the coverage), raised when a
        condition starts, not again at every evaluation while it lasts."""
        evaluated = [r for r in previous if _finite(r.get("fid"))]
        fids = [(r["fid"], r["epoch"]) for r in evaluated]
        events = []
        problem = self._fid_problem(fids, record["fid"], record["epoch"])
        if problem and not (fids and self._fid_problem(fids[:-1], *fids[-1])):
            message, extra = problem
            events.append(_event(record, "divergence", message, key="fid", value=record["fid"], **extra))
        collapse = collapse_event(record, classes)
        if collapse and not (evaluated and collapse_event(evaluated[-1], classes)):
            events.append(collapse)
        return events

    def _keep_best(self, session: RunView, record: dict, diverged: bool) -> dict | None:
        """best.safetensors: the lowest FID so far, beyond the noise (BEST_RULE); without evaluation (but with
        --stop-on-divergence), the last epoch before a divergence. Returns an event when a lower FID was within
        its interval of the best, so not kept."""
        best = session.history.get("best") or {}
        if self.eval_every:
            if "fid" not in record:
                return None
            ci = self.fid_ci or [record["fid"], record["fid"]]
            if best.get("fid") is not None and ci[1] >= best["fid"]:
                return self._within_noise(record, best, ci) if record["fid"] < best["fid"] else None
            session.history["best"] = {"epoch": record["epoch"], "fid": record["fid"], "fid_low": ci[0],
                                       "fid_high": ci[1], "rule": BEST_RULE}
        elif self.stop and not diverged:
            session.history["best"] = {"epoch": record["epoch"], "fid": None}
        else:
            return None
        session.save(session.run_dir / rundir.BEST)
        return None

    @staticmethod
    def _within_noise(record: dict, best: dict, ci: list[float]) -> dict:
        return _event(record, "best_within_noise", f"fid = {record['fid']:.4g} [{ci[0]:.4g}, {ci[1]:.4g}] in epoch "
                      f"{record['epoch']} is below the best so far ({best['fid']:.4g}, epoch {best['epoch']}) but "
                      f"within its interval: best.safetensors keeps epoch {best['epoch']}", key="fid",
                      value=record["fid"], fid_low=ci[0], fid_high=ci[1], best=best["fid"], rule=BEST_RULE)

    def on_train_end(self, session: RunView, reporter: Reporter) -> None:
        best = session.history.get("best")
        if best and best.get("fid") is not None:
            reporter.message(f"best.safetensors: epoch {best['epoch']}, FID {best['fid']:.4g} (kept as {BEST_RULE})")


def check_watch_options(opts: TrainOptions) -> None:
    """Reject watch options that cannot work, before training starts."""
    if not isinstance(opts.eval_every, int) or opts.eval_every < 0:
        raise bad_value("--eval-every", opts.eval_every, EVERY.accepted())
    if not isinstance(opts.eval_n, int) or not MIN_N <= opts.eval_n <= MAX_N:
        raise bad_value("--eval-n", opts.eval_n, f"an integer between {MIN_N} and {MAX_N:,}")
    if not opts.eval_every:
        return
    builtin = not opts.data or opts.data.lower() in ("mnist", "cifar10", "mnist-sample")
    if opts.image_size is not None and builtin:
        raise UsageError("--eval-every: not available with --image-size on a built-in data set (its real images "
                         "keep their own size); an image folder is scored at the size given")
    geometry = None if builtin else peek_geometry(opts.data, opts.image_size)
    if geometry is not None and geometry.num_classes < 2 and geometry.height != geometry.width:
        raise UsageError(f"--eval-every: {opts.data} has no class subfolders and its images are {geometry.width}x"
                         f"{geometry.height}; its extractor learns to predict rotations, which needs square images "
                         f"(pass --image-size)")
