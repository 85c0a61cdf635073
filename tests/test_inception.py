"""evaluate --extractor inception-v3 with a stand-in weights file: a state dict with the keys and shapes of
torch-fidelity's FID Inception weights, random values, saved with torch.save as the released file is. The metrics are
walked with the installed `gentool` (no terminal); the refusals run the same command in-process (each subprocess
would add seconds of start-up, and the refusal, not the process, is under test)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from gentool.data import load_dataset
from test_journeys import ENV, gentool

fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3",
                               reason="torch-fidelity is the optional extra gentool[inception]")


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    """Random weights with the real file's keys and shapes (He-like scale, BatchNorm statistics 0 and 1)."""
    with mock.patch.object(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None), \
            mock.patch.object(fidelity, "load_state_dict_from_url", lambda *args, **kwargs: {}):  # nothing to fetch
        skeleton = fidelity.FeatureExtractorInceptionV3("skeleton", ["2048"]).state_dict()
    generator, state = torch.Generator().manual_seed(0), {}
    for name, value in skeleton.items():
        if name.endswith("running_var"):
            state[name] = torch.ones_like(value)
        elif name.endswith(("running_mean", ".bias")):
            state[name] = torch.zeros_like(value)
        elif value.is_floating_point():
            state[name] = torch.randn(value.shape, generator=generator) * (1.8 / value[0].numel()) ** 0.5
        else:
            state[name] = value
    path = tmp_path_factory.mktemp("weights") / "weights-inception-standin.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A labelled image folder with train/ and test/ halves (12 real digits each), and .npz files of generated
    images: the train half itself, and other digits."""
    root = tmp_path_factory.mktemp("tiny")
    digits = load_dataset("mnist-sample", None, train=True)
    for split, start in (("train", 0), ("test", 100)):
        for i in range(start, start + 12):
            folder = root / "digits" / split / str(int(digits.labels[i]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(digits.images[i, 0].numpy()).save(folder / f"{i}.png")
    train = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "digits/train").rglob("*.png"))])
    np.savez(root / "same.npz", images=train[..., None])
    np.savez(root / "other.npz", images=digits.images[300:312].permute(0, 2, 3, 1).numpy())
    return root


def evaluate(root: Path, *args) -> tuple:
    env = {**ENV, "XDG_CACHE_HOME": str(root / "cache")}  # the real features' cache stays in the test's folder
    return gentool("evaluate", *args, "--data", "digits/train", cwd=root, env=env, timeout=600)


def test_inception_metrics_with_standin_weights(standin, tiny):
    result = evaluate(tiny, "other.npz", "--extractor", "inception-v3", "--extractor-weights", standin, "--json")
    assert result.returncode == 0, result.stderr
    other = json.loads(result.stdout)
    extractor = other["extractor"]
    assert extractor["id"] == "inception-v3" and extractor["weights"] == str(standin)
    assert extractor["weights_sha256"] == hashlib.sha256(standin.read_bytes()).hexdigest()
    assert extractor["released_weights"] is False and extractor["feature_dim"] == 2048
    assert other["split"] == "train" and other["n"] == other["n_real"] == 12
    assert set(other["metrics"]) == {"fid", "kid_mean", "kid_std", "kid_subset_size", "is_mean", "is_std"}
    assert all(np.isfinite(v) for v in other["metrics"].values())
    assert any("not torch-fidelity's released" in note for note in other["notes"])
    assert "computing inception-v3 features" in result.stderr

    # the real train images scored as generated ones: the same features, so FID ~0, far below other digits'; the
    # real features computed again (cache removed) without a word on stderr under --quiet
    shutil.rmtree(tiny / "cache")
    same = evaluate(tiny, "same.npz", "--extractor", "inception-v3", "--extractor-weights", standin, "--json",
                    "--quiet")
    assert same.returncode == 0, same.stderr
    assert same.stderr == ""
    fid_same = json.loads(same.stdout)["metrics"]["fid"]
    assert abs(fid_same) < 1e-3 * other["metrics"]["fid"]


def one_line_refusal(result, *parts: str) -> None:
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    for part in parts:
        assert part in result.stderr


def test_wrong_weights_files_are_refused(standin, tiny, invoke, monkeypatch):
    monkeypatch.chdir(tiny)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tiny / "cache"))

    def evaluate(_root, *args):  # the command of the metrics' test above, in this process
        return invoke("evaluate", *args, "--data", "digits/train")

    state = torch.load(standin, weights_only=True)
    state["fc.weight"] = state["fc.weight"][:10]
    torch.save(state, tiny / "wrong-shape.pth")
    del state["fc.bias"]
    torch.save(state, tiny / "missing-key.pth")
    torch.save({"fc.weight": mock.sentinel}, tiny / "pickle.pth")  # a pickle of something that is not a tensor
    (tiny / "notes.txt").write_text("not weights\n")
    cases = {"wrong-shape.pth": "size mismatch for fc.weight", "missing-key.pth": 'Missing key(s) in state_dict: "fc.bias"',
             "pickle.pth": "is not a PyTorch weights file holding tensors only",
             "notes.txt": "is not a PyTorch weights file holding tensors only", "nowhere.pth": "does not exist"}
    for name, message in cases.items():
        result = evaluate(tiny, "other.npz", "--extractor", "inception-v3", "--extractor-weights", name)
        one_line_refusal(result, f"--extractor-weights: {name}" if name != "wrong-shape.pth" and
                         name != "missing-key.pth" else "is not the FID Inception-v3 weights", message)
    missing = evaluate(tiny, "other.npz", "--extractor", "inception-v3")
    one_line_refusal(missing, "--extractor-weights: missing")
    unknown = evaluate(tiny, "other.npz", "--extractor", "inception-v3", "--extractor-weights", standin,
                       "--metrics", "fid,pr")
    one_line_refusal(unknown, "--metrics: got 'pr'; expected all or a comma-separated list of fid, kid, is")
