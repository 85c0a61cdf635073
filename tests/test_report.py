"""`gentool report PATH`: one self-contained HTML page for a run, a sweep or a folder of runs, built from real tiny
runs (the tiny MNIST files and the tiny extractor recipe of test_cli_evaluate) and checked by parsing the HTML:
its sections, headings, tables, images (alt text, data: URIs) and links; a headless Chromium renders it when one is
installed."""

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gentool import figures
from gentool.metrics.extractor import RECIPE_ENV
from gentool.report.views import RUN_SECTIONS
from test_cli_evaluate import cache_home, tiny_extractor  # noqa: F401 (fixtures: a tiny extractor in a module cache)
from test_metrics import TINY_RECIPE, one_thread  # noqa: F401 (an autouse fixture)

CHROMIUM = Path("/usr/bin/chromium")


class Page(HTMLParser):
    """The parts of a page the tests look at: tags with their attributes, ids, heading levels, tables, text."""

    def __init__(self, html: str):
        super().__init__()
        self.tags, self.ids, self.headings, self.tables, self.text = [], set(), [], [], []
        self._table = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
            self.headings.append(int(tag[1]))
        if tag == "table":
            self._table = {"caption": False, "col_headers": 0, "row_headers": 0, "rows": 0, "class": attrs.get("class")}
            self.tables.append(self._table)
        elif self._table is not None and tag == "caption":
            self._table["caption"] = True
        elif self._table is not None and tag == "th":
            self._table["col_headers" if attrs.get("scope") == "col" else "row_headers"] += 1
        elif self._table is not None and tag == "tr":
            self._table["rows"] += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def check_page(page: Page) -> None:
    """What every report must be: offline, accessible, its links resolving."""
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    for tag, attrs in page.tags:
        for name in ("src", "href", "action", "srcset", "poster"):
            value = attrs.get(name) or ""
            assert not value.startswith(("http:", "https:", "//", "file:")), (tag, name, value[:80])
    images = page.all("img")
    assert images
    for img in images:
        assert img.get("alt", "").strip(), img.get("src", "")[:40]
        assert img["src"].startswith(("data:image/png;base64,", "data:image/gif;base64,"))
    for link in page.all("a"):
        assert link["href"].startswith("#") and link["href"][1:] in page.ids, link["href"]
    assert page.headings[0] == 1 and page.headings.count(1) == 1
    assert all(b <= a + 1 for a, b in zip(page.headings, page.headings[1:])), page.headings  # no level skipped
    assert page.tables and all(t["caption"] and t["col_headers"] and t["rows"] > 1 for t in page.tables)
    assert page.all("nav") and page.all("main")


