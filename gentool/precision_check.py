"""A run's own check of `--precision auto`: before its first step, a long CPU run times a few training steps of
its own model on its own data in fp32 and in bf16 (on a copy, so the run's weights and random numbers are
untouched) and switches once if the other precision is clearly faster for this model. The probe times a generic
matmul and convolution; a model whose time goes elsewhere (small layers, normalisation, a one-channel output
layer) can run the other way."""

from __future__ import annotations

import copy
import time

import torch

from gentool.device import Amp, PrecisionChoice, _bf16_supported
from gentool.guards import preserved_rng
from gentool.load import LoadMeter, load_warning
from gentool.precision import BUSY_SHARE, forced_auto, time_workloads

MIN_STEPS = 500  # runs shorter than this many steps skip the check: its cost (about 8 steps) would not pay back
SWITCH_GAIN = 1.3  # the other precision must be this much faster for this model: clearly beyond timing noise
REPS, BUDGET = 4, 10.0  # timed rounds (after one warm-up each) and the seconds that stop them early


def wants_check(session, planned_steps: int) -> bool:
    """Whether this run checks its precision: a new single-process CPU run with --precision auto (not forced by
    $GENTOOL_AUTO_PRECISION, which a switch would defeat), on a CPU with native bf16, long enough to pay back."""
    device = session.model.device
    return (session.precision.requested == "auto" and session.step == 0 and not session.world.enabled
            and device.type == "cpu" and _bf16_supported(device) and planned_steps >= MIN_STEPS
            and forced_auto(device) is None)


def step_times(session, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, float], float]:
    """The best time of one training step of a copy of the run's model in each precision, and the share of the
    cores other processes used meanwhile."""
    model = copy.deepcopy(session.model)
    optimizers = model.build_optimizers()
    n = min(len(images), model.config.batch_size)
    real, lab = model.normalize(images[:n]), labels[:n]

    def step(dtype):
        def run():
            model.amp = Amp(model.device, dtype)
            with model.amp.autocast():
                model.train_step(real, lab, optimizers, 0)
        return run

    with preserved_rng(), LoadMeter() as load:
        seconds = time_workloads({"fp32": step(None), "bf16": step(torch.bfloat16)}, reps=REPS, budget=BUDGET)
    return seconds, load.other_share()


def checked_precision(session, images: torch.Tensor, labels: torch.Tensor) -> tuple[PrecisionChoice, dict]:
    """The run's precision after the check, and the event that records it (switched or kept)."""
    start = time.perf_counter()
    seconds, busy = step_times(session, images, labels)
    used = session.precision.used
    other = "fp32" if used == "bf16" else "bf16"
    gain = seconds[used] / seconds[other]  # > 1: the other is faster
    timing = (f"one training step of this model took {seconds['fp32'] * 1e3:.1f} ms in fp32 and "
              f"{seconds['bf16'] * 1e3:.1f} ms in bf16 (checked in {time.perf_counter() - start:.1f} s"
              f"{', machine busy' if busy > BUSY_SHARE else ''})")
    event = {"epoch": 0, "step": 0, "kind": "precision", "fp32_ms": round(seconds["fp32"] * 1e3, 3),
             "bf16_ms": round(seconds["bf16"] * 1e3, 3)}
    if gain >= SWITCH_GAIN and busy <= BUSY_SHARE:
        choice = PrecisionChoice("auto", other, f"switched from {used}: {timing}")
        return choice, {**event, "message": f"precision switched from {used} to {other}: {timing}",
                        "switched": True}
    kept = PrecisionChoice("auto", used, f"{session.precision.reason}; kept after this model's own check: {timing}")
    return kept, {**event, "message": f"precision {used} kept: {timing}", "switched": False}


def check_run(session, reporter=None) -> None:
    """Run the check where `wants_check` says so, and record its outcome in the session (its precision, the
    model's autocast and an event in metrics.json); config.json is written after this with the choice."""
    data, batch = session.data, session.model.config.batch_size
    planned = session.opts.epochs * -(-len(data) // batch)
    if not wants_check(session, planned):
        return
    if load_warning(torch.get_num_threads()):  # a busy machine's timings could not switch it: save the time
        session.run.add_event(
            {"epoch": 0, "step": 0, "kind": "precision", "switched": False,
             "message": f"precision {session.precision.used} kept without checking this model: the machine is busy"})
        return
    if reporter is not None:
        reporter.message("precision: checking fp32 against bf16 on a few steps of this model")
    device = session.model.device
    choice, event = checked_precision(session, data.images[:batch].to(device), data.labels[:batch].to(device))
    session.precision = choice
    session.model.amp = Amp(device, choice.dtype)
    session.run.add_event(event)
