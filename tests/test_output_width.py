"""What a command prints on stdout when it is a file or pipe (a batch log, `> out.txt`) stays within 120 columns:
`gentool models` printed a 217-column table into a file (651 with a plugin's long description), `evaluate` a
191-column one, `doctor` 208-column lines. Tables fit the width; lines wrap between words, a word longer than the
width (a path) kept whole so that grep still finds it. --json is not touched."""

from __future__ import annotations

import json
import subprocess

import pytest

from gentool.cli import options as o
from gentool.environment import TABLE_WIDTH
from test_journeys import ENV, GENTOOL


def widest(text: str) -> int:
    return max(map(len, text.splitlines()), default=0)


@pytest.mark.parametrize("args,shown", [
    (["models"], ["mlp-wgan-gp", "--solver euler", "registered models"]),
    (["summary", "gan", "--data", "mnist"], ["ConvTranspose2d", "1,164,289", "(-, 128, 14, 14)"]),
])
def test_a_command_printing_into_a_file_stays_within_120_columns(tmp_path, args, shown):
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        done = subprocess.run([str(GENTOOL), *args], cwd=tmp_path, env={**ENV, "COLUMNS": ""},
                              stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, timeout=300)
    text = out.read_text(encoding="utf-8")
    assert done.returncode == 0, err.read_text()
    assert widest(text) <= TABLE_WIDTH, text
    assert all(s in text for s in shown)


def test_models_json_is_not_wrapped(tmp_path):
    done = subprocess.run([str(GENTOOL), "models", "--json"], cwd=tmp_path, env={**ENV, "COLUMNS": ""},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    entries = json.loads(done.stdout)
    assert any(len(json.dumps(e)) > TABLE_WIDTH for e in entries)  # lines a wrap would have split


def test_lines_wrap_between_words_keeping_paths_whole_and_labels_with_them(capsys):
    path = "/runs/" + "a-long-folder-name/" * 4 + "last.safetensors"  # 98 characters
    words = [f"word{i}" for i in range(60)]
    o.out_console().print(" ".join(words[:30]) + f" [bold]{path}[/] " + " ".join(words[30:]), highlight=False)
    o.out_console().print("  indented " + " ".join(words))
    o.out_console().print(f"run directory: {path}  checkpoint: {path}")
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= TABLE_WIDTH for line in lines)  # the path neither split nor cut, its markup gone:
    assert " ".join(lines).split() == [*words[:30], path, *words[30:], "indented", *words, "run", "directory:",
                                       path, "checkpoint:", path]
    assert [line for line in lines if line.startswith("  word")] and f"checkpoint: {path}" in lines
    long = path * 2  # wider than any line: that line is left whole (its label stays with it)
    o.out_console().print(f"run directory: {long}  checkpoint: {long}")
    assert capsys.readouterr().out.splitlines() == [f"run directory: {long}  checkpoint: {long}"]


def test_evaluate_table_fits_and_keeps_every_value(capsys):
    from gentool.cli.evaluate_cmd import ROWS, render

    metrics = {"fid": 12.3456, "fid_ci": [11.0, 13.5], "fid_inf": 10.5,
               "fid_by_n": [[n, 20.0 - n / 1000] for n in (2000, 4000, 6000, 8000, 10000)],
               "kid_mean": 0.01234, "kid_std": 0.001, "kid_ci": [0.01, 0.015], "modes": 9, "classes": 10,
               "pixel_saturated": 0.5, "real_pixel_saturated": 0.6}
    result = {"source": "runs/vae-mnist/last.safetensors", "data": "mnist", "split": "test", "n": 10000, "seed": 0,
              "metrics": metrics, "extractor": {"id": "mnist-r1", "test_accuracy": 0.99}, "real_source": "mnist test",
              "n_real": 10000, "gentool_version": "0", "notes": ["a note " * 40]}
    render(result, o.out_console())
    text = capsys.readouterr().out
    assert widest(text) <= TABLE_WIDTH, text
    cells = " ".join(text.replace("│", " ").split())
    assert "10 at 10,000)" in cells and "9 of 10" in cells and ROWS["fid_inf"][0] in cells
