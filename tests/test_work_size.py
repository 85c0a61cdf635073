"""Issue 26, class 4 (parameters): a model's size is counted on the meta device, without allocating a weight, and a
model beyond the stated bound is refused in one line before any is allocated, by `summary` and `train` alike."""

import resource

import pytest

from gentool.data import peek_geometry
from gentool.registry import get_entry
from gentool.summary import MAX_PARAMETERS, count_parameters


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@pytest.mark.parametrize("args", [
    ["summary", "mlp-wgan-gp", "--width", "64"],  # about 13 GiB of fp32 weights
    ["summary", "vae", "--width", "64"],
    ["summary", "wgan", "--width", "40"],
])
def test_summary_refuses_a_huge_model_without_allocating_it(invoke, args):
    before = _peak_mib()
    result = invoke(*args)
    assert result.exit_code == 2 and "parameters" in result.stderr and f"{MAX_PARAMETERS:,}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _peak_mib() - before < 1024  # the weights were never allocated


def test_train_refuses_a_huge_model_before_its_run_directory_exists(invoke, tmp_path):
    before = _peak_mib()
    result = invoke("train", "gan", "--data", "mnist-sample", "--width", "64", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "parameters" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists() and _peak_mib() - before < 1024


@pytest.mark.parametrize("model", ["vae", "flow"])
def test_the_meta_count_is_the_real_count(model):
    cls = get_entry(model).cls
    config = cls.config_class.create(peek_geometry("mnist"), None, 0.25)
    real = cls(config)
    counted = sum(t.numel() for t in [*real.parameters(), *real.buffers()] if t.is_floating_point())
    assert count_parameters(cls, config) == counted
