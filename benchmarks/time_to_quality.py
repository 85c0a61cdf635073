"""Sample quality against the wall-clock minutes a user waits: gentool configurations and peers trained on the same
real data for the same minutes, in one invocation, each snapshot scored by `gentool evaluate` (FID with its bootstrap
interval and classes covered, N images, fixed seed, the data's test split).

    python3 benchmarks/time_to_quality.py --data mnist --data-dir DIR [--minutes 15] [--marks 2,5,7.5,10,15]
        [--configs 'wgan-gp --ema 0.999' 'flow --width 0.5'] [--threads 2] [--n 5000] [--seed 0]
        [--resolution 0.25] [--out bench-ttq] [--peers wgan-gp]
    python3 benchmarks/time_to_quality.py --data CIFAR_JPEG/train --minutes 30 --marks 5,15,30 --configs flow
        --peers torchcfm ddpm --peer-minutes 15 --n 10000

Peers: `wgan-gp` (MNIST: a plain-PyTorch MLP WGAN-GP, benchmarks/peer_wgan_gp.py); `torchcfm` and `ddpm` (32×32
colour: the field's own implementations, benchmarks/peer_cifar.py), each as PEER[:WIDTH[:RECIPE[:PRECISION]]] with
WIDTH budget|smallest, RECIPE cpu|example, PRECISION fp32|bf16 (default budget:cpu:fp32). A CIFAR peer's training
images are decoded into one array before any clock starts; its snapshots are sampled (--peer-steps) after all runs.

Minutes count from each process's launch: start-up, imports, data loading and checkpoint writes are in them. The
runs go one after another (never two at once, so none slows another), the peers first. A gentool configuration runs
as `gentool train CONFIG --data DATA --max-minutes MINUTES --checkpoint-minutes RESOLUTION`; for each mark the
newest kept checkpoint (step_NNNNNNNN.safetensors) written by then (its file time, since launch) is scored, and the
table shows the minute it was written at. A peer snapshots at the first step after each mark. Every scored
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


PEER_NAMES = {"wgan-gp": "peer MLP WGAN-GP (plain PyTorch, fp32)"}


def data_args(args) -> list[str]:
    return ["--data", args.data] + (["--data-dir", args.data_dir] if args.data_dir else [])


def train_peer(spec: str, args, out: Path, log: Path) -> dict[float, dict]:
    """A peer for --peer-minutes; per mark its snapshot, the minute it was written and the img/s so far."""
    name, *rest = spec.split(":")
    minutes = args.peer_minutes or args.minutes
    marks = ",".join(f"{m:g}" for m in args.marks if m <= minutes)
    if name == "wgan-gp":
        cmd = [sys.executable, str(HERE / "peer_wgan_gp.py"), "--data-dir", args.data_dir, "--marks", marks,
               "--out", str(out), "--threads", str(args.threads), "--n", str(args.n), "--seed", str(args.seed)]
        key = "npz"
    else:
        width, recipe, precision = (rest + ["budget", "cpu", "fp32"][len(rest):])[:3]
        cmd = [sys.executable, str(HERE / "peer_cifar.py"), "train", "--peer", name, "--width", width, "--recipe",
               recipe, "--precision", precision, "--data", str(peer_images(args, log)), "--marks", marks, "--out",
               str(out), "--threads", str(args.threads), "--seed", str(args.seed)]
        key = "weights"
    lines = log_run(cmd + ["--start", repr(time.time())], log, args.threads).splitlines()
    return {row["mark"]: {"source": Path(row[key]), "minute": row["minute"], "step": row["step"], "peer": spec,
                          "images_per_second": row["images_per_second"]} for row in map(json.loads, lines)}


def peer_images(args, log: Path) -> Path:
    """The training images of an image folder as one uint8 N×H×W×C .npy, decoded once before any clock starts."""
    path = Path(args.out) / "peer_train_images.npy"
    if not path.exists():
        import numpy as np
        from PIL import Image

        root = Path(args.data)
        files = sorted(p for c in sorted(root.iterdir()) if c.is_dir() for p in sorted(c.iterdir()))
        np.save(path, np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]))
        with log.open("a") as f:
            f.write(f"# decoded {len(files)} images of {root} into {path}\n")
    return path


def sample_peer(snap: dict, mark: float, args, out: Path, log: Path) -> None:
    """A CIFAR peer's snapshot → N images (.npz) with its own sampler in --peer-steps, and their 8×8 grid."""
    name, *rest = snap["peer"].split(":")
    width, _, precision = (rest + ["budget", "cpu", "fp32"][len(rest):])[:3]
    npz = out / f"samples_{mark:g}.npz"
    log_run([sys.executable, str(HERE / "peer_cifar.py"), "sample", "--peer", name, "--width", width, "--precision",
             precision, "--weights", str(snap["source"]), "--out", str(npz), "--n", str(args.n), "--steps",
             str(args.peer_steps[name]), "--seed", str(args.seed), "--threads", str(args.threads)], log, args.threads)
    snap.update(source=npz, sampler_steps=args.peer_steps[name])
    grid(npz, out / f"grid_{mark:g}.png")


