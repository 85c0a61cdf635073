"""Issue 26's attacker hour (see the issue note): what it found beyond the instances the issue named, each class
tested on several instances. Links: the per-user cache and a teacher's couplings folder are gentool's to write in,
so a link inside them is never written through (the couplings: tests/test_distill.py). Then what it left open:
a path the work derives (K06), hard links to the user's files (L24), files refused unread for what they are (L26)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gentool import fileio, folder_cache, links, rundir
from gentool.errors import UsageError
from gentool.progress import Reporter
from test_links_and_pipes import CLI_TINY, LinkFollowingLock, long_dir, one_line, user_file


class Notes(Reporter):
    """A reporter keeping the lines it is given."""

    def __init__(self):
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def image_folder(root: Path) -> Path:
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / label / f"{i}.png")
    return root


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_cache, "CACHE_MIN_BYTES", 0)  # cache even this tiny folder
    return tmp_path / "cache" / "gentool" / "folders"


def elsewhere(tmp_path: Path) -> Path:
    """A folder of the user's, with a file in it, that links will point at."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    (path / "precious.txt").write_text("the user's own words")
    return path


def untouched(path: Path) -> bool:
    return sorted(p.name for p in path.iterdir()) == ["precious.txt"] and \
        (path / "precious.txt").read_text() == "the user's own words"


def test_the_decoded_folder_cache_never_writes_through_a_link(tmp_path, cache):
    """cache/gentool/folders being a link: the images are decoded (not cached), a note names the link, and nothing
    is written where it points (the decoded array, its lock)."""
    data = image_folder(tmp_path / "images")
    target = elsewhere(tmp_path)
    cache.parent.mkdir(parents=True)
    cache.symlink_to(target)
    notes = Notes()
    images = folder_cache.load_folder(data, reporter=notes)
    assert len(images) == 6 and untouched(target)
    assert any("not cached" in line and "symbolic link" in line for line in notes.lines), notes.lines


@pytest.mark.parametrize("kind", ["pipe", "device"])
def test_a_special_file_in_a_decoded_folder_entry_is_set_aside_not_waited_on(tmp_path, cache, kind):
    """The entry's images.npy a named pipe (np.load used to block on it forever) or a link to a device: the entry is
    reported damaged, moved aside, and the folder decoded again."""
    data = image_folder(tmp_path / "images")
    folder_cache.load_folder(data, reporter=Notes())
    entry = next(p for p in cache.iterdir() if p.is_dir())
    (entry / folder_cache.IMAGES).unlink()
    if kind == "pipe":
        os.mkfifo(entry / folder_cache.IMAGES)
        threading.Thread(target=release_after, args=(entry / folder_cache.IMAGES, 3.0), daemon=True).start()
    else:
        (entry / folder_cache.IMAGES).symlink_to("/dev/zero")
    notes = Notes()
    started = time.monotonic()
    images = folder_cache.load_folder(data, reporter=notes)
    assert time.monotonic() - started < 2.5 and len(images) == 6
    assert any("damaged" in line and "not a regular file" in line for line in notes.lines), notes.lines


def release_after(path: Path, seconds: float) -> None:
    """Open the writing end of a pipe after `seconds`: a reader blocked on it is released (and its test fails)."""
    time.sleep(seconds)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


# --- what the attacker left open last stop (K06, L24, L26), each as a class -------------------------------------

def checkpoint(folder: Path, model: str = "flow") -> Path:
    """An untrained checkpoint of `model` for MNIST's geometry, written without training (a test's second)."""
    from gentool.checkpoint import save_checkpoint
    from gentool.data import Geometry
    from gentool.registry import get_model

    cls = get_model(model)
    folder.mkdir(parents=True)
    save_checkpoint(folder / "last.safetensors", cls(cls.config_class.create(Geometry(1, 28, 28, 10), width=0.25)),
                    {}, {"epoch": 1, "step": 1}, {"geometry": {"channels": 1, "height": 28, "width": 28}}, "built-in")
    return folder / "last.safetensors"


def test_k06_distill_checks_the_default_student_folder_before_drawing_couplings(tmp_path, invoke):
    """The student's folder is named after the teacher's (+ '-reflow2'): 258 characters, more than a name may have.
    Refused in one line before a coupling is drawn (it failed after the work, exit 1)."""
    teacher = checkpoint(tmp_path / ("t" * 250)).parent
    result = invoke("distill", teacher, "--pairs", "48", "--teacher-steps", "1", "--precision", "fp32")
    one_line(result, 2, "--out (default", f"{teacher}-reflow2", "not writable")
    assert not (teacher / "couplings").exists() and not os.path.exists(f"{teacher}-reflow2")


