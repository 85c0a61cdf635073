"""Peak resident memory of `gentool sample --n N` (MNIST and CIFAR-10 geometry), this checkout against another one
(e.g. the code before streaming), side by side in one run; optionally `evaluate` and refusing hostile checkpoints.

    git worktree add /tmp/before <commit>
    python3 benchmarks/memory.py --before /tmp/before [--sizes 10000,100000,1000000] [--geometry mnist,cifar10]
                                 [--cap-gib 11] [--evaluate --data-dir DIR] [--hostile]

Every measurement is its own process (`python -m gentool ...` with the checkout first on the import path); its peak
resident set size is the kernel's ru_maxrss for that child (what `/usr/bin/time -v` reports as "Maximum resident set
size"). A watchdog stops a run whose resident memory passes --cap-gib (lowered to what the machine has available
minus 2 GiB), so a version that would exhaust a shared machine is reported as "> cap" instead of taking it down.
The checkpoints are VAEs (--width, default 0.01: one channel per layer) trained for one epoch on the bundled MNIST sample and on a
synthetic 3×32×32 folder: what is measured is handling the images, so the decoder only has to be quick. The target:
peak − the peak of `gentool --version` (the CLI with torch imported, doing nothing) ≤ 1.5 × the result's bytes + the
model's bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
# torch and gentool's sampling code imported, nothing done (`gentool --version` no longer imports torch)
BASELINE = ["-c", "import torch, gentool.sampling"]


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 8.0


def measure(checkout: Path, args: list[str], cap_gib: float, cwd: Path) -> dict:
    """Run `python -m gentool ARGS` (or `python -c` for args[0] == "-c") with `checkout` first on the import path;
    returns exit code, peak RSS (MiB), wall seconds and whether the cap stopped it."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", "gentool", *args]
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    capped = threading.Event()
    threading.Thread(target=_watch, args=(proc, cap_gib, capped), daemon=True).start()
    stderr = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"code": proc.returncode, "peak_mib": usage.ru_maxrss / 1024, "seconds": time.perf_counter() - start,
            "capped": capped.is_set(), "error": (stderr.strip().splitlines() or [""])[-1][:200]}


def _watch(proc: subprocess.Popen, cap_gib: float, capped: threading.Event) -> None:
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            rss = next(int(l.split()[1]) for l in status.read_text().splitlines() if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return
        if rss > cap_gib * 2**20:
            capped.set()
            proc.kill()
            return
        time.sleep(0.1)


def make_checkpoints(work: Path, checkout: Path, width: float) -> dict[str, Path]:
    """A VAE checkpoint per geometry, trained by `checkout` (a checkout reads its own checkpoints: an older one
    refuses config fields added since)."""
    from PIL import Image

    folder = work / "colour" / "train"
    rng = np.random.default_rng(0)
    for c in range(2):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(64):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"class{c}" / f"{i}.png")
    out = {}
    for name, data in (("mnist", "mnist-sample"), ("cifar10", str(folder))):
        run = work / f"vae-{name}-w{width:g}"
        if not (run / "last.safetensors").exists():
            result = measure(checkout, ["train", "vae", "--data", data, "--epochs", "1", "--limit", "128",
                                        "--width", str(width), "--out",
                                        str(run), "-q", "--sample-every", "0", "--threads", "1"], 8, work)
            if result["code"]:
                raise SystemExit(f"training the {name} checkpoint failed: {result['error']}")
        out[name] = run / "last.safetensors"
    return out


def model_mib(ckpt: Path) -> float:
    from safetensors import safe_open

    with safe_open(str(ckpt), "pt") as f:
        return sum(np.prod(f.get_slice(k).get_shape()) * 4 for k in f.keys() if k.startswith("model.")) / 2**20


def cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if r["capped"]:
        return f"> cap ({r['peak_mib']:,.0f} MiB, stopped after {r['seconds']:.0f} s)"
    flag = "" if r["code"] == 0 else f" exit {r['code']}: {r['error']}"
    return f"{r['peak_mib']:,.0f} MiB, {r['seconds']:.0f} s{flag}"


