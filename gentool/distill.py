"""`gentool distill`: turn a trained flow or ddpm into a `reflow` student that draws in a few network evaluations.

Reflow (Liu et al., 2023): the teacher's deterministic sampler turns noise into samples; those couplings
(`gentool.couplings`) are a data set, and a flow trained on them — starting from the teacher's weights — learns
paths from each noise to its own sample, nearly straight, which a few Euler steps follow. Chosen by measurement
over a plain few-step sampler of the teacher (docs/guides/models.md, "Distillation"). The couplings are drawn once
per teacher, sampler and seed, in parts a later run continues, and the student trains in the ordinary training loop
(`gentool.train`): resumable, with progress, --max-minutes, grids and checkpoints like any run. By default a critic
sharpens the student (`--adversarial`, `gentool.models.reflow`): regression alone leaves its strokes averaged.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gentool import couplings as cp
from gentool import fileio, links, rundir, stops
from gentool.checkpoint import Checkpoint, load_checkpoint
from gentool.distill_options import ADVERSARIAL, DistillOptions
from gentool.errors import GentoolError, UsageError, settings_text
from gentool.guards import Interrupted, StopSignals
from gentool.hooks import TrainHook
from gentool.images import make_grid, to_uint8, write_png
from gentool.paths import refusal, write_probe
from gentool.distill_progress import DrawingPace
from gentool.progress import Reporter
from gentool.resume import command_name
from gentool.train_options import TrainOptions

STUDENT = "reflow"
STUDENT_LR = 2e-4
# With the critic, a GAN's recipe (measured on MNIST, docs/guides/models.md "Distillation"): Adam with β1 0.5 at a
# quarter of the plain student's rate, batches of 64, an average of the weights spanning about 100 steps, and 5
# epochs over the couplings (about 1,600 steps over 20,000)
# With the critic, couplings from twice the teacher's own sampler steps, half as many (the same network evaluations
# to draw), seen twice as often (the same training steps): measured on MNIST, 4.90 against 5.27 at 1,570 steps
# (benchmarks/RESULTS.md, "A closer target for the couplings").
ADVERSARIAL_RECIPE = {"lr": 5e-5, "beta1": 0.5, "batch_size": 64, "ema": 0.99, "epochs": 10, "pairs": 10_000,
                      "teacher_step_factor": 2}
PLAIN_PAIRS = 20_000
GRID = 8
DRAW_BATCH = 50  # couplings drawn at a time: a stop signal waits for one batch (seconds), not a 500-pair part
TEACHER_EXPECTED = "a flow or ddpm run directory or its .safetensors checkpoint"  # what RUN accepts
TEACHER_GRID = rundir.TEACHER_GRID  # beside the student's epoch grids: the teacher's samples from the same noise


def teacher_checkpoint(teacher: str) -> Path:
    """The teacher's checkpoint (a run directory's last.safetensors), as an absolute path: the student's default
    folder is named after the teacher's; one that is not there is refused before anything else."""
    path = Path(teacher).expanduser().absolute()
    path = path / rundir.LAST if os.path.isdir(path) else path
    why = fileio.not_regular(path)  # (stat only: a pipe there cannot block)
    if why == fileio.MISSING:
        rundir.refuse_if_written(path.parent, "RUN")  # started a moment ago: its first checkpoint is to come
        raise UsageError(f"RUN: {teacher} has no checkpoint ({path} does not exist); expected {TEACHER_EXPECTED}")
    if why is not None:
        raise UsageError(f"RUN: {path} {why}; expected {TEACHER_EXPECTED}")
    return path