def test_k06_a_folder_cache_without_room_for_its_entry_decodes_without_caching(tmp_path, monkeypatch):
    """The entry is built in a temporary folder beside it: its longest path (.ENTRY.XXXXXXXX/.meta.json...tmp) did
    not fit, and the folder was decoded, then the command failed writing it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(long_dir(tmp_path / "c", 4030)))  # the entry's lock still fits
    monkeypatch.setattr(folder_cache, "CACHE_MIN_BYTES", 0)
    notes = Notes()
    assert len(folder_cache.load_folder(image_folder(tmp_path / "images"), reporter=notes)) == 6
    assert any("not cached" in line and "too long" in line for line in notes.lines), notes.lines


SWEEP = ("sweep", "vae", "--data", "mnist-sample", "--limit", "32", "--epochs", "1", "--latent-dim", "2,3")


def test_l24_a_sweep_folder_with_hard_links_to_the_users_file_is_refused_untouched(tmp_path, invoke):
    """The attacker's setup: logs/000.log and 001.log hard links to a file of the user's (a worker would have
    appended its output to it). Refused before anything is locked, read or written there."""
    precious = user_file(tmp_path)
    sweep = tmp_path / "sw"
    (sweep / "logs").mkdir(parents=True)
    for name in ("000.log", "001.log"):
        os.link(precious, sweep / "logs" / name)
    one_line(invoke(*SWEEP, "--workers", "2", "--out", sweep), 2, "--out", str(sweep / "logs" / "00"), "hard link")
    assert precious.read_text() == "the user's own words" and sorted(os.listdir(sweep)) == ["logs"]
    assert all(os.path.samefile(precious, sweep / "logs" / name) for name in ("000.log", "001.log"))


@pytest.mark.parametrize("name", ["config.json", "samples/epoch_0001.png", ".gentool.lock.owner"])
def test_l24_train_overwrite_refuses_a_hard_link_among_the_files_it_replaces(tmp_path, invoke, name):
    precious = user_file(tmp_path)
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    os.link(precious, run / name)
    result = invoke("train", "vae", "--data", "mnist-sample", *CLI_TINY, "--epochs", "1", "--out", run, "--overwrite")
    one_line(result, 2, "--out", str(run / name), "hard link")
    assert precious.read_text() == "the user's own words" and os.path.samefile(precious, run / name)


def test_l24_a_lock_file_that_is_a_hard_link_is_never_truncated(tmp_path, monkeypatch):
    """filelock before 3.10 (allowed by gentool's declared range) opens the lock with O_TRUNC: through a hard link
    that empties the user's file."""
    import filelock

    monkeypatch.setattr(filelock, "FileLock", LinkFollowingLock)
    precious = user_file(tmp_path)
    (tmp_path / "run").mkdir()
    os.link(precious, tmp_path / "run" / rundir.LOCK)
    with pytest.raises(UsageError, match="hard link"):
        rundir.lock_run(tmp_path / "run", "--out")
    assert precious.read_text() == "the user's own words"


def test_l24_sample_and_logs_refuse_hard_links(tmp_path, invoke):
    precious = user_file(tmp_path)
    ckpt = checkpoint(tmp_path / "vae", "vae")
    out = tmp_path / "pngs"
    out.mkdir()
    os.link(precious, out / "000001.png")
    one_line(invoke("sample", ckpt, "--n", "2", "--out", out, "--overwrite"), 2, str(out / "000001.png"), "hard link")
    owned = links.own(tmp_path / "sweep")
    (owned / "logs").mkdir(parents=True)
    os.link(precious, owned / "logs" / "000.log")
    with pytest.raises(links.LinkRefused, match="hard link"):
        fileio.open_append(owned / "logs" / "000.log")  # a worker's log: appended to, so never a hard link
    assert precious.read_text() == "the user's own words"


def test_l26_a_sweep_json_that_is_a_link_is_named_as_a_link(tmp_path, invoke):
    """Reported as "not valid JSON" (exit 1) before: the link's target was read as the sweep's manifest."""
    precious = user_file(tmp_path)
    sweep = tmp_path / "sw"
    sweep.mkdir()
    (sweep / "sweep.json").symlink_to(precious)
    one_line(invoke(*SWEEP, "--out", sweep), 2, str(sweep / "sweep.json"), "symbolic link")
    assert precious.read_text() == "the user's own words"


def test_l26_resume_names_a_run_config_that_is_a_link(tmp_path, invoke):
    precious = user_file(tmp_path)
    run = checkpoint(tmp_path / "run", "vae").parent
    (run / "config.json").symlink_to(precious)
    one_line(invoke("train", "--resume", run, "--epochs", "2"), 2, "config.json", "symbolic link", str(precious))


def test_l26_cache_entries_refused_unread_say_why(tmp_path):
    """A link in the cache, a file too large: set aside (or refused) saying so, not as a parse error."""
    from gentool import precision, schema
    from gentool.metrics.stats import read_cache_entry

    valid = user_file(tmp_path, "valid.json", json.dumps({"format": 1, "entries": {}, "n": 3}))
    (tmp_path / "precision.json").symlink_to(valid)
    with pytest.warns(UserWarning, match="symbolic link"):
        assert precision.read_cache(tmp_path / "precision.json") == {}
    (tmp_path / "stats.npz").write_bytes(b"")
    (tmp_path / "stats.json").symlink_to(valid)
    with pytest.warns(UserWarning, match="symbolic link"):
        assert read_cache_entry(tmp_path / "stats.npz", tmp_path / "stats.json", {"n": 3}, lambda n: {}) is None
    assert valid.is_file() and (tmp_path / "stats.json.bad").is_symlink()
    with pytest.raises(OSError, match="larger than 1,024 bytes"):
        schema.read(user_file(tmp_path, "big.json", json.dumps({"pad": "x" * 2000})), schema.Any(), max_bytes=1024)
    with pytest.raises(OSError, match="larger than 16 bytes"):
        fileio.read_json(valid, 16)


@pytest.mark.parametrize("given", [["--param", "latent_dim=3"], ["--param", "width=1"], ["--param", "lr=0.1"],
                                   ["--param", "batch_size=4"], ["--config", "params.toml"]])
def test_m01_a_param_naming_a_field_with_its_own_option_is_refused_before_the_data(tmp_path, invoke, given):
    """--param latent_dim=3 (or width, lr, batch_size; or a [params] table of a --config file) reached the model's
    config twice: a TypeError traceback. Refused in one line naming the option to use, before any data is read; a
    file's table is named as the file's key (it said --param width, which the user never typed)."""
    (tmp_path / "params.toml").write_text("[params]\nwidth = 1\n")
    given = [str(tmp_path / g) if g.endswith(".toml") else g for g in given]
    result = invoke("train", "vae", "--data", tmp_path / "no-such-folder", *given, "--out", tmp_path / "run")
    name = given[1].split("=")[0] if given[0] == "--param" else "width"
    where = f"--param {name}" if given[0] == "--param" else f"params.width in {given[1]}"
    one_line(result, 2, where, f"--{name.replace('_', '-')}")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("value", "needle"), [
    ('{"widths": [1000000000, 1, 1]}', "widths[0]"), ("[" * 100_000, "characters"), ("[" * 3000, "nested"),
    ('{"nope": 1}', "nope"), ('{"flip": 1}', "flip"), ('{"lr": NaN}', "lr"), ('{"batch_size": 1e9}', "batch_size"),
    ('{"feature_dim": 100000000}', "feature_dim"), ("[1]", "object")])
