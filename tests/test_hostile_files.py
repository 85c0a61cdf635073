"""Hostile checkpoint files: every field gentool reads is checked before use, sizes are compared with the header on
the meta device before anything is built, non-finite weights are refused, and optimizer state is read only when a
run resumes. Each class is tried with several instances; every refusal is one line naming the file and the field."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gentool.checkpoint import load_checkpoint
from gentool.errors import GentoolError
from gentool.train import TrainOptions, train

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A real checkpoint of a small VAE after a few optimizer steps (so it holds optimizer state)."""
    run = tmp_path_factory.mktemp("hostile") / "run"
    train(TrainOptions(model="vae", data="mnist-sample", limit=64, epochs=1, width=0.25, out=str(run),
                       sample_every=0, checkpoint_every=0, threads=1))
    return run / "last.safetensors"


def contents(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def forged(src: Path, dst: Path, tensors: dict | None = None, **meta) -> Path:
    """A copy of `src` with some metadata entries replaced and some tensors replaced, added or (None) removed."""
    old_meta, old_tensors = contents(src)
    new = {**old_tensors, **(tensors or {})}
    save_file({k: v for k, v in new.items() if v is not None}, dst, metadata={**old_meta, **meta})
    return dst


def one_line_refusal(result, *needles):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def meta_json(path: Path, key: str) -> dict:
    return json.loads(contents(path)[0][key])


@pytest.mark.parametrize("field, text", [
    ("config", DEEP),
    ("state", '{"epoch": 1, "step": 1, "partial": ' + DEEP + "}"),
    ("data", '{"a":' * 50_000 + "1" + "}" * 50_000),
    ("ema", DEEP),
    ("config", "[" * 17 + "]" * 17),  # within the json module's limit, beyond gentool's
])
def test_deeply_nested_metadata_is_refused(ckpt, tmp_path, invoke, field, text):
    bad = forged(ckpt, tmp_path / "nested.safetensors", **{field: text})
    one_line_refusal(invoke("sample", bad, "--out", tmp_path / "g.png"), str(bad), f"field {field}", "nested")


@pytest.mark.parametrize("field, value, needle", [
    ("data", '{"geometry": 5}', "data.geometry"),
    ("data", '{"geometry": {"channels": 1, "height": 28, "width": 28}, "class_names": [1, 2]}', "data.class_names[0]"),
    ("data", '{"geometry": {"channels": 3, "height": 32, "width": 32}}', "data.geometry"),  # not the config's
    ("state", '{"epoch": -1, "step": 0}', "state.epoch"),
    ("state", '{"epoch": 1, "step": 1, "options": [1]}', "state.options"),
    ("state", '{"epoch": 1, "step": 1, "partial": {"sums": {"loss": "x"}}}', "state.partial.sums.loss"),
    ("state", '{"epoch": 1, "step": 1, "seed": 1e400}', "state"),
    ("ema", '{"decay": 0.5}', "ema.updates"),
    ("ema", '{"decay": 1.5, "updates": 1}', "ema.decay"),
    ("format_version", "1x", "format_version"),
    ("config", '{"latent_dim": "five"}', "config.latent_dim"),
    ("config", '{"beta1": 1.5}', "config.beta1"),
    ("config", '{"num_classes": 1000000}', "config.num_classes"),
])
def test_every_metadata_field_is_checked(ckpt, tmp_path, invoke, field, value, needle):
    if field == "config":  # change one field of the real config
        value = json.dumps({**meta_json(ckpt, "config"), **json.loads(value)})
    bad = forged(ckpt, tmp_path / "bad.safetensors", **{field: value})
    one_line_refusal(invoke("sample", bad, "--out", tmp_path / "g.png"), str(bad), needle)


@pytest.mark.parametrize("meta, tensors, needle", [
    ({"optimizers": '{"vae": 5}'}, {}, "optimizers.vae"),
    ({"optimizers": "[1, 2]"}, {}, "optimizers"),
    ({"optimizers": '{"vae": {"param_groups": "x"}}'}, {}, "optimizers.vae.param_groups"),
    ({"optimizers": '{"vae": {"param_groups": [{"params": [0]}]}}'}, {}, "param_groups"),
    ({"optimizers": DEEP}, {}, "nested"),
    ({}, {"optim.vae.nonsense": torch.zeros(1)}, "optim.vae.nonsense"),
    ({}, {"optim.vae.x.exp_avg": torch.zeros(1)}, "optim.vae.x.exp_avg"),
    ({}, {"optim.vae.99999.exp_avg": torch.zeros(1)}, "optim.vae.99999.exp_avg"),
    ({}, {"optim.ghost.0.exp_avg": torch.zeros(1)}, "optim.ghost.0.exp_avg"),
    ({}, {"optim.vae.0.exp_avg": torch.zeros(3, 3)}, "shape"),
    ({}, {"optim.vae.0.exp_avg": None}, "parameter 0"),  # an incomplete Adam state
    ({}, {"optim.vae.0.exp_avg_sq": "nan"}, "NaN"),
    ({}, {"rng.torch": torch.zeros(7, dtype=torch.uint8)}, "rng.torch"),
])
def test_optimizer_and_rng_state_only_matter_to_resume(ckpt, tmp_path, invoke, meta, tensors, needle):
    """sample never reads optimizer or RNG state, so it works; a resume checks all of it and refuses in one line."""
    _, saved = contents(ckpt)
    tensors = {k: (torch.full_like(saved[k], float("nan")) if v == "nan" else v) for k, v in tensors.items()}
    run = tmp_path / "run"
    run.mkdir()
    bad = forged(ckpt, run / "last.safetensors", tensors, **meta)
    assert invoke("sample", bad, "--out", tmp_path / "g.png").exit_code == 0
    one_line_refusal(invoke("train", "vae", "--resume", run, "--epochs", "2", "-q"), str(bad), needle)


def test_a_sound_checkpoint_still_resumes(ckpt, tmp_path, invoke):
    run = tmp_path / "run"
    shutil.copytree(ckpt.parent, run)
    result = invoke("train", "vae", "--resume", run, "--epochs", "2", "-q")
    assert result.exit_code == 0, result.stderr
    assert load_checkpoint(run / "last.safetensors").state["epoch"] == 2


@pytest.mark.parametrize("target", ["model.decoder.0.weight", "model.encoder.mean.bias", "ema.decoder.0.weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(ckpt, tmp_path, invoke, target, value):
    _, saved = contents(ckpt)
    extra = {}
    if target.startswith("ema."):  # give the checkpoint an EMA whose average went bad
        extra = {f"ema.{k[len('model.'):]}": v.clone() for k, v in saved.items() if k.startswith("model.decoder.")}
    source = f"model.{target[4:]}" if target.startswith("ema.") else target
    bad_tensor = saved[source].clone()
    bad_tensor.view(-1)[3] = value
    meta = {"ema": '{"decay": 0.99, "updates": 3}'} if extra else {}
    bad = forged(ckpt, tmp_path / "nan.safetensors", {**extra, target: bad_tensor}, **meta)
    one_line_refusal(invoke("sample", bad, "--out", tmp_path / "g.png"), str(bad), target, "NaN or infinite")
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("change, needle", [
    ({"latent_dim": 4000}, "shape"),
    ({"width": 64.0}, "shape"),
    ({"width": 40.0, "latent_dim": 4096}, "shape"),
    ({"latent_dim": 1_000_000}, "config.latent_dim"),
])
def test_config_sizes_are_checked_before_anything_is_built(ckpt, tmp_path, change, needle):
    """Refused within an address-space limit of 3 GiB above what torch itself maps, where building the network
    the config describes (up to 9 GB) would fail: the header's shapes are compared on the meta device first."""
    bad = forged(ckpt, tmp_path / "big.safetensors", config=json.dumps({**meta_json(ckpt, "config"), **change}))
    script = f"""
import resource, sys, torch
from gentool.checkpoint import load_checkpoint
from gentool.errors import GentoolError
usage = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (usage + (3 << 30), resource.RLIM_INFINITY))
try:
    load_checkpoint({str(bad)!r})
except GentoolError as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and needle in result.stdout and str(bad) in result.stdout, result.stderr[-2000:]


def test_tensor_dtypes_and_stray_names_are_checked(ckpt, tmp_path):
    _, saved = contents(ckpt)
    doubled = forged(ckpt, tmp_path / "f64.safetensors", {"model.decoder.0.weight": saved["model.decoder.0.weight"].double()})
    with pytest.raises(GentoolError, match="model.decoder.0.weight is F64"):
        load_checkpoint(doubled)
    extra = forged(ckpt, tmp_path / "extra.safetensors", {"model.decoder.99.weight": torch.zeros(2)})
    with pytest.raises(GentoolError, match="unexpected"):
        load_checkpoint(extra)
