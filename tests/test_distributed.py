"""Data-parallel training with torchrun: two CPU processes (gloo) on tiny data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from gentool.checkpoint import load_checkpoint
from gentool.data import batches

ROOT = Path(__file__).resolve().parents[1]


def test_ranks_take_disjoint_equal_shards_of_the_seeded_permutation():
    whole = torch.cat(batches(103, 8, seed=5, epoch=2, device=torch.device("cpu")))
    shards = [torch.cat(batches(103, 8, seed=5, epoch=2, device=torch.device("cpu"), rank=r, world=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 51
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert torch.equal(torch.stack(shards, dim=1).flatten(), whole[:102])  # rank r takes every second index from r


def torchrun(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gentool",
           *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_torchrun_two_processes_train_resume_and_rank0_writes(mnist_root, tmp_path):
    common = ["--data-dir", mnist_root, "--json", "-q"]
    first = torchrun("train", "wgan-gp", "--data", "mnist", "--limit", "128", "--batch-size", "16", "--epochs", "2",
                     "--out", "run", "--ema", "0.9", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    outputs = [line for line in first.stdout.splitlines() if line.startswith("{")]
    assert len(outputs) == 1  # rank 0 alone prints
    result = json.loads(first.stdout[first.stdout.index("{"):])
    # 128 images, 2 ranks × 16 per step → 4 steps per epoch
    assert (result["world_size"], result["step"], result["epochs"]) == (2, 8, 2)
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    assert not list(run.glob("*.tmp*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2]
    before = load_checkpoint(run / "last.safetensors", weights="raw")
    resumed = torchrun("train", "wgan-gp", "--resume", "run", "--epochs", "3", *common, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = load_checkpoint(run / "last.safetensors", weights="raw")
    assert (after.state["epoch"], after.state["step"]) == (3, 12)
    assert after.ema_meta["updates"] == 12
    changed = [k for k, v in after.model.state_dict().items() if not torch.equal(v, before.model.state_dict()[k])]
    assert changed


def test_torchrun_trains_an_iterative_family(mnist_root, tmp_path):
    """flow draws its training noise and times from each rank's own stream; the ranks still end every epoch with the
    same weights (checked by the loop) and rank 0 writes the EMA the family keeps by default."""
    result = torchrun("train", "flow", "--data", "mnist", "--limit", "64", "--batch-size", "16", "--epochs", "1",
                      "--width", "0.25", "--steps", "2", "--out", "run", "--data-dir", mnist_root, "--json", "-q",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout[result.stdout.index("{"):])["world_size"] == 2
    ckpt = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert ckpt.weights == "ema" and ckpt.ema_meta["updates"] == 2
