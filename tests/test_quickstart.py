"""Journey: the README's quick start, run as a new user runs it: the commands are read from the README, executed
verbatim by the installed `gentool` executable in a subprocess (no TTY, output to files), and the digits they draw
are scored by `gentool evaluate --json`: the samples must cover at least 8 of the 10 digit classes.

`evaluate` scores with the reference classifier a user's `gentool evaluate` uses: the default mnist-sample
extractor, shared through the user cache. It trains once per machine (about 3 minutes on 2 cores; a later run of
this test then takes well under a minute). A temporary cache would retrain it on every run, and a smaller recipe
that trains in seconds is not the same judge: with 150 instead of 1000 training steps (98.2 % test accuracy all
the same) it counted 5-7 classes where the default counts 8-9, in the same samples.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from gentool.metrics.extractor import RECIPE_ENV

README = Path(__file__).resolve().parents[1] / "README.md"
MIN_CLASSES = 8


def installed_gentool() -> str:
    """The `gentool` console script installed beside this Python (else the first on PATH)."""
    beside = Path(sys.executable).with_name("gentool")
    found = str(beside) if beside.is_file() else shutil.which("gentool")
    assert found, "no installed gentool executable: pip install -e ."
    return found


def quick_start_commands() -> list[list[str]]:
    """The gentool commands of the README's quick start code blocks, in order, as argument lists (a line may
    chain several with `&&`)."""
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in re.findall(r"```\n(.*?)```", section, re.S) for line in block.splitlines()]
    commands = [shlex.split(part) for line in lines for part in line.split("&&")]
    return [c for c in commands if c and c[0] == "gentool"]


def run(args: list[str], cwd: Path, env: dict, log: Path) -> subprocess.CompletedProcess:
    """Run the installed executable with stdin closed and stdout/stderr in files, as in a batch job."""
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        proc = subprocess.run([installed_gentool(), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              stdout=out, stderr=err, timeout=600)
    assert proc.returncode == 0, f"gentool {shlex.join(args)} exited {proc.returncode}:\n{log.with_suffix('.err').read_text()}"
    return proc


def user_env() -> dict:
    """The caller's environment without the test suite's extractor recipe override (and without debug output)."""
    return {k: v for k, v in os.environ.items() if k not in (RECIPE_ENV, "GENTOOL_DEBUG")}


def test_readme_quick_start_draws_varied_digits(tmp_path):
    env = user_env()
    commands = quick_start_commands()
    assert [c[1] for c in commands][:2] == ["train", "sample"], commands
    for i, command in enumerate(commands):
        run(command[1:], tmp_path, env, tmp_path / f"step{i}")
        assert "Traceback" not in (tmp_path / f"step{i}.err").read_text()
    sample = commands[1]
    grid_path, checkpoint = tmp_path / sample[sample.index("--out") + 1], sample[2]

    # The grid: its 28×28 tiles (2 black pixels apart, as make_grid lays them out) must differ from one another. The
    # pixels' spread across the tiles was 4.4 (of 255) for the quick start's grid of one blob, 33 for varied digits.
    grid = iio.imread(grid_path).astype(np.float32).reshape(242, 242, -1)[..., 0]
    assert sample[sample.index("--grid") + 1] == "8x8"
    tiles = np.stack([grid[2 + 30 * r:30 * (r + 1), 2 + 30 * c:30 * (c + 1)] for r in range(8) for c in range(8)])
    assert tiles.std(axis=0).mean() > 15, "the grid's digits are (nearly) identical"

    run(["evaluate", checkpoint, "--n", "2000", "--metrics", "fid,modes", "--json"], tmp_path, env,
        tmp_path / "evaluate")
    result = json.loads((tmp_path / "evaluate.out").read_text())
    metrics = result["metrics"]
    assert result["data"] == "mnist-sample" and result["n"] == 2000
    assert metrics["modes"] >= MIN_CLASSES, (f"the quick start's samples cover {metrics['modes']} of 10 classes "
                                             f"(histogram {metrics['class_histogram']}, FID {metrics['fid']:.1f})")
