"""The one place that picks the device and the precision (autocast dtype and gradient scaler; the decision itself
is `gentool.precision`'s), seeds the random number generators and prepares a model for its device."""

from __future__ import annotations

import contextlib
import os
import random

import torch

from gentool.errors import bad_value
from gentool.kernels import use_fast_kernels
from gentool.load import quota_cores, usable_cores
from gentool.precision import (  # noqa: F401 (the names commands and benchmarks import from here)
    PRECISIONS,
    PrecisionChoice,
    _bf16_supported,
    auto_precision,
    check_precision,
    choose_precision,
    pick_precision,
)

def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """Return the device for `name`: auto tries cuda, then mps, then cpu; an absent device is an error."""
    from gentool.train_options import DEVICE

    name = (name or "auto").lower()
    DEVICE("--device", name)  # the option's check, for callers that did not go through the command line
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind, _, index = name.partition(":")
    if kind == "cuda" and not torch.cuda.is_available():
        raise bad_value("--device", name, "a device present on this machine (cuda is not available; try cpu)")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise bad_value("--device", name, f"a CUDA device index below {torch.cuda.device_count()} (this machine's)")
    if kind == "mps" and not _mps_available():
        raise bad_value("--device", name, "a device present on this machine (mps is not available; try cpu)")
    return torch.device(name)


CUBLAS_ENV, CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG", ":4096:8"


def use_deterministic(device: torch.device) -> None:
    """--deterministic: torch raises on any operation that has no deterministic implementation rather than run a
    nondeterministic one. On CUDA, cuBLAS needs a fixed workspace (set here when the environment does not set it;
    it must be set before the first cuBLAS call, which has not happened yet) and cuDNN its deterministic kernels
    without benchmark autotuning, which may pick different kernels from one run to the next."""
    if device.type == "cuda":
        os.environ.setdefault(CUBLAS_ENV, CUBLAS_WORKSPACE)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


def seed_everything(seed: int) -> None:
    """Seed Python and torch (all devices) so CPU runs repeat exactly."""
    random.seed(seed)
    torch.manual_seed(seed)


class Amp:
    """A model's mixed-precision setting: the autocast dtype (None: fp32) and, for fp16 on CUDA, the gradient
    scaler that keeps small gradients from underflowing."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None = None):
        self.device_type, self.dtype = device.type, dtype
        self.scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 and device.type == "cuda" else None

    def autocast(self):
        """The region forward passes run in (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def fp32(self):
        """A region kept in fp32 inside an autocast one (backward passes, numerically sensitive parts)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, enabled=False)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


FP32 = Amp(torch.device("cpu"))


def use_threads(threads: int | None, device: torch.device) -> None:
    """--threads: the CPU threads this process computes on (set before `choose_precision`, whose probe times on
    them); the device's own when it is not the CPU. Without it, torch's own count, bounded by the cores a cgroup
    CPU quota allows (torch counts the cores it sees, not the time it is given: `gentool.load.quota_cores`)."""
    if device.type != "cpu":
        return
    if threads:
        torch.set_num_threads(threads)
    elif (quota := quota_cores()) is not None and quota < torch.get_num_threads():
        torch.set_num_threads(quota)


def default_threads() -> int:
    """Threads for one process: the cores this process may run on (its CPU affinity), not the logical count."""
    return usable_cores() or max(1, torch.get_num_threads())


def compiler_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` here, or None when it can (a CXX naming no compiler is refused)."""
    import importlib.util
    import shutil

    if device.type == "cpu":
        cxx = os.environ.get("CXX")
        if cxx:  # the compiler torch's inductor will run: CXX=/bin/false was a traceback at the first step
            return _cxx_problem(cxx)
        if not any(shutil.which(c) for c in ("g++", "clang++", "c++")):
            return "torch.compile on a CPU needs a C++ compiler (g++ or clang++; set CXX) and none was found"
        return None
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "torch.compile on CUDA needs the triton package, which is not installed"
    if device.type == "mps":
        return "torch.compile is not supported for MPS by this setup; run without --compile"
    return None


def _cxx_problem(cxx: str) -> str | None:
    """Why $CXX cannot be the C++ compiler torch.compile runs (not found, or `CXX --version` fails), or None."""
    import shutil
    import subprocess

    path = shutil.which(cxx)
    if path is None:
        return f"CXX={cxx!r} is not a program found on PATH (one program, without arguments)"
    try:
        done = subprocess.run([path, "--version"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"CXX={cxx!r} cannot be run ({exc})"
    return None if done.returncode == 0 else f"CXX={cxx!r} does not run as a compiler (`{cxx} --version` exits " \
                                              f"{done.returncode})"


def prepare(model, device: torch.device, precision: str | PrecisionChoice = "auto",
            channels_last: bool | None = None, compile: bool = False, fast_kernels: bool = True) -> None:
    """Put `model` on `device` with its precision, memory format (None: channels-last when it has convolutions and
    the device is not MPS), faster formulations of badly shaped layers (`gentool.kernels`) and, optionally,
    compiled networks; in place."""
    choice = precision if isinstance(precision, PrecisionChoice) else choose_precision(precision, device)
    amp = Amp(device, choice.dtype)
    if compile:
        problem = compiler_problem(device)
        if problem:
            raise bad_value("--compile", "on", f"a platform with a compiler ({problem})")
    model.to(device)
    model.amp = amp
    if channels_last is None:
        channels_last = device.type != "mps" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if fast_kernels:
        use_fast_kernels(model, device)
    if compile:
        for name, net in model.networks().items():
            if name not in model.double_backward_networks:
                net.compile()