def load_teacher(path: Path, device: torch.device) -> Checkpoint:
    """The teacher (EMA weights when kept), refused unless the student can learn from it."""
    ckpt = load_checkpoint(path, device, "RUN", expected=TEACHER_EXPECTED)
    model = ckpt.model
    if model.conditional:
        raise UsageError(f"RUN: {path} holds a class-conditional {model.name}; distill takes unconditional "
                         f"teachers (flow, ddpm) for now")
    if not model.has_latent or "steps" not in model.sample_settings():
        raise UsageError(f"RUN: {path} holds a {model.name}, which draws in one pass already; distill takes a "
                         f"family with a step-by-step sampler (flow, ddpm)")
    return ckpt


def deterministic(model, settings: dict) -> bool:
    """Whether the sampler with `settings` is a function of the noise alone (two draws from the same latents with
    different generators agree): only such a sampler gives couplings."""
    z = model.sample_latent(2, torch.Generator().manual_seed(0))
    a = model.generate(2, torch.Generator().manual_seed(1), latents=z, settings=settings)
    b = model.generate(2, torch.Generator().manual_seed(2), latents=z, settings=settings)
    return torch.equal(a, b)


def critic_weight(opts: DistillOptions) -> float:
    """--adversarial as given, else the default (0: no critic)."""
    return ADVERSARIAL if opts.adversarial is None else opts.adversarial


def with_defaults(opts: DistillOptions) -> DistillOptions:
    """--pairs as given, else the recipe's (10,000 with the critic, 20,000 without)."""
    pairs = opts.pairs or (ADVERSARIAL_RECIPE["pairs"] if critic_weight(opts) else PLAIN_PAIRS)
    return dataclasses.replace(opts, pairs=pairs)


def teacher_settings(model, opts: DistillOptions) -> dict:
    """The teacher's sampler for the couplings: as asked, else its own (with the critic: twice its own steps), else
    its first deterministic solver."""
    steps, own = opts.teacher_steps, model.sample_settings()
    if steps is None and critic_weight(opts) and "steps" in own:
        steps = min(ADVERSARIAL_RECIPE["teacher_step_factor"] * own["steps"], 1000)
    given = {"steps": steps, "solver": opts.teacher_solver}
    settings = model.sample_settings(given)
    if deterministic(model, settings):
        return settings
    if opts.teacher_solver is None:
        solver = next((o for o in model.sample_options if o.name == "solver"), None)
        for choice in solver.choices if solver else ():
            candidate = model.sample_settings({**given, "solver": choice})
            if deterministic(model, candidate):
                return candidate
    raise UsageError(f"--teacher-solver: {model.name}'s sampler ({settings_text(settings)}) draws fresh noise at "
                     f"each step, so its samples are no function of their noise; couplings need a deterministic solver")


def couplings_folder(ckpt: Checkpoint, settings: dict, seed: int) -> Path:
    """Where a teacher's couplings are kept: its run's couplings/ folder, one subfolder per checkpoint state,
    sampler and seed (a later student of the same teacher reuses and extends them)."""
    sampler = "-".join(f"{k}{v}" for k, v in sorted(settings.items()))
    name = f"{ckpt.path.stem}-step{ckpt.state['step']}-{ckpt.weights}-{sampler}-seed{seed}"
    # the teacher's run folder is gentool's while it writes there: a link below it (couplings/) is refused
    return links.own(ckpt.path.parent) / "couplings" / name


def drawing(pairs: int, done: int) -> str:
    """What is drawn and why, in words: "drawing 500 (in parts of 500; 256 asked for, the rest kept for a later
    student)". Whole parts are drawn (a kill loses at most one), so a later student asking for more reuses them."""
    count = (math.ceil(pairs / cp.PART) - done) * cp.PART
    why = [f"in parts of {cp.PART:,}"] if count != pairs - done * cp.PART else []
    if not (why or done):  # just what was asked for: "drawing 1,500 (1,500 asked for)" said nothing more
        return f"drawing {count:,}"
    asked = f"{pairs:,} asked for" + (f", {done * cp.PART:,} drawn before" if done else "")
    if why:
        asked += ", the rest kept for a later student"
    return f"drawing {count:,}{' more' if done else ''} ({'; '.join([*why, asked])})"


