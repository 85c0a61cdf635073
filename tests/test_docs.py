"""The README and the guides in docs/ keep their word: every gentool command in them names real options, the `--json`
keys they list are the keys each command prints (so scripts that read them keep working), the command reference is
the one the option declarations generate, and the README's links lead to files that exist."""

from __future__ import annotations

import importlib.util
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
GUIDES = sorted((ROOT / "docs").rglob("*.md"))
BATCH_JOBS = ROOT / "docs" / "guides" / "batch-jobs.md"  # holds the `--json` key table


def documented_commands() -> list[list[str]]:
    """The arguments of every `gentool ...` command in the code blocks of the README and the guides, and in the
    example scripts (their commented instructions too)."""
    texts = [block for doc in [README, *(p.read_text() for p in GUIDES)]
             for block in re.findall(r"```[a-z]*\n(.*?)```", doc, re.DOTALL)]
    texts += [p.read_text() for p in sorted((ROOT / "examples").glob("*.sh"))]
    commands = []
    for text in texts:
        for line in text.replace("\\\n", " ").splitlines():
            line = re.sub(r"^([A-Z_][A-Z0-9_]*=\S*\s+)+", "", line.lstrip("# "))  # VAR=value gentool ...
            if not (line.startswith(("gentool ", "srun ")) and " gentool " in f" {line}" or "-m gentool " in line):
                continue
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                commands.append(words[words.index("gentool") + 1:])
    return commands


COMMANDS = documented_commands()


def test_the_docs_have_commands():
    assert len(GUIDES) > 10 and len(COMMANDS) > 30
    assert ["train", "--resume", "runs/wgan", "--epochs", "500"] in COMMANDS
    assert ["prepare", "--data", "mnist"] in COMMANDS


def test_the_command_reference_is_the_generated_one():
    """docs/reference/commands.md is what docs/gen_reference.py makes from the option declarations today (rerun it
    after changing an option)."""
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.PAGE.read_text() == gen.render(), "stale: run python docs/gen_reference.py"


def test_the_resume_rules_table_is_the_declared_one():
    """The reliability guide's table of resume rules puts each train option under the rule it declares (--out,
    --resume and --overwrite name the run and how it starts: not in the table)."""
    from gentool.train_options import FIXED, FREE, KEPT, RESTORED, RESUME_RULES, flag

    words = {"fixed": FIXED, "restored": RESTORED, "kept": KEPT, "this invocation only": FREE}
    text = (ROOT / "docs" / "guides" / "reliability.md").read_text()
    table = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("  | ") and cells[0].split(":")[0] in words:
            table[words[cells[0].split(":")[0]]] = set(re.findall(r"MODEL|--[a-z-]+", cells[1]))
    declared = {rule: {flag(name) for name, r in RESUME_RULES.items() if r == rule
                       and name not in ("out", "resume", "overwrite")} for rule in words.values()}
    declared[FREE].add("--log-every")  # an option of the command, not of the run: never recorded
    assert table == declared


def test_the_readme_links_lead_somewhere():
    """The README's relative links name files of this repository (mkdocs build --strict checks the guides' own)."""
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README) if "://" not in t]
    assert len(targets) > 10
    assert [t for t in targets if not (ROOT / t).exists()] == []


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_documented_commands_name_real_options(args):
    """Click reads every option up to --help (an unknown option or a bad command is an error there); the values
    themselves are not used."""
    quoted = [a.replace("$", "") for a in args]  # shell variables in the examples
    result = CliRunner().invoke(app, [*quoted, "--help"])
    assert result.exit_code == 0, result.output


def json_table() -> dict[str, tuple[set[str], set[str]]]:
    """command → (keys always printed, keys printed when they apply), from the `--json` table of the batch-jobs
    guide."""
    section = BATCH_JOBS.read_text().split("## JSON output", 1)[1].split("\n## ", 1)[0]
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
        found["prepare"] = run("prepare", "--data", "mnist", "--data-dir", mnist_root)  # reuses evaluate's cache
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
                          "summary MODEL` or `summary CKPT", "summary DIR", "models", "prepare"}
    aliases = {"sample --interpolate": "sample", "summary MODEL": "summary MODEL` or `summary CKPT"}
    for name, printed in outputs.items():
        always, sometimes = table[aliases.get(name, name)]
        for item in printed if isinstance(printed, list) else [printed]:
            keys = set(item)
            assert always <= keys, (name, always - keys)
            if name not in ("sweep --list", "summary DIR"):  # these add a key per swept setting or metric
                assert keys <= always | sometimes, (name, keys - always - sometimes)
    assert "frames" in outputs["sample --interpolate"] and "epoch" in outputs["evaluate"]
