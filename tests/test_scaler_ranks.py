"""Issue 26, class 8: data-parallel training with a gradient scaler. A rank whose scaled gradients overflowed must
not skip the cross-rank average the other ranks wait in: two gloo ranks on the CPU (this process and one child),
an inf injected on one."""

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

from gentool.device import Amp
from gentool.distributed import World, leave
from gentool.guards import GuardState, guard_optimizers
from gentool.models.base import GenerativeModel

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30  # seconds a rank waits in a collective: a hang fails the test instead of blocking it


def run_rank(rank: int) -> str:
    """Two scaled steps on rank `rank` of 2: the first overflows on rank 1 only, the second is finite everywhere."""
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=TIMEOUT))
    try:
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 1)
        amp = Amp(torch.device("cpu"))
        amp.scaler = torch.amp.GradScaler("cpu")  # what fp16 on CUDA uses, on the CPU
        model = SimpleNamespace(amp=amp)
        opt = guard_optimizers({"net": torch.optim.SGD(net.parameters(), lr=0.1)},
                               GuardState(skip=False, world=World(rank, 2)))["net"]
        x = torch.ones(8, 4) * (rank + 1)
        before, scale = [p.detach().clone() for p in net.parameters()], amp.scaler.get_scale()
        loss = net(x).pow(2).mean() * (float("inf") if rank == 1 else 1.0)
        GenerativeModel.optimize(model, loss, opt)  # both ranks must skip this step, and halve the scale, together
        skipped = all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
        halved = amp.scaler.get_scale() == scale / 2
        GenerativeModel.optimize(model, net(x).pow(2).mean(), opt)  # both step with the same averaged gradient
        total = torch.stack([p.detach().double().sum() for p in net.parameters()]).sum().reshape(1)
        low, high = total.clone(), total.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        moved = not all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
        dist.barrier()  # as gentool's training does: the ranks leave together, or gloo may abort the later one
        return f"skipped={skipped} halved={halved} moved={moved} same={bool(torch.equal(low, high))}"
    finally:
        leave(World(rank, 2))  # gentool's own way out (it waits for gloo's threads; see distributed.leave)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_that_overflows_skips_with_the_others_instead_of_leaving_them_waiting(monkeypatch):
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_scaler_ranks as t; " \
           f"print(t.run_rank(1))"
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT),
                             "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        mine = run_rank(0)  # raises after TIMEOUT seconds if rank 1 skipped a collective
        out, err = child.communicate(timeout=TIMEOUT + 60)
    finally:
        if child.poll() is None:
            child.kill()
    expected = "skipped=True halved=True moved=True same=True"
    assert mine == expected
    assert child.returncode == 0 and out.strip() == expected, err[-1500:]