def sample_rows(args, versions, ckpts, work: Path) -> list[dict]:
    rows = []
    for geometry in args.geometry.split(","):
        ckpt = ckpts["after"][geometry]
        image_bytes = 784 if geometry == "mnist" else 3072
        for n in map(int, args.sizes.split(",")):
            row = {"geometry": geometry, "n": n, "result_mib": n * image_bytes / 2**20, "model_mib": model_mib(ckpt)}
            for label, checkout in versions:
                cap = min(args.cap_gib, max(1.0, available_gib() - 2))
                out = work / f"{label}-{geometry}-{n}.npz"
                result = measure(checkout, ["sample", str(ckpts[label][geometry]), "--n", str(n), "--out", str(out), "--overwrite",
                                            "--device", "cpu"], cap, work)
                result["cap_gib"] = cap
                row[label] = result
                out.unlink(missing_ok=True)
                print(f"  {geometry} n={n:,} {label}: {cell(result)}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def print_table(rows: list[dict], labels: list[str], baseline: dict) -> None:
    base = {label: baseline[label]["peak_mib"] for label in labels}
    print(f"\n`python -c 'import torch, gentool.sampling'` (bare): " +
          ", ".join(f"{label} {base[label]:,.0f} MiB" for label in labels))
    head = "| data | n | result | " + " | ".join(f"{label}: peak RSS, wall" for label in labels) + \
           " | after: (peak − bare) ÷ (result + model) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        after = r.get("after")
        ratio = "-" if not after or after["code"] else \
            f"{(after['peak_mib'] - base['after']) / (r['result_mib'] + r['model_mib']):.2f}"
        print(f"| {r['geometry']} | {r['n']:,} | {r['result_mib']:,.0f} MiB | " +
              " | ".join(cell(r.get(label)) for label in labels) + f" | {ratio} |")


def hostile_rows(args, versions, ckpts, work: Path) -> None:
    """Refusing hostile checkpoints against loading a valid one (sample --grid 1x1)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    valid = ckpts["after"]["mnist"]
    with safe_open(str(valid), "pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    cases = {"valid checkpoint": valid}
    for name, change in (("config latent_dim 1,000,000", {"latent_dim": 1_000_000}), ("config width 64", {"width": 64.0})):
        path = work / f"hostile-{len(cases)}.safetensors"
        save_file(tensors, path, metadata={**meta, "config": json.dumps({**config, **change})})
        cases[name] = path
    commands = {name: ["sample", str(path), "--grid", "1x1", "--out", str(work / "g.png"), "--overwrite"]
                for name, path in cases.items()}
    print_cases("sample --grid 1x1 of a checkpoint", commands, args, versions, work)


def print_cases(title: str, commands: dict[str, list[str]], args, versions, work: Path) -> None:
    """One table row per command: each version's peak RSS and wall time."""
    print(f"\n| {title} | " + " | ".join(f"{label}: peak RSS, wall" for label, _ in versions) + " |")
    print("|---|" + "---|" * len(versions))
    for name, command in commands.items():
        cells = []
        for label, checkout in versions:
            cap = min(args.cap_gib, max(1.0, available_gib() - 2))
            cells.append(cell(measure(checkout, command, cap, work)))
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def evaluate_rows(args, versions, ckpts, work: Path) -> None:
    """evaluate on MNIST: a checkpoint's 100,000 samples, and a 3 MB .npz claiming 4 million images scored with
    --n 100 (needs the cached MNIST extractor, or trains it once)."""
    bomb = work / "bomb.npz"
    if not bomb.exists():
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (4_000_000, 28, 28, 1)})
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf, \
                zf.open("images.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            block = bytes(1 << 24)
            for left in range(4_000_000 * 784, 0, -len(block)):
                member.write(block[:min(left, len(block))])
    cases = {f"checkpoint --n 100000": [str(ckpts["after"]["mnist"]), "--n", "100000"],
             f"{bomb.stat().st_size / 2**20:.1f} MiB .npz claiming 4,000,000 images, --n 100": [str(bomb), "--n", "100"]}
    commands = {name: ["evaluate", *extra, "--data", "mnist", "--data-dir", args.data_dir, "--metrics", "fid,kid,jsd",
                       "--device", "cpu"] for name, extra in cases.items()}
    print_cases("evaluate (MNIST)", commands, args, versions, work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="another gentool checkout, measured beside this one")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--geometry", default="mnist,cifar10")
    parser.add_argument("--cap-gib", type=float, default=11.0, help="stop a run whose resident memory passes this")
    parser.add_argument("--work", type=Path, help="folder for checkpoints and outputs (default: a temporary one)")
    parser.add_argument("--evaluate", action="store_true", help="also measure evaluate (MNIST; needs --data-dir)")
    parser.add_argument("--data-dir", default=os.environ.get("GENTOOL_DATA", ""))
    parser.add_argument("--hostile", action="store_true", help="also measure refusing hostile checkpoints")
    parser.add_argument("--skip-sample", action="store_true")
    parser.add_argument("--width", type=float, default=0.01, help="width of the benchmark's VAEs (tiny: the images, not the networks, are measured)")
    args = parser.parse_args()
    versions = [("after", HERE)] + ([("before", args.before.resolve())] if args.before else [])
    work = args.work or Path(tempfile.mkdtemp(prefix="gentool-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpts = {}
    for label, checkout in versions:
        (work / label).mkdir(exist_ok=True)
        ckpts[label] = make_checkpoints(work / label, checkout, args.width)
    baseline = {label: measure(checkout, BASELINE, args.cap_gib, work) for label, checkout in versions}
    print(f"machine: {os.cpu_count()} CPUs, {available_gib():.1f} GiB available at the start; wall times are "
          f"under whatever else runs (one process at a time here)", file=sys.stderr)
    if not args.skip_sample:
        rows = sample_rows(args, versions, ckpts, work)
        print_table(rows, [label for label, _ in versions], baseline)
    if args.hostile:
        hostile_rows(args, versions, ckpts, work)
    if args.evaluate:
        evaluate_rows(args, versions, ckpts, work)


if __name__ == "__main__":
    main()
