"""Few-step students against their teacher, side by side in one invocation: FID with its interval (`gentool
evaluate`, N samples) and the time each takes to draw N samples.

    python3 benchmarks/distill_quality.py --teacher runs/flow --students runs/flow-reflow2 [runs/flow-reflow1 ...]
        [--student-steps 1,2,4] [--n 5000] [--seed 0] [--data-dir DIR] [--repeats 2] [--out bench-distill]

Rows: the teacher at its own sampler (flow: 16 Euler steps), then every student at each of --student-steps.
- Quality: `gentool evaluate CKPT --steps K --n N --seed S --metrics fid,modes --json` in a subprocess (gentool's
  extractor for the data set, its test split, the bootstrap interval).
- Drawing time: `gentool.api.sample(CKPT, N, steps=K)` in this process, what `gentool sample --n N` draws, timed
  from the call to the array (the checkpoint load is in it, a few milliseconds). The rows take turns for --repeats
  rounds and each keeps its fastest, so a change of the machine's load hits every row alike. The wall time of the
  whole `gentool sample CKPT --n N --out x.npz` command (interpreter start-up and imports included) is shown too.
- Grids: `gentool sample CKPT --grid 8x8 --seed S` for every row, from the same noise (a student maps the teacher's
  noise to the teacher's image), and one side-by-side figure OUT/grids.png.
Output: OUT/results.md (with the host) and OUT/results.json; every command in OUT/commands.log.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from time_to_quality import host, log_run

from gentool import api


PRECISION: list[str] = []  # --precision P for every gentool command, when given


def steps_args(steps: int | None) -> list[str]:
    """The command-line sampler steps of a row (none: the checkpoint's own sampler), and --precision if given."""
    return (["--steps", str(steps)] if steps else []) + PRECISION


def evaluate(ckpt: Path, steps: int | None, args, out: Path, log: Path) -> dict:
    """The evaluate result of `ckpt` at `steps` (None: its own sampler)."""
    path = out / f"eval_{ckpt.parent.name}_{steps or 'own'}.json"
    cmd = ["gentool", "evaluate", str(ckpt), "--n", str(args.n), "--seed", str(args.seed), "--metrics",
           "fid,modes", "--json", "--out", str(path), "--overwrite"]
    cmd += steps_args(steps)
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    log_run(cmd, log, args.threads)
    return json.loads(path.read_text())


def own_steps(ckpt: Path) -> int | None:
    """The sampler steps a checkpoint draws with by default (what evaluate's result says, without evaluating)."""
    from gentool.checkpoint import load_checkpoint

    return load_checkpoint(ckpt).model.sample_settings().get("steps")


def draw_seconds(ckpt: Path, steps: int | None, args) -> float:
    """Seconds `api.sample` takes to draw N images."""
    start = time.perf_counter()
    images = api.sample(ckpt, args.n, seed=args.seed, **({"steps": steps} if steps else {}),
                        **({"precision": args.precision} if args.precision else {}))
    seconds = time.perf_counter() - start
    assert images.shape[0] == args.n
    return seconds


def command_seconds(ckpt: Path, steps: int | None, args, out: Path, log: Path) -> float:
    cmd = ["gentool", "sample", str(ckpt), "--n", str(args.n), "--seed", str(args.seed), "--out",
           str(out / "draw.npz"), "--overwrite"] + steps_args(steps)
    start = time.perf_counter()
    log_run(cmd, log, args.threads)
    return time.perf_counter() - start


def grid(ckpt: Path, steps: int | None, args, out: Path, log: Path) -> Path:
    path = out / f"grid_{ckpt.parent.name}_{steps or 'own'}.png"
    log_run(["gentool", "sample", str(ckpt), "--grid", "8x8", "--seed", str(args.seed), "--out", str(path),
             "--overwrite"] + steps_args(steps), log, args.threads)
    return path


def side_by_side(rows: list[dict], out: Path) -> Path:
    """One figure: every row's grid with its label and FID."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.6))
    for ax, row in zip(axes if len(rows) > 1 else [axes], rows):
        ax.imshow(Image.open(row["grid"]), cmap="gray")
        ax.set_title(row["label"] + ("" if row["fid"] is None else f"\nFID {row['fid']:.2f}"), fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path = out / "grids.png"
    fig.savefig(path, dpi=110)
    return path


def table(rows: list[dict], args) -> str:
    teacher = rows[0]
    lines = ["| sampler | network evaluations | FID [95 % interval] | classes | vs teacher's FID | draw N (s) | "
             "faster than the teacher | `gentool sample --n N` (s) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["fid"] is None:  # --time-only
            quality = "– | – | –"
        else:
            lo, hi = row["fid_ci"]
            quality = (f"{row['fid']:.2f} [{lo:.2f}, {hi:.2f}] | {row['classes']}/10 | "
                       f"{row['fid'] / teacher['fid'] - 1:+.1%}")
        lines.append(f"| {row['label']} | {row['evaluations'] or '–'} | {quality} | {row['draw_seconds']:.1f} | "
                     f"{teacher['draw_seconds'] / row['draw_seconds']:.1f}× | {row['command_seconds']:.1f} |")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join([f"Host: {host()}; {args.threads} thread(s); precision {args.precision or 'auto'}; {when}.",
                      f"N = {args.n}, seed {args.seed}, gentool evaluate --metrics fid,modes (the data set's "
                      "extractor, its test split). Draw N: api.sample's time for N images, the fastest of "
                      f"{args.repeats} alternating rounds.", "", *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="the teacher's run directory")
    parser.add_argument("--students", nargs="+", required=True, help="the students' run directories")
    parser.add_argument("--student-steps", default="1,2,4")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench-distill")
    parser.add_argument("--time-only", action="store_true",
                        help="drawing times and grids only, no FID (scored apart, e.g. on a busy machine)")
    parser.add_argument("--precision", choices=("fp32", "bf16"),
                        help="every row's sampling precision (default: gentool's auto, decided per command by a "
                             "probe, which a busy machine can sway between rows)")
    args = parser.parse_args()
    PRECISION[:] = ["--precision", args.precision] if args.precision else []
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    teacher = Path(args.teacher) / "last.safetensors"
    own = json.loads((Path(args.teacher) / "config.json").read_text())
    runs = [(teacher, None, "teacher (its own sampler)")]
    runs += [(Path(s) / "last.safetensors", int(k), f"{Path(s).name}, {k} step(s)")
             for s in args.students for k in args.student_steps.split(",")]
    rows = []
    for ckpt, steps, label in runs:
        if args.time_only:
            rows.append({"label": label, "checkpoint": str(ckpt), "steps": steps, "fid": None, "fid_ci": None,
                         "classes": None, "evaluations": steps or own_steps(ckpt),
                         "grid": str(grid(ckpt, steps, args, out, log))})
            continue
        result = evaluate(ckpt, steps, args, out, log)
        metrics = result["metrics"]
        rows.append({"label": label, "checkpoint": str(ckpt), "steps": steps, "fid": metrics["fid"],
                     "fid_ci": metrics["fid_ci"], "classes": metrics["modes"], "sampling": result["sampling"],
                     "evaluations": result["sampling"].get("steps"), "grid": str(grid(ckpt, steps, args, out, log))})
    for row in rows:
        row["draw_seconds"] = float("inf")
    for _ in range(args.repeats):  # the rows take turns, so a change of load hits them alike
        for row, (ckpt, steps, _label) in zip(rows, runs):
            row["draw_seconds"] = min(row["draw_seconds"], draw_seconds(ckpt, steps, args))
    for row, (ckpt, steps, _label) in zip(rows, runs):
        row["command_seconds"] = command_seconds(ckpt, steps, args, out, log)
    figure = side_by_side(rows, out)
    text = table(rows, args)
    (out / "results.md").write_text(text + f"\n\n![grids]({figure.name})\n")
    (out / "results.json").write_text(json.dumps({"host": host(), "n": args.n, "seed": args.seed,
                                                  "teacher_config": own.get("options"), "rows": rows}, indent=2))
    print(text)


if __name__ == "__main__":
    sys.exit(main())