def draw_couplings(ckpt: Checkpoint, settings: dict, opts: DistillOptions, reporter: Reporter,
                   deadline: float | None, student: tuple[Path, int] | None = None) -> tuple[Path, bool]:
    """Draw the couplings the student needs (the parts not drawn yet), with progress and an ETA; returns their
    folder and whether they are all there (False when --max-minutes or a signal stopped the drawing; the parts
    drawn are kept). `student`: its run folder and the disk it asks for (`check_room`), counted with the parts to
    draw when they share a disk."""
    model = ckpt.model
    folder = couplings_folder(ckpt, settings, opts.seed)
    teacher = {"checkpoint": str(ckpt.path.absolute()), "model": model.name, "step": int(ckpt.state["step"]),
               "epoch": int(ckpt.state["epoch"]), "weights": ckpt.weights, "sampling": settings}
    data = {k: ckpt.data[k] for k in ("name", "source", "class_names") if k in ckpt.data}
    data = {**data, "geometry": ckpt.data["geometry"]}
    # what is there already, with a damaged or another teacher's manifest or part moved aside (redrawn)
    need = math.ceil(opts.pairs / cp.PART)
    done = cp.usable_parts(folder, cp.make_manifest(teacher, data, opts.seed, model.latent_shape),
                           lambda k: _part_noise(model, k, opts.seed),
                           lambda z: teacher_images(model, z, settings, torch.Generator().manual_seed(0)), need)
    cp.check_drawing(folder, ckpt.data["geometry"], model.latent_shape, opts.pairs, done * cp.PART, student)
    cp.new_manifest(folder, teacher, data, opts.seed, model.latent_shape)
    if done >= need:
        if deadline is not None and minutes_left(deadline) <= 0:  # the same command would do this again and again
            raise UsageError(f"--max-minutes: {opts.max_minutes:g} was used up before any work (the {opts.pairs:,} "
                             f"couplings were drawn before, and the start took the rest); give more minutes")
        reporter.message(f"couplings: {opts.pairs:,} of the teacher's in {folder}")
        return folder, True
    reporter.message(f"couplings: {drawing(opts.pairs, done)} from {ckpt.path} ({model.name}: "
                     f"{settings_text(settings)}) into {folder}")
    pace, drawn = DrawingPace(reporter, done * cp.PART, need * cp.PART, deadline, opts.max_minutes), 0
    with StopSignals(doing="stopping the drawing of couplings after the current batch", raise_again=True) as signals:
        def stopped() -> bool:  # a signal, or --max-minutes used up: acted on within a batch (seconds)
            return bool(signals.signum) or (deadline is not None and time.monotonic() >= deadline)

        for k in range(done, need):
            part = _draw_part(model, k, opts.seed, settings, stopped, lambda n, k=k: pace(k * cp.PART + n))
            if part is None:  # stopped inside the part: what was drawn of it is dropped, the parts before are kept
                if not drawn and not signals.signum:  # nothing kept: the same command would stop here each time
                    raise UsageError(f"--max-minutes: {opts.max_minutes:g} ended inside the first part of "
                                     f"{cp.PART:,} couplings, which is dropped (parts are kept whole), so nothing was "
                                     f"kept; give more minutes")
                return folder, False
            cp.write_part(folder, k, *part)
            drawn += cp.PART
            stop = k + 1 < need and stopped()
            pace((k + 1) * cp.PART, last=k + 1 == need or bool(stop))  # where a stopped drawing ended, too
            if stop:
                return folder, False
    return folder, True


def minutes_left(deadline: float) -> float:
    """Whole hundredths of a minute to `deadline` (time.monotonic()): what --max-minutes leaves the student."""
    return math.floor((deadline - time.monotonic()) / 60 * 100) / 100


def _part_seed(k: int, seed: int) -> int:
    return seed * 1_000_003 + k