def gentool(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The gentool command in a subprocess, as a user runs it (stderr captured apart from stdout, no TTY)."""
    return subprocess.run([sys.executable, "-m", "gentool", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)


def invoke_here(*args) -> tuple[int, str, str]:
    """A gentool command in this process (quicker than a subprocess, which the journey tests use)."""
    from typer.testing import CliRunner

    from gentool.cli.app import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_root, cache_home):
    """A folder with a VAE run (--eval-every 1, plus an evaluate result saved into it) and a GAN run."""
    root = tmp_path_factory.mktemp("report") / "runs"
    common = ["--data", "mnist", "--data-dir", mnist_root, "--epochs", "2", "--width", "0.25", "-q"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache_home))
        mp.setenv(RECIPE_ENV, TINY_RECIPE)
        code, _, err = invoke_here("train", "vae", *common, "--limit", "96", "--batch-size", "16", "--eval-every", "1",
                                   "--eval-n", "40", "--out", root / "vae")
        assert code == 0, err
        code, _, err = invoke_here("evaluate", root / "vae" / "best.safetensors", "--data-dir", mnist_root, "--n", "30",
                                   "--metrics", "fid,modes,vae", "--out", root / "vae" / "eval-best.json")
        assert code == 0, err
    code, _, err = invoke_here("train", "gan", *common, "--limit", "32", "--batch-size", "32", "--out", root / "gan")
    assert code == 0, err
    return root


def report(path, *extra, journey: bool = False) -> tuple[dict, Page]:
    """`gentool report PATH --json`, in a subprocess as a user runs it when `journey`, else in this process."""
    if journey:
        done = gentool("report", path, "--json", *extra)
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code, out, err = invoke_here("report", path, "--json", *extra)
    assert code == 0, err
    result = json.loads(out)
    return result, Page(Path(result["report"]).read_text(encoding="utf-8"))


def test_run_report(runs):
    result, page = report(runs / "vae", journey=True)
    html = runs / "vae" / "report.html"
    assert result == {"report": str(html), "kind": "run", "runs": 1, "bytes": html.stat().st_size}
    check_page(page)
    assert {f"run-{key}" for key, _ in RUN_SECTIONS} <= page.ids
    words = page.words
    metrics = json.loads((runs / "vae" / "metrics.json").read_text())
    best = metrics["best"]
    assert f"best.safetensors holds epoch {best['epoch']}" in words and f"{best['fid']:.4g}" in words
    assert "eval-best.json (gentool evaluate)" in words and "vae_reconstruction" in words
    assert metrics["evaluation"]["extractor"]["id"] in words
    summary = json.loads(invoke_here("summary", runs / "vae" / "last.safetensors", "--json")[1])
    assert f"{summary['total_params']:,} parameters in all" in words  # the architecture as `summary` counts it
    alts = [img["alt"] for img in page.all("img")]
    assert any(a.startswith("Training curves") and "reconstruction" in a for a in alts)
    assert any("epoch 2" in a for a in alts) and any(a.startswith("Animation") for a in alts)
    assert any(img["src"].startswith("data:image/gif") for img in page.all("img"))


def test_partial_and_heldout_records(runs, tmp_path):
    run = tmp_path / "vae"
    shutil.copytree(runs / "vae", run)
    (run / "report.html").unlink(missing_ok=True)
    history = json.loads((run / "metrics.json").read_text())
    for r in history["epochs"]:
        r.update(heldout_loss=r["loss"] * 1.1, heldout_reconstruction=r["reconstruction"] * 1.1, heldout_kl=r["kl"])
    history["epochs"][-1]["partial"] = True
    history["heldout"] = {"split": "test", "n": 64}  # a provenance field this gentool does not know yet
    (run / "metrics.json").write_text(json.dumps(history))
    _, page = report(run)
    check_page(page)
    words = page.words
    last = history["epochs"][-1]
    assert f"Final metrics (epoch {last['epoch']}, partial)" in words
    assert f"loss {last['loss']:.4g} {last['heldout_loss']:.4g}" in words  # the held-out value beside the training one
    assert "metric value held-out" in words  # the final metrics' header row
    assert f"{last['epoch']} (partial)" in words and "stopped mid-epoch" in words
    assert [a.get("class") for a in page.all("tr")].count("partial") == 1
    assert "heldout" in words and "Held-out metrics (heldout_loss, heldout_reconstruction, heldout_kl)" in words
    assert figures.panel_of("heldout_reconstruction") == "reconstruction"
    curves = next(img["alt"] for img in page.all("img") if img["alt"].startswith("Training curves"))
    assert "losses: loss, heldout_loss" in curves and "reconstruction: reconstruction, heldout_reconstruction" in curves


def test_missing_files_are_notes(runs, tmp_path):
    run = tmp_path / "gan"
    shutil.copytree(runs / "gan", run)
    (run / "progress.gif").unlink()
    for grid in (run / "samples").glob("*.png"):
        grid.unlink()
    (run / "report.html").unlink(missing_ok=True)
    result, page = report(run)
    words = page.words
    assert "no progress.gif" in words and "no sample grids" in words and "No best checkpoint" in words
    assert "Not evaluated" in words and "No events" in words
    assert len(page.all("img")) == 1  # the curves, drawn from metrics.json



def test_grids_drawn_at_a_stop_inside_an_epoch_and_by_the_teacher_are_shown(runs, tmp_path):
    """samples/latest.png (drawn part-way through an epoch) is shown when the run's last record is of an epoch
    stopped inside and the grid is newer than every epoch grid (a run stopped inside its first epoch has no other);
    a student's samples/teacher.png beside its grids."""
    run = tmp_path / "gan"
    shutil.copytree(runs / "gan", run)
    grids = sorted((run / "samples").glob("epoch_*.png"))
    shutil.copy(grids[-1], run / "samples" / "latest.png")
    shutil.copy(grids[-1], run / "samples" / "teacher.png")

    def alts(last: dict | None = None, finished: int = 2) -> list[str]:
        history = json.loads((run / "metrics.json").read_text())
        history["epochs"] = history["epochs"][:finished] + ([last] if last else [])
        (run / "metrics.json").write_text(json.dumps(history))
        (run / "report.html").unlink(missing_ok=True)
        return [img["alt"] for img in report(run)[1].all("img")]

    inside = {**json.loads((run / "metrics.json").read_text())["epochs"][-1], "epoch": 3, "partial": True,
              "epoch_fraction": 0.4, "images_seen": 12}
    shown = alts(inside)
    assert "Grid of samples drawn from the fixed noise part-way through epoch 3 (40% of its steps)" in shown, shown
    assert "Grid of the teacher's samples from the same fixed noise" in shown
    assert not any("part-way" in a for a in alts())  # stopped between epochs: the last epoch's grid says it
    os.utime(run / "samples" / "latest.png", ns=(1, 1))  # older than the epoch grids: a stop since resumed past
    assert not any("part-way" in a for a in alts(inside))
    for grid in grids:  # stopped inside the first epoch: the only grid there is
        grid.unlink()
    shown = alts({**inside, "epoch": 1}, finished=0)
    assert any("part-way through epoch 1" in a for a in shown), shown


def test_a_large_page_warns(runs, tmp_path, monkeypatch):
    import gentool.report as report_module

    monkeypatch.setattr(report_module, "LARGE_MB", 0.01)
    opts = report_module.ReportOptions(path=str(runs / "gan"), out=str(tmp_path / "r.html"))
    with pytest.warns(UserWarning, match="more than many mail servers accept; --no-animations"):
        assert report_module.build_report(opts)["bytes"] > 0.01 * 2**20


def huge_canvas_png(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims a width × height canvas (valid CRC, so readers believe it)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_hostile_files_are_refused_not_read(runs, tmp_path):
    run = tmp_path / "gan"
    shutil.copytree(runs / "gan", run)
    (run / "report.html").unlink(missing_ok=True)
    last = max((run / "samples").glob("epoch_*.png"))
    last.write_bytes(huge_canvas_png(100_000, 100_000))
    (run / "progress.gif").write_bytes(b"GIF89a" + b"\0" * 10)
    (run / "notes.json").write_text('{"anything": 1}')
    # what `gentool export` writes beside last.onnx (the README exports into the run): passed over without a note
    (run / "last.onnx.json").write_text('{"inputs": [], "output": {}, "checkpoint_sha256": "0"}')
    _, page = report(run)
    words = page.words
    assert "too large to embed" in words or "unreadable image" in words
    assert "progress.gif: unreadable image" in words and "notes.json: not a gentool evaluate result" in words
    assert "last.onnx.json" not in words
    (run / "metrics.json").unlink()
    (run / "metrics.json").symlink_to("/dev/zero")  # no size on disk, endless content
    code, _, err = invoke_here("report", run, "--overwrite")
    said = Path(run / "report.html").read_text()  # named as what it is, not taken for a missing metrics.json
    assert code == 0 and "metrics.json (a symbolic link to /dev/zero) is a character device, not a regular file" \
        in said and "no metrics.json" not in said


def test_folder_report_compares_runs_and_survives_a_broken_one(runs, tmp_path):
    folder = tmp_path / "runs"
    shutil.copytree(runs, folder)
    broken = folder / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    result, page = report(folder, "--out", tmp_path / "all.html", "--no-animations")
    assert result["report"] == str(tmp_path / "all.html") and result["kind"] == "folder" and result["runs"] == 2
    check_page(page)
    comparison = next(t for t in page.tables if t["col_headers"] > 5)
    assert comparison["rows"] == 3  # header + gan + vae; the broken run is named, not compared
    assert {"comparison", "side-by-side", "runs", "vae", "gan", "broken"} <= page.ids
    assert "vae-curves" in page.ids and "gan-architecture" in page.ids
    assert "This run could not be read" in page.words and "not valid JSON" in page.words
    assert not any(img["src"].startswith("data:image/gif") for img in page.all("img"))
    assert "progress.gif left out (--no-animations)" in page.words


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, mnist_root):
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    code, _, err = invoke_here("sweep", "vae", "--data", "mnist", "--data-dir", mnist_root, "--latent-dim", "2,3",
                               "--width", "0.25", "--epochs", "1", "--limit", "32", "--out", out, "-q")
    assert code == 0, err
    return out


def test_sweep_report(sweep_dir):
    result, page = report(sweep_dir)
    assert result["kind"] == "sweep" and result["runs"] == 2
    check_page(page)
    assert {"sweep-overview", "sweep-figures", "sweep-results", "sweep-trials", "trial-000", "trial-001"} <= page.ids
    assert "trial-001-curves" in page.ids and "trial-000-architecture" in page.ids
    trial_links = [a["href"] for a in page.all("a") if a["href"].startswith("#trial-") and a["href"].count("-") == 1]
    assert {"#trial-000", "#trial-001"} <= set(trial_links)  # from the contents and from the results table
    alts = [img["alt"] for img in page.all("img")]
    assert any(a.startswith("Sample matrix") for a in alts) and any(a.startswith("Heat map") for a in alts)
    assert any(a.startswith("Curves per epoch of every trial") for a in alts)
    assert "latent_dim=2, width=0.25" in page.words


def test_folder_report_shows_its_runs_and_its_sweeps(runs, sweep_dir, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(runs / "gan", folder / "runs" / "gan")
    shutil.copytree(sweep_dir, folder / "sweeps" / "vae")
    (folder / "sweeps" / "vae" / "report.html").unlink(missing_ok=True)
    result, page = report(folder, "--no-animations")
    assert result["kind"] == "folder" and result["runs"] == 3  # the run and the sweep's two trials
    check_page(page)
    comparison = next(t for t in page.tables if t["col_headers"] > 5)
    assert comparison["rows"] == 2  # header + gan: the sweep's trials are in the sweep's section, not compared
    assert {"runs-gan", "sweep-sweeps-vae", "sweep-sweeps-vae-figures", "sweep-sweeps-vae-results", "trial-000",
            "trial-001-curves"} <= page.ids
    assert "Sweep sweeps/vae" in page.words and "1 run(s), 1 sweep(s)" in page.words
    assert any(img["alt"].startswith("Heat map") for img in page.all("img"))


def test_sweep_report_shows_eval_scores(sweep_dir, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(sweep_dir, sweep)
    (sweep / "report.html").unlink(missing_ok=True)
    manifest = json.loads((sweep / "sweep.json").read_text())
    for trial, fid in zip(manifest["trials"], (31.25, 12.5)):  # what `sweep --eval` records per trial
        trial["metrics"] = {"fid": fid, "modes": 9, "class_histogram": [0.1] * 10}
    (sweep / "sweep.json").write_text(json.dumps(manifest))
    _, page = report(sweep)
    check_page(page)
    words = page.words
    assert words.count("By the sweep (--eval)") == 2 and "fid 12.5" in words and "0.1, 0.1, 0.1" in words
    assert any(img["alt"].startswith("Heat map of the final fid") for img in page.all("img"))


def test_bad_paths_are_one_line(runs, tmp_path):
    done = gentool("report", tmp_path / "nothing")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"PATH: {tmp_path / 'nothing'} does not exist; expected a run directory" in done.stderr
    for path in (runs / "vae" / "config.json", tmp_path):
        code, _, err = invoke_here("report", path)
        assert code == 2 and err.count("\n") == 1 and f"PATH: {path}" in err and "expected a run directory" in err
    run = tmp_path / "run"
    shutil.copytree(runs / "gan", run)
    (run / "report.html").write_text("mine")
    code, _, err = invoke_here("report", run)
    assert code == 2 and "--overwrite" in err and (run / "report.html").read_text() == "mine"
    assert invoke_here("report", run, "--overwrite")[0] == 0
    assert (run / "report.html").read_text().startswith("<!DOCTYPE html>")
    code, _, err = invoke_here("report", run, "--out", tmp_path)
    assert code == 2 and "--out" in err
    (run / "metrics.json").write_text(json.dumps({"epochs": [{"epoch": "one"}]}))
    code, _, err = invoke_here("report", run, "--overwrite")
    assert code == 1 and err.count("\n") == 1
    assert "metrics.json: field epochs[0].epoch is \"one\"; expected an integer" in err


def test_a_hostile_sweep_manifest_cannot_leave_the_sweep(sweep_dir, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(sweep_dir, sweep)
    manifest = json.loads((sweep / "sweep.json").read_text())
    (sweep / "report.html").unlink(missing_ok=True)
    manifest["trials"][0]["run_dir"] = "../../etc"
    (sweep / "sweep.json").write_text(json.dumps(manifest))
    code, _, err = invoke_here("report", sweep)
    assert code == 1 and "trials[0].run_dir must be a folder name inside the sweep" in err


def test_the_cli_module_imports_nothing_heavy():
    code = "import sys, gentool.cli.report_cmd; print(sorted(m for m in ('torch', 'matplotlib', 'jinja2') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"headless browser check needs Chromium at {CHROMIUM} "
                                                  f"(Debian: apt-get install chromium)")
def test_chromium_renders_the_page(runs, tmp_path):
    """A real browser loads the page from file:// (no network: the page's CSP forbids it anyway) and paints it."""
    import numpy as np
    from PIL import Image

    result, _ = report(runs / "vae", "--out", tmp_path / "page.html")
    shot = tmp_path / "shot.png"
    done = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                           "--window-size=1200,3000", Path(result["report"]).as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (3000, 1200)
    rows = pixels.std(axis=1)
    assert (rows > 1).mean() > 0.3  # text, tables and figures down the page, not a blank or error page
    assert (pixels[:, 1000:] < 250).any()  # the figures and tables reach the right-hand side
