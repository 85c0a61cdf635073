"""An output path where a device, a named pipe or a socket stands is refused before any work, with or without
--overwrite (attacker hour 14: `evaluate --out /dev/full --overwrite` renamed a JSON file over the machine's
/dev/full; sample, report and export did the same), and every atomic write refuses one too."""

import os
import stat

import pytest
from typer.testing import CliRunner

from gentool.cli.app import app
from gentool.errors import UsageError
from gentool.fileio import atomic_write_bytes


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "vae"
    result = run("train", "vae", "--data", "mnist-sample", "--limit", "64", "--batch-size", "32", "--epochs", "1",
                 "--out", out, "--threads", "1", "-q")
    assert result.exit_code == 0, result.output
    return out


def special(path, kind):
    if kind == "named pipe":
        os.mkfifo(path)
    else:
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null
        except PermissionError:
            pytest.skip("making a device node needs root")
    return path


@pytest.mark.parametrize("kind", ["named pipe", "character device"])
@pytest.mark.parametrize("command", ["sample grid", "sample npz", "evaluate", "report", "export"])
def test_an_output_that_is_no_regular_file_is_refused_and_kept(ckpt, tmp_path, kind, command):
    name = {"sample grid": "g.png", "sample npz": "s.npz", "evaluate": "e.json", "report": "r.html",
            "export": "x.pt"}[command]
    out = special(tmp_path / name, kind)
    args = {"sample grid": ("sample", ckpt / "last.safetensors", "--grid", "2x2"),
            "sample npz": ("sample", ckpt / "last.safetensors", "--n", "4"),
            "evaluate": ("evaluate", ckpt / "last.safetensors", "--data", "mnist-sample", "--n", "16"),
            "report": ("report", ckpt),
            "export": ("export", ckpt / "last.safetensors", "--format", "torchscript")}[command]
    for overwrite in ((), ("--overwrite",)):
        result = run(*args, "--out", out, *overwrite)
        assert result.exit_code == 2, result.output
        assert f"--out: {out} is a {kind}, not a regular file" in result.output
        assert "pass --overwrite" not in result.output
        mode = os.lstat(out).st_mode
        assert stat.S_ISFIFO(mode) if kind == "named pipe" else stat.S_ISCHR(mode)


def test_an_atomic_write_over_a_named_pipe_is_refused(tmp_path):
    pipe = special(tmp_path / "metrics.json", "named pipe")
    with pytest.raises(UsageError, match="is a named pipe, not a regular file; gentool replaces only regular files"):
        atomic_write_bytes(pipe, b"{}")
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)


@pytest.mark.parametrize("errno_name, code", [("ENOSPC", 1), ("EROFS", 1), ("EACCES", 2)])
def test_a_run_directory_that_cannot_be_made_on_a_full_disk_is_exit_1(tmp_path, monkeypatch, errno_name, code):
    """An inode-full disk passed the free-space check and its mkdir failed with ENOSPC: exit 2 (a usage error) where
    every other full-disk refusal is 1; a read-only disk is the machine's state too."""
    import errno
    from pathlib import Path

    def refuse(self, *args, **kwargs):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))

    monkeypatch.setattr(Path, "mkdir", refuse)
    result = run("train", "vae", "--data", "mnist-sample", "--epochs", "1", "--out", tmp_path / "new" / "run")
    assert result.exit_code == code, result.output
    assert "--out: cannot create run directory" in result.output


@pytest.mark.parametrize("kind", ["named pipe", "link to a device", "dangling link"])
def test_a_folder_of_samples_with_a_file_that_is_no_image_is_one_line(ckpt, tmp_path, kind):
    """Attacker hour 14: a pipe, a link to /dev/zero and a dangling link named like PNGs were left out of an
    evaluate without a word; a text file was refused naming "<_io.BufferedReader name=3>"."""
    folder = tmp_path / "pngs"
    assert run("sample", ckpt / "last.safetensors", "--n", "12", "--out", f"{folder}/").exit_code == 0
    odd = folder / "000099.png"
    {"named pipe": lambda: os.mkfifo(odd), "link to a device": lambda: odd.symlink_to("/dev/zero"),
     "dangling link": lambda: odd.symlink_to(tmp_path / "gone")}[kind]()
    result = run("evaluate", folder, "--data", "mnist-sample", "--metrics", "fid")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "000099.png" in lines[0] and "BufferedReader" not in lines[0], result.output


def test_a_file_that_is_no_image_is_said_so_without_pils_file_object(tmp_path):
    from gentool.images import ImageError, open_image

    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(ImageError, match=r"^cannot be decoded \(its bytes are in no image format Pillow reads\)$"):
        open_image(tmp_path / "x.png")


def test_a_pipe_among_a_samples_folders_pngs_is_refused_before_drawing_and_nothing_is_lost(ckpt, tmp_path):
    """Attacker pass 15, F1: `sample --out DIR/ --overwrite` drew, replaced the user's 000000.png, met the pipe at
    000001.png and removed what it wrote: the user's file gone, exit 1."""
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / "000000.png").write_text("the user's")
    special(folder / "000001.png", "named pipe")
    for overwrite in ((), ("--overwrite",)):
        result = run("sample", ckpt / "last.safetensors", "--n", "3", "--out", f"{folder}/", *overwrite)
        assert result.exit_code == 2 and "000001.png is a named pipe" in result.output, result.output
        assert "pass --overwrite" not in result.output
    assert (folder / "000000.png").read_text() == "the user's"


@pytest.mark.parametrize("name", ["last.safetensors", "metrics.json", "samples/epoch_0004.png"])
def test_a_special_file_in_a_run_is_refused_at_the_start_on_overwrite_and_resume(ckpt, tmp_path, name):
    """Attacker pass 15, F2/F3: --overwrite deleted a device or pipe in the run; on --resume a pipe at a later
    epoch's grid stopped the run after training to it, exit 2, no resume line."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(ckpt, run_dir)
    target = run_dir / name
    if name == "samples/epoch_0004.png":
        special(target, "named pipe")
        result = run("train", "--resume", run_dir, "--epochs", "5", "--threads", "1")
    else:
        target.unlink()
        special(target, "named pipe")
        result = run("train", "vae", "--data", "mnist-sample", "--limit", "64", "--epochs", "1", "--out", run_dir,
                     "--overwrite", "--threads", "1")
    assert result.exit_code == 2 and f"{name} is a named pipe, not a regular file" in result.output, result.output
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert "epoch 2/" not in result.output  # refused before any training