def _part_noise(model, k: int, seed: int) -> torch.Tensor:
    """Part k's noise, as `_draw_part` draws it first from the part's seed (what a kept part is checked against)."""
    return model.sample_latent(cp.PART, torch.Generator().manual_seed(_part_seed(k, seed)))


def _draw_part(model, k: int, seed: int, settings: dict, stopped: Callable[[], bool],
               tick: Callable[[int], None] = lambda n: None):
    """Part k's images, noise and labels, drawn DRAW_BATCH pairs at a time so that a stop (a signal, the time
    budget) is acted on within a batch's time (seconds), not a whole part's; None when `stopped()` (the part is not
    written: a part on disk is always whole). Its own seed makes part k the same in any session. `tick` is told how
    many of the part are drawn after each batch."""
    g = torch.Generator().manual_seed(_part_seed(k, seed))
    z = model.sample_latent(cp.PART, g)
    batches = []
    for first in range(0, cp.PART, DRAW_BATCH):
        if stopped():
            return None
        batches.append(teacher_images(model, z[first:first + DRAW_BATCH], settings, g))
        if first + DRAW_BATCH < cp.PART:  # (the part's end: the caller's line, once it is written)
            tick(first + DRAW_BATCH)
    return torch.cat(batches), z, torch.full((cp.PART,), -1)


def teacher_images(model, z: torch.Tensor, settings: dict, g: torch.Generator) -> torch.Tensor:
    """The teacher's samples from noise `z`, as a part stores them (uint8 N×C×H×W): drawn for a part, and again for
    the few rows that verify a kept one (gentool.couplings.usable_parts)."""
    images = model.generate(len(z), g, latents=z, settings=settings, batch_size=DRAW_BATCH)
    return torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2)


def check_room(ckpt: Checkpoint, settings: dict, opts: DistillOptions, out: Path) -> int:
    """Before the couplings are drawn: the couplings folder and the student's run directory (given, or named after
    the teacher's) can hold the longest paths written there, in one line naming the path otherwise; returns the
    disk the student's run asks for (as train checks it: gentool.rundir.run_bytes), which `draw_couplings` counts
    with the couplings to draw."""
    folder = couplings_folder(ckpt, settings, opts.seed)
    last_part = cp.part_path(folder, math.ceil(opts.pairs / cp.PART) - 1)
    try:
        write_probe(folder, fileio.temporary_name(last_part.name))
        if folder.is_dir():  # parts are replaced where missing: none may be a link to a file of the user's
            links.refuse_linked(folder, [cp.MANIFEST, "part_*.safetensors", ".*.tmp"])
    except links.LinkRefused as exc:
        raise UsageError(f"RUN: {exc}") from None
    except OSError as exc:
        raise refusal(exc, f"RUN: cannot write the couplings in {folder} ({fileio.cause(exc)}; tried a name as long "
                           f"as {last_part.name}'s temporary)") from None
    student = student_options(opts, ckpt, folder, out, None)
    steps = student.epochs * math.ceil(opts.pairs / student.batch_size)
    arg = "--out" if opts.out else "--out (default: the teacher's run directory + '-reflow<K>')"
    rundir.check_room(out, student, steps, arg=arg)
    rundir.check_writable(out, 0, f"{rundir.SAMPLES}/{fileio.temporary_name(TEACHER_GRID)}", arg)
    return rundir.run_bytes(_student_shapes(student, ckpt), student, steps)


def _student_shapes(student: TrainOptions, ckpt: Checkpoint):
    """The student's model as train will build it, on the meta device (its weights' shapes, none allocated)."""
    from gentool.datatypes import Geometry
    from gentool.meta import shapes_only
    from gentool.registry import get_entry

    cls = get_entry(STUDENT).cls
    g = ckpt.data["geometry"]
    config = cls.config_class.create(Geometry(g["channels"], g["height"], g["width"], g["num_classes"]), None,
                                     student.width, lr=student.lr, batch_size=student.batch_size, **student.params)
    with shapes_only():
        return cls(config)