def grid(npz: Path, png: Path, side: int = 8) -> None:
    import numpy as np
    from PIL import Image

    images = np.load(npz)["images"][: side * side]
    n, h, w, c = images.shape
    tiles = images.reshape(side, side, h, w, c).transpose(0, 2, 1, 3, 4).reshape(side * h, side * w, c)
    Image.fromarray(tiles.squeeze(-1) if c == 1 else tiles).resize((side * w * 4, side * h * 4), Image.NEAREST).save(png)


def train_gentool(config: str, args, out: Path, log: Path) -> dict[float, dict]:
    """A gentool configuration for --minutes; per mark the newest kept checkpoint written by then."""
    launch = time.time()
    words = shlex.split(config)
    budget = [] if "--max-minutes" in words else ["--max-minutes", f"{args.minutes:g}"]  # a config may set its own
    cmd = ["gentool", "train", *words, *data_args(args), "--epochs", "1000000", *budget,
           "--checkpoint-minutes", f"{args.resolution:g}",
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
    cmd = ["gentool", "evaluate", str(source), *data_args(args), "--n", str(args.n),
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
        "one seed, so not the spread between training runs] (gentool evaluate, N = {n}, seed {seed}, the test split "
        "of {data}) · classes covered · "
        "wall-clock minute since launch of the snapshot scored. img/s: training images per second (gentool: the "
        "mean of its epoch records in metrics.json; a peer: over its loop, snapshots left out). CIFAR peers sample "
        "with {steps}.".format(n=args.n, seed=args.seed, data=args.data, steps=args.peer_steps), "", *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mnist", help="mnist, or an image folder (CIFAR-10: its train/ folder)")
    parser.add_argument("--data-dir", help="folder holding MNIST/raw (torchvision's layout)")
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--peer-minutes", type=float, help="how long the peers train (default: --minutes)")
    parser.add_argument("--peer-steps", default="torchcfm=100,ddpm=50",
                        help="sampler steps of the CIFAR peers (torchcfm: Euler; ddpm: its DDIM sampler)")
    parser.add_argument("--marks", default="2,5,7.5,10,15", help="minutes since launch to score (≤ --minutes)")
    parser.add_argument("--configs", nargs="*", default=["wgan-gp --ema 0.999"],
                        help="gentool train arguments, one string per configuration (MODEL first)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=float, default=0.25,
                        help="minutes between gentool's kept checkpoints (--checkpoint-minutes)")
    parser.add_argument("--out", default="bench-ttq")
    parser.add_argument("--peers", nargs="*", default=["wgan-gp"],
                        help="PEER[:WIDTH[:RECIPE[:PRECISION]]] each: wgan-gp (MNIST), torchcfm, ddpm (colour)")
    parser.add_argument("--no-peer", dest="peers", action="store_const", const=[])
    args = parser.parse_args()
    args.peer_steps = {k: int(v) for k, v in (kv.split("=") for kv in args.peer_steps.split(","))}
    args.marks = sorted(float(m) for m in args.marks.split(","))
    if args.marks[-1] > args.minutes or args.marks[0] <= 0:
        parser.error(f"--marks: every mark must lie in (0, --minutes {args.minutes:g}]")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    runs: dict[str, dict] = {}
    folders = {}
    for spec in args.peers:
        name = PEER_NAMES.get(spec, f"peer {spec} (width:recipe:precision)")
        folders[name] = out / ("peer" if spec == "wgan-gp" else "peer_" + slug(spec))
        runs[name] = train_peer(spec, args, folders[name], log)
    for config in args.configs:
        name = f"gentool `{config}`"
        folders[name] = out / slug(config)
        runs[name] = train_gentool(config, args, folders[name], log)
    for name, marks in runs.items():
        for mark, snap in marks.items():
            if snap["source"].suffix == ".safetensors" and "peer" in snap:
                sample_peer(snap, mark, args, folders[name], log)
            score(snap, mark, args, folders[name], log)
    text = table(runs, args)
    (out / "results.md").write_text(text + "\n")
    made = {"command": "gentool evaluate --metrics fid,modes", "extractor": "gentool (the data set's default)",
            "data": args.data, "split": "test", "n": args.n, "seed": args.seed, "threads": args.threads,
            "minutes": args.minutes, "host": host(),
            "interval": next((snap.get("interval") for marks in runs.values() for snap in marks.values()), None)}
    (out / "results.json").write_text(json.dumps({"evaluation": made, "runs": {
        name: {f"{m:g}": {k: (str(v) if isinstance(v, Path) else v) for k, v in s.items() if k != "interval"}
               for m, s in marks.items()}
        for name, marks in runs.items()}}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
