"""Start-up time of gentool's light commands against `python -c "import torch"`, measured side by side.

    python benchmarks/startup.py [--repeat 7] [--baseline CHECKOUT]

Each round runs every command once, in a fresh process, in turn (so that a slow moment of a shared machine hits all
of them alike): `import torch` with this interpreter, then `gentool --help`, `gentool models` and
`gentool train --help` (the installed executable beside this interpreter), and with --baseline the same three from
another checkout (`python -m gentool` with that checkout first on PYTHONPATH; e.g. a clone of main, to compare
before and after). Prints the median and fastest wall time of each and its ratio to `import torch`'s median.
The target: `gentool --help` in under a quarter of the time `import torch` takes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (("--help",), ("models",), ("train", "--help"))


NEUTRAL = tempfile.mkdtemp(prefix="gentool-startup-")  # working directory: `python -m` puts it first on sys.path


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=NEUTRAL, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return seconds


def cases(baseline: str | None) -> dict[str, tuple[list[str], dict]]:
    env = {**os.environ, "COLUMNS": "80"}
    here = Path(sys.executable).with_name("gentool")
    gentool = str(here) if here.is_file() else shutil.which("gentool")
    if not gentool:
        sys.exit("the gentool executable is not installed beside this interpreter (pip install -e .)")
    found = {'python -c "import torch"': ([sys.executable, "-c", "import torch"], env)}
    for args in COMMANDS:
        found[f"gentool {' '.join(args)}"] = ([gentool, *args], env)
    if baseline:
        base_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [baseline, os.environ.get("PYTHONPATH")]))}
        for args in COMMANDS:
            found[f"baseline: gentool {' '.join(args)}"] = ([sys.executable, "-m", "gentool", *args], base_env)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="rounds (each runs every command once)")
    parser.add_argument("--baseline", help="another gentool checkout to time the same commands from")
    args = parser.parse_args()
    runs = cases(args.baseline)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, (argv, env) in runs.items():  # one warm-up round: file caches, .pyc files
        timed(argv, env)
    for _ in range(args.repeat):
        for name, (argv, env) in runs.items():
            times[name].append(timed(argv, env))
    torch_median = statistics.median(times['python -c "import torch"'])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.repeat} rounds, commands alternated; {os.cpu_count()} CPUs, load average {load:.1f} at the end")
    print(f"{'command':<36} {'median s':>9} {'fastest s':>9} {'÷ import torch':>15}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<36} {median:>9.3f} {min(values):>9.3f} {median / torch_median:>15.2f}")


if __name__ == "__main__":
    main()
