"""Data-parallel training across processes started by torchrun (gloo on CPU, nccl on CUDA).

Every rank holds the whole model, trains on its shard of each epoch's seeded permutation and averages gradients
with the others before every optimizer step, which is what DistributedDataParallel does. gentool averages them in
its guarded optimizer step instead of wrapping each network in the DDP module because its models run several
forward passes per step (real, fake, and the generator's pass through the discriminator) and WGAN-GP
differentiates the critic twice, two patterns the DDP wrapper does not support. Rank 0 alone writes files.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from gentool.errors import GentoolError, bad_value
from gentool.stops import said_if_slow


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Whether this rank writes files and reports progress."""
        return self.rank == 0


SINGLE = World()


def join(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK in the environment) and return this
    rank's place and device; without torchrun, the single-process world and `device` unchanged."""
    world = world_from_env(os.environ)
    if not world.enabled:
        return SINGLE, device
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
        device = torch.device("cuda", world.local_rank)
    if not dist.is_initialized():
        # Rank 0 alone evaluates and draws figures between epochs (training a reference extractor the first time can
        # take long), while the others wait in the next collective: give them time.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=3),
                                store=meet(world, os.environ), rank=world.rank, world_size=world.size)
    return world, device


RENDEZVOUS_SECONDS = 600.0  # how long the ranks wait for each other at MASTER_ADDR:MASTER_PORT before giving up
NOTICE_SECONDS = 5.0  # a wait longer than this is said on stderr


def meet(world: World, environ) -> dist.Store:
    """The ranks' meeting point (rank 0 holds it, the others connect), within RENDEZVOUS_SECONDS: torch's own waits
    three hours (the process group's timeout) without a word when MASTER_ADDR does not resolve or rank 0 never
    starts. A wait past NOTICE_SECONDS is said on stderr; the end of one is one line naming MASTER_ADDR/MASTER_PORT."""
    addr, port = environ["MASTER_ADDR"].strip(), int(environ["MASTER_PORT"])
    whom = (f"rank 0 at {addr}:{port}" if world.rank
            else f"the other {world.size - 1} rank(s) to connect to {addr}:{port}")
    try:
        with said_if_slow(f"gentool: waiting for {whom} (rank {world.rank}, WORLD_SIZE={world.size}; up to "
                          f"{RENDEZVOUS_SECONDS:g} s)…", NOTICE_SECONDS):
            store = dist.TCPStore(addr, port, world.size, world.rank == 0,
                                  timeout=timedelta(seconds=RENDEZVOUS_SECONDS))
    except Exception as exc:  # noqa: BLE001 - torch's DistNetworkError, DistStoreError, RuntimeError alike
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise GentoolError(f"rank {world.rank} of WORLD_SIZE={world.size} could not meet the others at "
                           f"MASTER_ADDR={addr} MASTER_PORT={port} within {RENDEZVOUS_SECONDS:g} s ({first}): check "
                           f"that rank 0 runs and every rank can reach that address") from None
    store.set_timeout(timedelta(hours=3))  # later waits (rank 0 evaluating between epochs) keep the group's timeout
    return store


MAX_RANKS = 1 << 16


def world_from_env(environ) -> World:
    """This process's place as torchrun's variables give it (WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE), each
    checked: a WORLD_SIZE above 1 needs a RANK below it (a launcher that set one and not the other is refused
    before any work, not in the middle of joining)."""
    def number(name: str, default: int | None, high: int, low: int = 0) -> int:
        text = environ.get(name)
        if text is None and default is not None:
            return default
        if text is None or not re.fullmatch(r"[0-9]{1,6}", text.strip()) or not low <= int(text) <= high:
            what = "set (torchrun sets it with WORLD_SIZE)" if text is None else f"an integer from {low} to {high}"
            raise bad_value(name, text, f"{what}; WORLD_SIZE={environ.get('WORLD_SIZE')!r}")
        return int(text)

    size = number("WORLD_SIZE", 1, MAX_RANKS, low=1)
    # One process: what is set beside it must say so too (RANK=5 or LOCAL_RANK=abc of 1 is a launcher's mistake);
    # the same checks as for many, each variable only when set.
    local_size = number("LOCAL_WORLD_SIZE", size, size, low=1)
    local_rank = number("LOCAL_RANK", 0, local_size - 1)
    if size == 1:
        if environ.get("RANK") is not None:
            number("RANK", None, 0)
        return SINGLE
    world = World(number("RANK", None, size - 1), size, local_rank, local_size)
    rendezvous(environ)
    return world


