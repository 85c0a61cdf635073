"""The README keeps its word: every gentool command in it names real options, and the `--json` keys it lists are
the keys each command prints (so scripts that read them keep working)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gentool.cli.app import app
from gentool.metrics.extractor import RECIPE_ENV
from test_metrics import TINY_RECIPE

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def documented_commands() -> list[list[str]]:
    """The arguments of every `gentool ...` command in the README's code blocks and in the example scripts (their
    commented instructions too)."""
    texts = re.findall(r"```[a-z]*\n(.*?)```", README, re.DOTALL)
    texts += [p.read_text() for p in sorted((ROOT / "examples").glob("*.sh"))]
    commands = []
    for text in texts:
        for line in text.replace("\\\n", " ").splitlines():
            line = line.lstrip("# ")
            if not (line.startswith("gentool ") or "-m gentool " in line):
                continue
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                commands.append(words[words.index("gentool") + 1:])
    return commands


COMMANDS = documented_commands()


def test_the_readme_has_commands():
    assert len(COMMANDS) > 30 and ["train", "--resume", "runs/wgan", "--epochs", "500"] in COMMANDS


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_documented_commands_name_real_options(args):
    """Click reads every option up to --help (an unknown option or a bad command is an error there); the values
    themselves are not used."""
    quoted = [a.replace("$", "") for a in args]  # shell variables in the examples
    result = CliRunner().invoke(app, [*quoted, "--help"])
    assert result.exit_code == 0, result.output


def json_table() -> dict[str, tuple[set[str], set[str]]]:
    """command → (keys always printed, keys printed when they apply), from the README's `--json` table."""
    section = README.split("## Scripts and batch jobs", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 4:
            table[cells[0].strip("`")] = (set(re.findall(r"`([a-z_]+)`", cells[2])),
                                          set(re.findall(r"`([a-z_]+)`", cells[3])))
    return table


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, mnist_root):
    """Each documented command's --json output, on tiny data (and a tiny evaluation extractor)."""
    tmp = tmp_path_factory.mktemp("json")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
        mp.setenv(RECIPE_ENV, TINY_RECIPE)
        runner = CliRunner()

        def run(*args):
            result = runner.invoke(app, [*map(str, args), "--json"], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            return json.loads(result.stdout)

        small = ["--data", "mnist", "--data-dir", mnist_root, "--limit", "32", "--batch-size", "16", "-q"]
        ckpt = tmp / "run" / "last.safetensors"
        found = {"train": run("train", "vae", *small, "--epochs", "1", "--out", tmp / "run")}
        found["sample"] = run("sample", ckpt, "--grid", "2x2", "--out", tmp / "grid.png")
        found["sample --interpolate"] = run("sample", ckpt, "--interpolate", "--grid", "1x1", "--frames", "2",
                                            "--out", tmp / "walk.gif")
        found["evaluate"] = run("evaluate", ckpt, "--data-dir", mnist_root, "--n", "20", "--metrics", "fid")
        sweep = [*small, "--latent-dim", "2", "--epochs", "1", "--out", tmp / "sweep"]
        found["sweep --list"] = run("sweep", "vae", *sweep, "--list")
        found["sweep --trial K"] = run("sweep", "vae", *sweep, "--trial", "0")
        found["sweep"] = run("sweep", "vae", *sweep)
        found["summary MODEL"] = run("summary", "vae")
        found["summary DIR"] = run("summary", tmp / "sweep")
        found["models"] = run("models")
    return found


def test_json_keys_are_the_documented_ones(outputs):
    table = json_table()
    assert set(table) >= {"train", "sample", "evaluate", "sweep", "sweep --trial K", "sweep --list",
                          "summary MODEL` or `summary CKPT", "summary DIR", "models"}
    aliases = {"sample --interpolate": "sample", "summary MODEL": "summary MODEL` or `summary CKPT"}
    for name, printed in outputs.items():
        always, sometimes = table[aliases.get(name, name)]
        for item in printed if isinstance(printed, list) else [printed]:
            keys = set(item)
            assert always <= keys, (name, always - keys)
            if name not in ("sweep --list", "summary DIR"):  # these add a key per swept setting or metric
                assert keys <= always | sometimes, (name, keys - always - sometimes)
    assert "frames" in outputs["sample --interpolate"] and "epoch" in outputs["evaluate"]
