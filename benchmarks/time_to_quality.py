"""Sample quality against the wall-clock minutes a user waits: gentool configurations and a plain-PyTorch peer (an
MLP WGAN-GP, benchmarks/peer_wgan_gp.py) trained on real MNIST for the same minutes, in one invocation, each
snapshot scored by `gentool evaluate` (FID with its bootstrap interval and classes covered, N images, fixed
seed).

    python3 benchmarks/time_to_quality.py --data-dir DIR [--minutes 15] [--marks 2,5,7.5,10,15]
        [--configs 'wgan-gp --ema 0.999' 'flow --width 0.5'] [--threads 2] [--n 5000] [--seed 0]
        [--resolution 0.25] [--out bench-ttq] [--no-peer]

Minutes count from each process's launch: start-up, imports, data loading and checkpoint writes are in them. The
runs go one after another (never two at once, so none slows another), the peer first. A gentool configuration runs
as `gentool train CONFIG --data mnist --max-minutes MINUTES --checkpoint-minutes RESOLUTION`; for each mark the
newest kept checkpoint (step_NNNNNNNN.safetensors) written by then (its file time, since launch) is scored, and the
table shows the minute it was written at. The peer snapshots at the first step after each mark. Every scored
snapshot gets an 8×8 grid (OUT/<run>/grid_<mark>.png) to look at; checkpoints not scored are deleted as the table is
made. Output: a Markdown table (stdout and OUT/results.md, with the host it ran on) and OUT/results.json; every
command is in OUT/commands.log.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def log_run(cmd: list[str], log: Path, threads: int) -> str:
    """Run a command to completion with `threads` torch threads (OMP_NUM_THREADS: evaluate and sample take no
    --threads), stderr to the log; returns stdout. A failure stops the benchmark."""
    with log.open("a") as f:
        f.write(f"$ OMP_NUM_THREADS={threads} {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        f.write(f"# exit {proc.returncode}\n")
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {shlex.join(cmd)}; see {log}")
    return proc.stdout


def slug(config: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", config).strip("_")[:60]


def train_peer(args, out: Path, log: Path) -> dict[float, dict]:
    """The peer for --minutes; per mark its snapshot (.npz), the minute it was written and the img/s so far."""
    cmd = [sys.executable, str(HERE / "peer_wgan_gp.py"), "--data-dir", args.data_dir, "--marks",
           ",".join(f"{m:g}" for m in args.marks), "--out", str(out), "--threads", str(args.threads),
           "--n", str(args.n), "--seed", str(args.seed), "--start", repr(time.time())]
    lines = log_run(cmd, log, args.threads).splitlines()
    return {row["mark"]: {"source": Path(row["npz"]), "minute": row["minute"], "step": row["step"],
                          "images_per_second": row["images_per_second"]} for row in map(json.loads, lines)}


def train_gentool(config: str, args, out: Path, log: Path) -> dict[float, dict]:
    """A gentool configuration for --minutes; per mark the newest kept checkpoint written by then."""
    launch = time.time()
    cmd = ["gentool", "train", *shlex.split(config), "--data", "mnist", "--data-dir", args.data_dir, "--epochs",
           "1000000", "--max-minutes", f"{args.minutes:g}", "--checkpoint-minutes", f"{args.resolution:g}",
           "--checkpoint-every", "0", "--threads", str(args.threads), "--seed", str(args.seed), "--out",
           str(out / "run"), "--overwrite", "--quiet", "--json"]
    result = json.loads(log_run(cmd, log, args.threads))
    kept = sorted((p.stat().st_mtime - launch, p) for p in (out / "run").glob("step_*.safetensors"))
    records = [r for r in json.loads((out / "run" / "metrics.json").read_text())["epochs"]]
    rate = sum(r.get("images_per_second", 0) for r in records) / max(1, len(records))
    chosen = {}
    for mark in args.marks:
        before = [(t, p) for t, p in kept if t <= 60 * mark]
        if before:
            t, p = before[-1]
            chosen[mark] = {"source": p, "minute": round(t / 60, 3), "step": int(p.stem.split("_")[1]),
                            "images_per_second": round(rate, 1), "precision": result.get("precision", {})}
    keep = {c["source"] for c in chosen.values()}
    for _, p in kept:
        if p not in keep:
            p.unlink()
    return chosen


def score(snap: dict, mark: float, args, out: Path, log: Path) -> None:
    """FID and classes covered of a snapshot (into `snap`), and its 8×8 grid for a checkpoint."""
    source = snap["source"]
    cmd = ["gentool", "evaluate", str(source), "--data", "mnist", "--data-dir", args.data_dir, "--n", str(args.n),
           "--seed", str(args.seed), "--metrics", "fid,modes", "--json", "--out",
           str(out / f"eval_{mark:g}.json"), "--overwrite"]
    result = json.loads(log_run(cmd, log, args.threads))
    metrics = result["metrics"]
    snap.update(fid=metrics["fid"], modes=metrics["modes"], classes=metrics["classes"])
    # evaluate's bootstrap intervals (over this snapshot's samples; absent from an evaluate run with --intervals 0)
    snap.update({k: metrics[k] for k in ("fid_ci", "modes_ci") if k in metrics})
    snap["interval"] = result.get("interval")
    if source.suffix == ".safetensors":
        log_run(["gentool", "sample", str(source), "--grid", "8x8", "--seed", str(args.seed), "--overwrite",
                 "--out", str(out / f"grid_{mark:g}.png")], log, args.threads)


def cell(snap: dict | None) -> str:
    if not snap:
        return "–"
    ci = f" [{snap['fid_ci'][0]:.1f}, {snap['fid_ci'][1]:.1f}]" if snap.get("fid_ci") else ""
    return f"**{snap['fid']:.1f}**{ci} · {snap['modes']}/{snap['classes']} · {snap['minute']:.1f}′"


def host() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {platform.system()}"


def table(runs: dict[str, dict], args) -> str:
    head = "| configuration | img/s | " + " | ".join(f"{m:g} min" for m in args.marks) + " |"
    lines = [head, "|" + "---|" * (len(args.marks) + 2)]
    for name, marks in runs.items():
        # the last snapshot's: the peer's rate so far (its first minutes are slower), gentool's mean of its epochs
        rate = marks[max(marks)]["images_per_second"] if marks else "–"
        lines.append(f"| {name} | {rate} | " + " | ".join(cell(marks.get(m)) for m in args.marks) + " |")
    precisions = {s.get("precision", {}).get("used") for m in runs.values() for s in m.values()} - {None}
    return "\n".join([
        f"Host: {host()}; {args.threads} thread(s) per run; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"gentool precision: {', '.join(sorted(precisions)) or 'n/a'} (--precision auto unless a configuration "
        "sets it). Cells: **FID** [its 95 % interval: a bootstrap over the snapshot's N samples, the real set fixed; "
        "one seed, so not the spread between training runs] (gentool evaluate, N = {n}, seed {seed}, MNIST test "
        "split) · classes covered · "
        "wall-clock minute since launch of the snapshot scored. img/s: training images per second (gentool: the "
        "mean of its epoch records in metrics.json; the peer: over its loop, DataLoader included, snapshots left "
        "out).".format(n=args.n, seed=args.seed), "", *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw (torchvision's layout)")
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--marks", default="2,5,7.5,10,15", help="minutes since launch to score (≤ --minutes)")
    parser.add_argument("--configs", nargs="+", default=["wgan-gp --ema 0.999"],
                        help="gentool train arguments, one string per configuration (MODEL first)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=float, default=0.25,
                        help="minutes between gentool's kept checkpoints (--checkpoint-minutes)")
    parser.add_argument("--out", default="bench-ttq")
    parser.add_argument("--no-peer", dest="peer", action="store_false")
    args = parser.parse_args()
    args.marks = sorted(float(m) for m in args.marks.split(","))
    if args.marks[-1] > args.minutes or args.marks[0] <= 0:
        parser.error(f"--marks: every mark must lie in (0, --minutes {args.minutes:g}]")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    runs: dict[str, dict] = {}
    if args.peer:
        runs["peer MLP WGAN-GP (plain PyTorch, fp32)"] = train_peer(args, out / "peer", log)
    for config in args.configs:
        runs[f"gentool `{config}`"] = train_gentool(config, args, out / slug(config), log)
    for (name, marks), folder in zip(runs.items(), (["peer"] if args.peer else []) + list(map(slug, args.configs))):
        for mark, snap in marks.items():
            score(snap, mark, args, out / folder, log)
    text = table(runs, args)
    (out / "results.md").write_text(text + "\n")
    made = {"command": "gentool evaluate --metrics fid,modes", "extractor": "gentool (the data set's default)",
            "data": "mnist", "split": "test", "n": args.n, "seed": args.seed, "threads": args.threads,
            "minutes": args.minutes, "host": host(),
            "interval": next((snap.get("interval") for marks in runs.values() for snap in marks.values()), None)}
    (out / "results.json").write_text(json.dumps({"evaluation": made, "runs": {
        name: {f"{m:g}": {k: (str(v) if isinstance(v, Path) else v) for k, v in s.items() if k != "interval"}
               for m, s in marks.items()}
        for name, marks in runs.items()}}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