def rendezvous(environ) -> None:
    """The ranks meet where MASTER_ADDR and MASTER_PORT say (torchrun sets both): checked before any work, since
    init_process_group would otherwise fail with a traceback in the middle of starting."""
    where = f"(torchrun sets it with WORLD_SIZE; WORLD_SIZE={environ.get('WORLD_SIZE')!r})"
    addr = environ.get("MASTER_ADDR", "")  # a host name has at most 253 characters (RFC 1035)
    if not addr.strip() or "\0" in addr or len(addr) > 253 or not addr.isascii():
        raise bad_value("MASTER_ADDR", environ.get("MASTER_ADDR"), f"a host name or address {where}")
    port = environ.get("MASTER_PORT")
    if port is None or not re.fullmatch(r"[0-9]{1,5}", port.strip()) or not 0 < int(port) < 65536:
        raise bad_value("MASTER_PORT", port, f"a port from 1 to 65535 {where}")
    try:  # an address no rank can reach (256.1.1.1, a misspelt host) waited the whole rendezvous, then dumped C++
        socket.getaddrinfo(addr.strip(), int(port), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise bad_value("MASTER_ADDR", addr, f"a host name this machine resolves, or an IP address ({exc})") from None


# How long a leaving rank lets gloo's worker threads finish with the last collectives (see leave).
SETTLE_SECONDS = 0.5


def leave(world: World) -> None:
    """Leave the process group (after the last collective), then wait a moment before the interpreter may shut down.

    Why wait: gloo's worker threads release a finished collective's tensors a little after the rank has gone on, and
    releasing a tensor Python no longer holds takes the GIL. If that lands while Python is shutting down, the thread
    is ended mid-release and the process aborts ("terminate called without an active exception", exit 134) after
    the run was saved: 1 exit in 5 of a two-rank test on 2 busy cores (pytorch/pytorch#179291 describes the
    same race). Sleeping releases the GIL and gives those threads the CPU; torch offers no call that waits for them."""
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(SETTLE_SECONDS)


def average_gradients(params: list[torch.Tensor], world: World) -> None:
    """Replace each gradient with its mean over the ranks (one flat all-reduce for all of them)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not world.enabled or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world.size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def max_over_ranks(value: int, world: World, device: torch.device) -> int:
    """The largest of the ranks' `value`s (how ranks agree to stop at the same step, and why)."""
    if not world.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def average_values(values: dict[str, float], world: World, device: torch.device) -> dict[str, float]:
    """The mean of each value over the ranks (every rank passes the same keys)."""
    if not world.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / world.size for k, v in zip(keys, t.tolist())}


def sync_state(model: torch.nn.Module, world: World) -> None:
    """Start every rank from rank 0's weights and buffers."""
    if world.enabled:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)


def average_buffers(model: torch.nn.Module, world: World) -> None:
    """Average floating-point buffers (BatchNorm running statistics), which each rank updates from its own shard."""
    if not world.enabled:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(world.size)


def check_in_sync(model: torch.nn.Module, world: World) -> None:
    """Fail loudly if the ranks' weights differ (they must be identical after every averaged step)."""
    if not world.enabled:
        return
    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    low, high = total.clone(), total.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise GentoolError(f"distributed training: the ranks' weights differ (checksums {low.item()} to "
                           f"{high.item()}); a rank ran different steps")


def broadcast_text(text: str, world: World, device: torch.device) -> str:
    """Rank 0's `text` on every rank (as UTF-8 bytes in a tensor, so nothing is pickled)."""
    if not world.enabled:
        return text
    data = torch.tensor(list(text.encode()) if world.main else [], dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], device=device)
    dist.broadcast(size, 0)
    buf = data if world.main else torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(buf, 0)
    return bytes(buf.cpu().tolist()).decode()


def barrier(world: World) -> None:
    if world.enabled:
        dist.barrier()