class FromTeacher(TrainHook):
    """Starts a new student from the teacher's (averaged) weights, the network flow and ddpm share, and writes the
    teacher's grid from the noise of the student's epoch grids, to compare them side by side."""

    def __init__(self, teacher: Checkpoint, settings: dict, minutes: float | None = None):
        self.teacher, self.settings, self.minutes = teacher, settings, minutes

    def resume_minutes(self) -> float | None:
        return self.minutes  # distill's --max-minutes, of which the student got what the drawing left

    def on_train_start(self, session, reporter):
        if session.step or session.opts.resume:
            return
        # strict=False for a slim student (or teacher): the teacher's block a slim student leaves out is not taken,
        # and one a slim teacher lacks keeps the student's own start, the identity (shapes are still checked)
        session.model.unet.load_state_dict(self.teacher.model.unet.state_dict(), strict=False)
        if session.ema is not None:  # the average starts from the weights the student starts from
            session.ema.restart(session.model)
        session.history["events"].append({"epoch": 0, "step": 0, "kind": "initialised", "message": "the "
                                          f"teacher's weights, {self.teacher.path.absolute()}"})
        n, seed = GRID * GRID, session.opts.seed
        images = self.teacher.model.generate(n, torch.Generator().manual_seed(seed), settings=self.settings)
        write_png(session.run_dir / rundir.SAMPLES / TEACHER_GRID, make_grid(to_uint8(images), GRID, GRID))
        c = session.model.config
        critic = f", with a critic of weight {c.adversarial:g}" if c.adversarial else ""
        critic += ", slim" if c.slim else ""
        steps = f"{c.sample_steps} step{'s' if c.sample_steps != 1 else ''}"
        reporter.message(f"student: {STUDENT} ({steps}{critic}), from the teacher's weights; "
                         f"teacher's grid: {session.run_dir / rundir.SAMPLES / TEACHER_GRID}")


def student_options(opts: DistillOptions, ckpt: Checkpoint, folder: Path, out: Path, minutes: float | None):
    """The student's training run: a reflow with the teacher's network, on the couplings, for `minutes` (what
    --max-minutes left after the drawing; None: no bound)."""
    from gentool.models.unet import UNetConfig

    shared = {f for f in UNetConfig.__dataclass_fields__} - {"channels", "image_height", "image_width",
                                                              "num_classes", "width", "lr", "batch_size"}
    config = ckpt.model.config.to_dict()
    params = {k: config[k] for k in shared if k in config}
    recipe = {"lr": STUDENT_LR, "batch_size": config["batch_size"], "ema": None, "epochs": 10}
    weight = critic_weight(opts)
    if weight:
        recipe = ADVERSARIAL_RECIPE
        params.update(beta1=recipe["beta1"], adversarial=weight)
    return TrainOptions(model=STUDENT, data=str(folder), limit=opts.pairs, out=str(out),
                        epochs=opts.epochs or recipe["epochs"], data_dir=_teacher_data_dir(ckpt.path),
                        width=config["width"],
                        batch_size=opts.batch_size or recipe["batch_size"], lr=opts.lr or recipe["lr"],
                        ema=recipe["ema"], params={**params, "sample_steps": opts.steps, "slim": opts.slim}, seed=opts.seed,
                        device=opts.device, precision=opts.precision, threads=opts.threads,
                        overwrite=opts.overwrite, checkpoint_every=opts.checkpoint_every,
                        max_minutes=minutes)


def _teacher_data_dir(path: Path) -> str | None:
    """The teacher run's --data-dir, where --eval-every finds the real images the couplings imitate."""
    config = path.parent / rundir.CONFIG
    try:
        options = rundir.read_run_config(config, "RUN").get("options") if config.is_file() else None
    except GentoolError:
        return None
    value = options.get("data_dir") if isinstance(options, dict) else None
    return value if isinstance(value, str) else None


