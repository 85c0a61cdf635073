"""--threads on the commands that compute besides train and sweep (sample, evaluate, prepare): a batch job on a
shared node bounds its CPU threads on each, and a bad count is one line and exit 2 before any work."""

from __future__ import annotations

import pytest
import torch

from gentool.sample_options import SampleOptions
from gentool.sampling import sample
from gentool.train import train
from gentool.train_options import TrainOptions
from test_cli_evaluate import Lines


def test_sample_computes_on_the_threads_asked_for(tmp_path, mnist_root):
    run = train(TrainOptions(model="vae", data="mnist", data_dir=str(mnist_root), epochs=1, limit=64, batch_size=32,
                             out=str(tmp_path / "run"), sample_every=0))
    seen = []
    real = torch.set_num_threads
    torch.set_num_threads = lambda n: (seen.append(n), real(n))
    lines = Lines()
    try:
        sample(SampleOptions(checkpoint=run["checkpoints"]["last"], n=40, out=str(tmp_path / "s.npz"), threads=1,
                             device="cpu"), lines)
    finally:
        torch.set_num_threads = real
    assert seen == [1] and (tmp_path / "s.npz").is_file()
    # walk w11: `sample --n 600` printed nothing while it drew (a 16-step sampler takes minutes for thousands)
    # (then lines as batches are drawn, at the reporter's pace, and how it ended: tests/test_cli_evaluate.py)
    assert lines.lines[0] == f"drawing 40 samples into {tmp_path / 's.npz'}" and len(lines.lines) == 2
    assert lines.lines[1].startswith("drew 40 samples in ")



@pytest.mark.parametrize("command", [["sample", "x.safetensors"], ["evaluate", "x.npz"],
                                     ["prepare", "--data", "mnist"]])
def test_a_bad_thread_count_is_one_line(invoke, command):
    result = invoke(*command, "--threads", "0")
    assert result.exit_code == 2 and "--threads" in result.output and "Traceback" not in result.output


def test_a_cgroup_cpu_quota_bounds_the_default_threads(tmp_path):
    """A container or batch job limited by a CPU quota (not an affinity mask) sees every core of the node; torch
    started one thread per core on a fraction of one's time. cgroup v2 (the tightest along the ancestors, rounded
    up) and v1 (its cpu controller mounted with cpuacct), and no quota."""
    from gentool.load import quota_cores

    v2 = tmp_path / "v2"
    (v2 / "job" / "step").mkdir(parents=True)
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "job" / "cpu.max").write_text("250000 100000\n")
    (v2 / "job" / "step" / "cpu.max").write_text("max 100000\n")
    v1 = tmp_path / "v 1"  # a space: mountinfo writes it \040
    (v1 / "batch").mkdir(parents=True)
    (v1 / "batch" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "batch" / "cpu.cfs_period_us").write_text("100000\n")
    mounts = tmp_path / "mountinfo"
    mounts.write_text(f"30 1 0:26 / {v2} rw shared:4 - cgroup2 cgroup2 rw\n"
                      f"31 1 0:27 / {str(v1).replace(' ', chr(92) + '040')} rw - cgroup cgroup rw,cpu,cpuacct\n")
    groups = tmp_path / "cgroup"
    groups.write_text("0::/job/step\n")
    assert quota_cores(str(mounts), str(groups)) == 3
    groups.write_text("2:cpu,cpuacct:/batch\n1:memory:/x\n")
    assert quota_cores(str(mounts), str(groups)) == 1
    groups.write_text("0::/\n")
    assert quota_cores(str(mounts), str(groups)) is None
    assert quota_cores(str(tmp_path / "absent"), str(groups)) is None