def test_m02_the_extractor_recipe_variable_is_checked_field_by_field(monkeypatch, value, needle):
    """$GENTOOL_EXTRACTOR_RECIPE went into the recipe unchecked: widths of 10^9 allocated 36 GB, '[' × 100,000 was a
    RecursionError. Every field is checked (known keys, types, bounds), its size and nesting bounded."""
    from gentool.data import Geometry
    from gentool.metrics.extractor import RECIPE_ENV, default_recipe

    monkeypatch.setenv(RECIPE_ENV, value)
    with pytest.raises(UsageError, match=r"^\$GENTOOL_EXTRACTOR_RECIPE: ") as caught:
        default_recipe(Geometry(1, 28, 28, 10))
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_m02_prepare_refuses_a_bad_extractor_recipe_in_one_line(monkeypatch, invoke):
    monkeypatch.setenv("GENTOOL_EXTRACTOR_RECIPE", '{"widths": [1000000000, 1, 1]}')
    one_line(invoke("prepare", "--data", "mnist-sample"), 2, "$GENTOOL_EXTRACTOR_RECIPE", "widths[0]")


def test_m03_an_image_folder_nested_beyond_the_bound_is_refused_without_recursion(tmp_path, invoke):
    """A class folder nested ~1,950 levels deep was a RecursionError in os.walk. Walked with a stack, and folders
    more than 64 levels deep refused in one line naming --data; 64 levels are read (the image at the bottom too)."""
    from gentool.folders import MAX_DEPTH, _walk

    root = image_folder(tmp_path / "imgs")
    deep = root / "a"
    for _ in range(MAX_DEPTH):
        deep = deep / "d"
        deep.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(deep / "x.png")
    assert deep / "x.png" in _walk(root / "a")[0]
    made = []
    try:
        for _ in range(1_200):  # short names keep the path under PATH_MAX
            deep = deep / "d"
            os.mkdir(deep)
            made.append(deep)
        result = invoke("train", "flow", "--data", root, "--image-size", "8", "--epochs", "1", "--width", "0.5",
                        "--out", tmp_path / "run")
        one_line(result, 2, "--data", "more than 64 levels deep")
    finally:  # bottom-up: pytest's own clean-up (shutil.rmtree) recurses once per level and would overflow
        for folder in reversed(made):
            os.rmdir(folder)


