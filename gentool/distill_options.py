"""What `gentool distill` accepts: one keyword-only dataclass, each option declared once (with its help text),
checked before any work. The training options it shares with `train` are train's own fields (`copy_option`).

Imports nothing heavy: `gentool distill --help` reads this module without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from gentool.errors import UsageError, bad_value
from gentool.checks import Ints, Numbers
from gentool.train_options import FIELDS, MAX_COUNT, check_threads, copy_option, option

MAX_STUDENT_STEPS = 16  # a student drawing in more steps than this saves little over its teacher
ADVERSARIAL = 0.5  # the critic's weight (measured on MNIST: docs/guides/models.md, "Distillation")


def _check(name: str):
    """train's check of the option `name` (the same values are accepted where distill takes the same option)."""
    return FIELDS[name].metadata["check"]


@dataclass(kw_only=True)
class DistillOptions:
    """Everything `gentool distill` accepts."""

    teacher: str | None = option(
        "The teacher: a flow or ddpm run directory (its last.safetensors) or checkpoint. Not with --resume.",
        metavar="RUN|CKPT", argument=True)
    out: str | None = option("The student's run directory (default: the teacher's run directory + "
                             "'-reflow<K>').", metavar="DIR")
    steps: int = option("Sampler steps (network evaluations per sample) the student is made for.", default=2,
                        metavar="K", check=Ints(1, MAX_STUDENT_STEPS, f"an integer from 1 to {MAX_STUDENT_STEPS}"))
    pairs: int | None = option(
        "Couplings (noise and the teacher's sample from it) drawn from the teacher and trained on; kept beside the "
        "teacher, in its run's couplings/ folder, for the next student (default: 10,000 with the critic, 20,000 "
        "without).", metavar="N")
    teacher_steps: int | None = option(
        "The teacher's sampler steps for the couplings (default: twice its own with the critic, e.g. 32 for flow's "
        "16: a closer target for the same drawing time as 20,000 at its own; its own without).", metavar="N")
    teacher_solver: str | None = option(
        "The teacher's solver for the couplings (default: its own when deterministic, else its first deterministic "
        "one, e.g. ddpm's ddim).", metavar="NAME")
    adversarial: float | None = option(
        f"Weight of the critic that tells the student's samples from the teacher's, relative to the regression to the "
        f"teacher's sample (default: {ADVERSARIAL}; 0: plain reflow, each step trained alone).", metavar="W",
        check=Numbers(0, 100))
    slim: bool = option("A cheaper student: its network leaves out the teacher's first full-resolution residual "
                        "block, so each evaluation costs less (about a fifth on MNIST's U-Net).", default=False)
    resume: str | None = option("Continue the student's training in RUN (its run directory or checkpoint).",
                                metavar="RUN|CKPT")
    epochs: int | None = option("Total epochs over the couplings (default: 10, with the critic or without; with "
                                "--resume: the total, not more).",
                                default=None, metavar="N")
    max_minutes: float | None = copy_option("max_minutes", help=(
        "Stop after this much wall-clock time (drawing the couplings and training together) or at --epochs, "
        "whichever comes first, saving what was made: the same command (while drawing) or --resume continues."))
    batch_size: int | None = option("Batch size (default: 64 with the critic, else the teacher's).", metavar="B",
                                    check=_check("batch_size"))
    lr: float | None = option("Learning rate (default: 5e-5 with the critic, 2e-4 without: the student starts "
                              "from the teacher's weights).", metavar="LR", check=_check("lr"))
    seed: int = option("Random seed of the couplings and the training.", default=0, metavar="S", check=_check("seed"))
    device: str = copy_option("device", default="auto")
    precision: str | None = copy_option("precision")
    threads: int | None = copy_option("threads")
    checkpoint_every: int | None = copy_option("checkpoint_every")
    overwrite: bool = option("Replace the student's run in --out (only gentool's own files in it are removed).",
                             default=False)

    def validate(self) -> None:
        """Reject option values before any work starts."""
        if (self.teacher is None) == (self.resume is None):
            raise UsageError("RUN: give the teacher's run (or checkpoint) to distill, or --resume RUN to continue a "
                             "distillation (not both)")
        for name, value, low, high in (("--steps", self.steps, 1, MAX_STUDENT_STEPS),
                                       ("--pairs", self.pairs, 2, MAX_COUNT),
                                       ("--teacher-steps", self.teacher_steps, 1, MAX_COUNT),
                                       ("--epochs", self.epochs, 1, MAX_COUNT)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or
                                      not low <= value <= high):
                raise bad_value(name, value, f"an integer from {low} to {high:,}")
        if self.max_minutes is not None:  # train's check, as the command line applied it
            _check("max_minutes")("--max-minutes", self.max_minutes)
        if self.resume and self.adversarial is not None:
            raise UsageError("--adversarial: not allowed with --resume (a resumed student keeps its own)")
        if self.resume and self.slim:
            raise UsageError("--slim: not allowed with --resume (a resumed student keeps its own network)")
        if self.resume and self.overwrite:
            raise UsageError("--overwrite: not allowed with --resume (a resumed run keeps its files)")
        check_threads(self.threads)
