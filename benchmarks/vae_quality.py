"""Sample quality against wall-clock time of the VAE journeys, this checkout against another one (e.g. the code before
a change), run in alternation so that both see the same machine.

    git clone --quiet . /tmp/before && git -C /tmp/before checkout --quiet 6431a1a
    python3 benchmarks/vae_quality.py --before /tmp/before --data-dir ../shared/data
                                      [--cases quickstart,mnist5000,mnist1] [--threads N] [--repeats 1]

Cases (each `python -m gentool train vae ...` in its own process, the checkout first on the import path):
quickstart = the README's `--data mnist-sample --epochs 5`; mnist5000 = `--data mnist --limit 5000 --epochs 2`;
mnist1 = one epoch of full MNIST. Each run reports its wall time, the time to its first line of output, its batch
size, steps and last-epoch loss; then this checkout's `gentool evaluate` scores 2,000 samples of every run with the
same reference extractor (the data set's default; trained once and cached on first use): FID and classes covered.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CASES = {
    "quickstart": ["--data", "mnist-sample", "--epochs", "5"],
    "mnist5000": ["--data", "mnist", "--limit", "5000", "--epochs", "2"],
    "mnist1": ["--data", "mnist", "--epochs", "1"],
}


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, str]:
    """Run `cmd`; return (wall seconds, seconds to the first output on stdout or stderr, stderr)."""
    start, first, err = time.perf_counter(), None, []
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    sel = selectors.DefaultSelector()
    for stream in (proc.stdout, proc.stderr):
        sel.register(stream, selectors.EVENT_READ)
    while sel.get_map():
        for key, _ in sel.select():
            chunk = key.fileobj.read1(65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            first = first if first is not None else time.perf_counter() - start
            if key.fileobj is proc.stderr:
                err.append(chunk.decode(errors="replace"))
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{''.join(err)[-2000:]}")
    return time.perf_counter() - start, first or 0.0, "".join(err)


def gentool(checkout: Path) -> tuple[list[str], dict]:
    """The command prefix and environment that run `checkout`'s gentool (with the checkout as working directory:
    `python -m` puts the working directory ahead of PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    where = subprocess.run([sys.executable, "-c", "import gentool; print(gentool.__file__)"], env=env, cwd=checkout,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(checkout)):
        raise SystemExit(f"imported {where or 'nothing'}, not the checkout at {checkout}")
    return [sys.executable, "-m", "gentool"], env


def train_run(checkout: Path, case: str, args, out: Path) -> dict:
    cmd, env = gentool(checkout)
    extra = ["--data-dir", args.data_dir] if "mnist" in CASES[case] else []
    extra += ["--threads", str(args.threads)] if args.threads else []
    wall, first, _ = timed([*cmd, "train", "vae", *CASES[case], *extra, "--out", str(out)], env, checkout)
    config = json.loads((out / "config.json").read_text())["config"]
    last = json.loads((out / "metrics.json").read_text())["epochs"][-1]
    return {"wall": wall, "first_output": first, "batch_size": config["batch_size"], "step": last["step"],
            "loss": last["loss"], "kl": last["kl"], "init": config.get("init", "(torch default)")}


def score(run_dir: Path, case: str, args) -> dict:
    cmd, env = gentool(HERE)
    extra = ["--data-dir", args.data_dir] if "mnist" in CASES[case] else []
    proc = subprocess.run([*cmd, "evaluate", str(run_dir / "last.safetensors"), *extra, "--n", "2000",
                           "--metrics", "fid,modes", "--json"], env=env, cwd=HERE, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"evaluate {run_dir} failed:\n{proc.stderr[-2000:]}")
    m = json.loads(proc.stdout)["metrics"]
    return {"fid": m["fid"], "modes": m["modes"], "top_class_share": max(m["class_histogram"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="another gentool checkout, run in alternation")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--cases", default="quickstart,mnist5000,mnist1")
    parser.add_argument("--threads", type=int, help="--threads for every training run (default: gentool's)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())  # the runs' working directories are the checkouts
    checkouts = {"before": args.before.resolve(), "this": HERE}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            for repeat in range(args.repeats):
                for name, checkout in checkouts.items():  # alternating: both see the same machine
                    out = Path(tmp) / f"{case}-{name}-{repeat}"
                    row = {"case": case, "checkout": name, **train_run(checkout, case, args, out)}
                    rows.append({**row, **score(out, case, args)})
                    print(json.dumps(rows[-1]), flush=True)
    print("\n| case | checkout | batch | steps | init | train wall s | first output s | loss | KL | FID | classes | top class share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['checkout']} | {r['batch_size']} | {r['step']} | {r['init']} | {r['wall']:.1f} | "
              f"{r['first_output']:.1f} | {r['loss']:.1f} | {r['kl']:.2f} | {r['fid']:.1f} | {r['modes']}/10 | "
              f"{r['top_class_share']:.2f} |")


if __name__ == "__main__":
    main()