@pytest.mark.parametrize("command", [["train"], ["sweep", "--list"]], ids=["train", "sweep"])
@pytest.mark.parametrize("text", ["[params]\n" + ".".join(["a"] * 30_000) + " = 1\n",
                                  "[" + ".".join(["t"] * 40) + "]\nx = 1\n",
                                  "[params]\nx = " + "{a = " * 20 + "1" + "}" * 20 + "\n"],
                         ids=["dotted-key", "table-name", "inline-tables"])
def test_m04_a_settings_file_nested_by_dotted_keys_is_refused_before_parsing(tmp_path, invoke, command, text):
    """A [params] key of 30,000 dotted parts took 5 GB in tomllib and ended in a RecursionError; a [table] name or
    inline tables nesting beyond the bound too. One line naming --config, exit 2."""
    path = tmp_path / "f.toml"
    path.write_text(text)
    one_line(invoke(command[0], "--config", path, *command[1:]), 2, f"--config {path}", "16")


@pytest.mark.parametrize("command", [["export", "--format", "torchscript", "--out", "N.pt"],
                                     ["export", "--format", "onnx", "--out", "N.onnx"],
                                     ["evaluate", "--data", "mnist-sample", "--out", "N.json"],
                                     ["sample", "--out", "N.png"]], ids=["torchscript", "onnx", "evaluate", "sample"])
def test_m05_an_output_name_too_long_is_refused_up_front_in_one_line(tmp_path, invoke, command):
    """`export --out DIR/<252 chars>.pt` failed after the work, exit 1 (its NAME.pt.json too long: the existence
    check raised before the write probe). Refused up front in one line naming --out, exit 2, for every format and
    for the other commands checking their --out the same way (evaluate, sample; names of 255 characters or more)."""
    ckpt = checkpoint(tmp_path / "run")
    suffix = Path(command[-1]).suffix
    out = tmp_path / ("n" * (255 - len(suffix) + (0 if command[0] == "export" else 1)) + suffix)
    result = invoke(command[0], ckpt, *command[1:-1], out)
    one_line(result, 2, "--out", "too long")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def deep_cwd(tmp_path: Path, monkeypatch, length: int = 4075) -> Path:
    """Change into a folder whose absolute path has `length` characters (folders of 250-character names)."""
    monkeypatch.chdir(tmp_path)
    while len(os.getcwd()) < length - 251:
        os.mkdir("d" * 250)
        os.chdir("d" * 250)
    os.mkdir("e" * (length - len(os.getcwd()) - 1))
    os.chdir("e" * (length - len(os.getcwd()) - 1))
    assert len(os.getcwd()) == length
    return Path(os.getcwd())


def test_m06_a_relative_out_whose_absolute_path_is_too_long_is_refused_in_one_line(tmp_path, monkeypatch, invoke):
    """A relative --out run under a working directory of ~4,075 characters: gentool names the run's files by the
    absolute path (> PATH_MAX) and failed with exit 1. Refused in one line naming --out and the absolute length,
    exit 2, with nothing left behind; the probe that every command's write check uses says the same."""
    from gentool.paths import write_probe

    here = deep_cwd(tmp_path, monkeypatch)
    result = invoke("train", "vae", "--data", "mnist-sample", *CLI_TINY, "--epochs", "1", "--out", "run")
    one_line(result, 2, "--out", "absolute path has")
    assert os.listdir(here) == []
    with pytest.raises(OSError, match="absolute path has"):
        write_probe("run", "x" * 40)
