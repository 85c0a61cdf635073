"""flow, ddpm and wgan-gp on real MNIST at an equal wall-clock budget, each scored by `gentool evaluate`.

    python3 benchmarks/generative_families.py --data-dir ../shared/data [--max-minutes 15] [--marks 5,10,15]
        [--precision fp32|bf16] [--threads 2] [--seed 0] [--n 5000] [--models flow,ddpm,wgan-gp]
        [--flow-steps 4,8,16,32] [--ddpm-steps 10,20,50] [--sample-n 1000] [--out bench-families]
        [--train-args 'wgan-gp=--ema 0.999']

Each model trains with `gentool train MODEL --data mnist --max-minutes Δ` (its own defaults: flow and ddpm keep a
weight average, wgan-gp does not unless --train-args says so) up to the first mark, then `--resume` for the next Δ
minutes, and so on; `last.safetensors` is copied at every mark. Resume is bit-exact, so the marks are checkpoints of
one uninterrupted run, and the minutes are training minutes (`--max-minutes` counts from the first step; start-up,
data loading and the resumes are reported apart as wall minutes). Every mark is scored by `gentool evaluate --n N
--seed S --metrics fid,modes` at the family's default sampler settings; the last checkpoint of flow and ddpm also at
every --steps setting with each solver (FID against steps). Sampling speed is `GenerativeModel.generate` (what
`gentool sample --n` runs) timed in this process on the same thread count, after one warm-up batch.

The output is Markdown tables ready for benchmarks/RESULTS.md; every command run is in OUT/commands.log and every
evaluation's JSON in OUT/<model>/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ITERATIVE = ("flow", "ddpm")


def run(cmd: list[str], log: Path, threads: int) -> tuple[str, float]:
    """Run a gentool command (stderr to the log) on `threads` threads (evaluate has no --threads: OMP_NUM_THREADS
    sets its torch threads); returns its stdout and wall seconds. A failure stops the script."""
    with log.open("a") as f:
        f.write(f"$ OMP_NUM_THREADS={threads} " + shlex.join(cmd) + "\n")
        f.flush()
        start = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=env)
        seconds = time.perf_counter() - start
        f.write(f"# exit {proc.returncode} after {seconds:.1f} s\n")
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {shlex.join(cmd)}; see {log}")
    return proc.stdout, seconds


def train_marks(model: str, args, out: Path, log: Path) -> list[dict]:
    """Train `model` mark by mark; returns per mark its checkpoint, step, epoch and wall minutes so far."""
    run_dir, done, wall, rows = out / model / "run", 0.0, 0.0, []
    extra = shlex.split(args.train_args.get(model, ""))
    for mark in args.marks:
        common = ["--epochs", "1000000", "--max-minutes", f"{mark - done:g}", "--precision", args.precision,
                  "--threads", str(args.threads), "--data-dir", args.data_dir, "--quiet", "--json"]
        if done == 0:
            cmd = ["gentool", "train", model, "--data", "mnist", "--seed", str(args.seed), "--out", str(run_dir),
                   "--overwrite", "--checkpoint-every", "0", *common, *extra]
        else:
            cmd = ["gentool", "train", model, "--resume", str(run_dir), *common]
        stdout, seconds = run(cmd, log, args.threads)
        result, wall, done = json.loads(stdout), wall + seconds, mark
        kept = out / model / f"minute_{mark:g}.safetensors"
        shutil.copyfile(result["checkpoints"]["last"], kept)
        rows.append({"minute": mark, "checkpoint": kept, "step": result["step"], "epochs": result["epochs"],
                     "wall_minutes": wall / 60})
    return rows


def evaluate(ckpt: Path, args, log: Path, tag: str, settings: list[str] = ()) -> dict:
    out = ckpt.parent / f"eval_{ckpt.stem}{tag}.json"
    cmd = ["gentool", "evaluate", str(ckpt), "--data-dir", args.data_dir, "--n", str(args.n), "--seed",
           str(args.seed), "--metrics", "fid,modes", "--precision", args.precision, "--json", "--out", str(out),
           "--overwrite", *settings]
    stdout, _ = run(cmd, log, args.threads)
    return json.loads(stdout)


def sampling_rate(ckpt: Path, args, settings: dict) -> float:
    """Images per second of `generate` for this checkpoint and sampler settings (one warm-up batch first)."""
    import torch

    from gentool.checkpoint import load_checkpoint
    from gentool.device import prepare

    torch.set_num_threads(args.threads)
    model = load_checkpoint(ckpt).model
    prepare(model, torch.device("cpu"), args.precision)
    model.generate(min(100, args.sample_n), torch.Generator().manual_seed(1), settings=settings)
    start = time.perf_counter()
    model.generate(args.sample_n, torch.Generator().manual_seed(0), settings=settings)
    return args.sample_n / (time.perf_counter() - start)


def steps_table(model: str, ckpt: Path, args, log: Path) -> list[dict]:
    """FID and sampling speed of the last checkpoint for every --steps setting and solver."""
    from gentool.registry import get_entry

    solvers = next(o.choices for o in get_entry(model).cls.sample_options if o.name == "solver")
    rows = []
    for solver in solvers:
        for steps in args.steps[model]:
            settings = {"steps": steps, "solver": solver}
            flags = ["--steps", str(steps), "--solver", solver]
            result = evaluate(ckpt, args, log, f"_{solver}{steps}", flags)
            rate = sampling_rate(ckpt, args, settings)
            rows.append({"model": model, "solver": solver, "steps": steps, "fid": result["metrics"]["fid"],
                         "modes": result["metrics"]["modes"], "img_per_s": rate, "minutes_10k": 10_000 / rate / 60})
    return rows


def markdown(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(marks: dict, defaults: dict, steps: list[dict], args) -> str:
    header = (f"`python3 benchmarks/generative_families.py --max-minutes {args.max_minutes:g} --marks "
              f"{','.join(f'{m:g}' for m in args.marks)} --precision {args.precision} --threads {args.threads} "
              f"--seed {args.seed} --n {args.n}` on {platform.processor() or platform.machine()}, "
              f"{time.strftime('%Y-%m-%d')}. FID and modes from `gentool evaluate` (N = {args.n}, seed {args.seed}, "
              f"against the MNIST test split).")
    rows = []
    for model, marked in marks.items():
        for m in marked:
            rows.append([model, f"{m['minute']:g}", f"{m['wall_minutes']:.1f}", m["epochs"], m["step"],
                         f"{m['fid']:.2f}", f"{m['modes']} of 10"])
    parts = [header, "", markdown(["model", "training min", "wall min (with start-up)", "epochs", "steps", "FID",
                                   "modes"], rows)]
    speed = [[model, d["settings"], f"{d['img_per_s']:.1f}", f"{10_000 / d['img_per_s'] / 60:.1f}"]
             for model, d in defaults.items()]
    parts += ["", f"Sampling at each family's default settings ({args.sample_n} images, {args.threads} threads):", "",
              markdown(["model", "sampler settings", "img/s", "minutes for 10,000"], speed)]
    if steps:
        table = [[r["model"], r["solver"], r["steps"], f"{r['fid']:.2f}", f"{r['modes']} of 10",
                  f"{r['img_per_s']:.1f}", f"{r['minutes_10k']:.1f}"] for r in steps]
        parts += ["", "FID against sampler steps (the last checkpoint):", "",
                  markdown(["model", "solver", "steps", "FID", "modes", "img/s", "minutes for 10,000"], table)]
    return "\n".join(parts)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--max-minutes", type=float, default=15)
    parser.add_argument("--marks", default="5,10,15", help="training minutes at which to score (the last is "
                                                            "--max-minutes)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=5000, help="samples per evaluation")
    parser.add_argument("--models", default="flow,ddpm,wgan-gp")
    parser.add_argument("--flow-steps", default="4,8,16,32")
    parser.add_argument("--ddpm-steps", default="10,20,50")
    parser.add_argument("--sample-n", type=int, default=1000, help="images timed per sampling measurement")
    parser.add_argument("--train-args", action="append", default=[], help="MODEL=ARGS: extra train options")
    parser.add_argument("--out", default="bench-families")
    args = parser.parse_args()
    args.marks = sorted({float(m) for m in args.marks.split(",") if float(m) < args.max_minutes} | {args.max_minutes})
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.steps = {"flow": [int(s) for s in args.flow_steps.split(",")],
                  "ddpm": [int(s) for s in args.ddpm_steps.split(",")]}
    args.train_args = dict(a.split("=", 1) for a in args.train_args)
    return args


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    marks, defaults, steps = {}, {}, []
    for model in args.models:
        marks[model] = train_marks(model, args, out, log)
        for m in marks[model]:
            result = evaluate(m["checkpoint"], args, log, "")
            m.update(fid=result["metrics"]["fid"], modes=result["metrics"]["modes"])
            print(f"{model} at {m['minute']:g} min: FID {m['fid']:.2f}, modes {m['modes']}", flush=True)
        last = marks[model][-1]["checkpoint"]
        settings = result.get("sampling", {})
        defaults[model] = {"settings": ", ".join(f"{k} {v}" for k, v in settings.items()) or "—",
                           "img_per_s": sampling_rate(last, args, settings)}
        if model in ITERATIVE:
            steps += steps_table(model, last, args, log)
    text = report(marks, defaults, steps, args)
    (out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