def distill(opts: DistillOptions, reporter: Reporter | None = None) -> dict:
    """Distill the teacher into a few-step student (or continue a distillation); returns `train --json`'s result
    plus the teacher and couplings, or {"stopped": ...} when the couplings could not all be drawn in time."""
    from gentool.api import train
    from gentool.device import choose_precision, pick_device, prepare, use_threads

    opts.validate()
    opts = with_defaults(opts)
    reporter = reporter or Reporter()
    if opts.resume:
        return train(TrainOptions(resume=opts.resume, epochs=opts.epochs, max_minutes=opts.max_minutes,
                                  device=opts.device, threads=opts.threads), reporter)
    started = time.monotonic()
    deadline = None if opts.max_minutes is None else started + 60 * opts.max_minutes
    path = teacher_checkpoint(opts.teacher)
    out = Path(opts.out).expanduser() if opts.out else path.parent.with_name(f"{path.parent.name}-reflow{opts.steps}")
    if not opts.out and os.path.islink(out):  # a folder the user named may be a link; one gentool chose may not
        raise UsageError(f"--out (default: the teacher's run directory + '-reflow<K>'): {out} is "
                         f"{links.link_kind(out)}; gentool does not write a run through a link it was not given: "
                         f"pass --out")
    # os.path.isdir: a name too long to exist is no run (check_room says why it cannot be written)
    if os.path.isdir(out) and not opts.overwrite and any(out.iterdir()) and not rundir.unstarted(out):
        raise rundir.taken(out, f"gentool distill --resume {shlex.quote(str(out))}")
    device = pick_device(opts.device)
    use_threads(opts.threads, device)  # as train, sample and evaluate: before the precision probe
    ckpt = load_teacher(path, device)
    prepare(ckpt.model, device, choose_precision(opts.precision or "auto", device).used)
    settings = teacher_settings(ckpt.model, opts)
    student = (out, check_room(ckpt, settings, opts, out))
    # one context from the drawing to the training: a signal during the last part, or between the two, stops here
    with StopSignals():
        try:
            folder, complete = draw_couplings(ckpt, settings, opts, reporter, deadline, student)
        except KeyboardInterrupt as exc:  # a second stop signal while drawing: at once, the parts written are whole
            StopSignals.pending = stops.signum_of(exc)
            folder, complete = couplings_folder(ckpt, settings, opts.seed), False
        if not complete or StopSignals.pending:
            return _stopped_drawing(complete, path, folder, reporter)
        budget = None if deadline is None else minutes_left(deadline)
        if budget is not None and budget <= 0:  # this drawing used it all: no student run of a moment
            return _stopped_drawing(True, path, folder, reporter)
        if budget is not None:
            reporter.message(f"student: {budget:g} of --max-minutes {opts.max_minutes:g} min left for it")
        hooks = [FromTeacher(ckpt, settings, opts.max_minutes)]
        result = train(student_options(opts, ckpt, folder, out, budget), reporter, hooks)
    return {**result, "teacher": str(path), "couplings": str(folder)}


def _stopped_drawing(complete: bool, path: Path, folder: Path, reporter: Reporter) -> dict:
    """Stopped by --max-minutes or a signal while (or just after) drawing: the command that continues, as a result
    (--max-minutes: exit 0) or as Interrupted (a signal: exit 128 + its number, as a stopped training)."""
    again = f"{command_name()} {shlex.join(sys.argv[1:])}" if sys.argv[1:2] == ["distill"] else "the same command"
    where = ("after drawing the couplings" if complete else
             f"while drawing couplings (whole parts of {cp.PART:,} are kept; one stopped inside is drawn again)")
    stop = f"{where}; continue with: {again}"
    if StopSignals.pending:
        raise Interrupted(f"{stops.word(StopSignals.pending)} {stop}", StopSignals.pending)
    stop = f"stopped {stop}"
    reporter.message(stop)
    return {"stopped": stop, "teacher": str(path), "couplings": str(folder)}
