"""The one place that picks the device, the precision (autocast dtype and gradient scaler), seeds the random
number generators and prepares a model for its device."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from gentool.errors import bad_value
from gentool.kernels import use_fast_kernels

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """Return the device for `name`: auto tries cuda, then mps, then cpu; an absent device is an error."""
    name = (name or "auto").lower()
    if name.split(":")[0] not in DEVICES:
        raise bad_value("--device", name, "one of " + ", ".join(DEVICES))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise bad_value("--device", name, "a device present on this machine (cuda is not available; try cpu)")
    if name == "mps" and not _mps_available():
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


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a command runs in (`used`: fp32, bf16 or fp16), what was asked for and why this one."""

    requested: str
    used: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.used)

    def to_dict(self) -> dict:
        return {"requested": self.requested, "used": self.used, "reason": self.reason}


def _bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # oneDNN's own check: AVX512-BF16 or AMX (without them bf16 is emulated and slower than fp32)
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return device.type == "mps"


def check_precision(name: str, device: torch.device) -> str:
    """--precision, lower-cased, when `device` can run it (auto always can); refuses anything else. Cheap: auto is
    checked here without being probed."""
    name = (name or "auto").lower()
    if name not in PRECISIONS:
        raise bad_value("--precision", name, "one of " + ", ".join(PRECISIONS))
    if name == "bf16" and not _bf16_supported(device):
        raise bad_value("--precision", name, f"a precision this {device.type} supports (it lacks fast bf16; use fp32)")
    if name == "fp16" and device.type not in ("cuda", "mps"):
        raise bad_value("--precision", name, "fp32 or bf16 on a CPU (fp16 needs a CUDA or MPS device)")
    return name


def choose_precision(name: str, device: torch.device) -> PrecisionChoice:
    """The precision for --precision on `device`: an explicit one is checked (refused when the device lacks it);
    auto is fp32 unless bf16 is known to be faster here (see `auto_precision`)."""
    name = check_precision(name, device)
    return auto_precision(device) if name == "auto" else PrecisionChoice(name, name, "given")


def pick_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --precision on `device` (None: fp32 throughout); refuses what the device lacks."""
    return choose_precision(name, device).dtype


# --precision auto. bf16 autocast halves memory traffic, but on a CPU it pays only where the matrix units run bf16
# faster than fp32: 2.2x on an AMD Zen 4, yet half the fp32 speed on an Intel Xeon with AVX512-BF16 and no AMX. The
# CPU's feature flags cannot tell these apart, so a short probe times the same small matmul and convolution in
# both and the answer is cached per CPU model and flags, torch version and thread count.
BF16_GAIN = 1.15  # bf16 only when at least this much faster than fp32: clearly beyond timing noise
PROBE_REPS = 5
PROBE_SECONDS = 0.5  # timing budget of the probe, on top of one warm-up call per precision
CACHE_FILE = "precision.json"
CACHE_ENTRIES = 32  # a few machines × thread counts × torch versions; the oldest are dropped beyond this
_CHOSEN: dict[tuple, PrecisionChoice] = {}  # this process's decisions (one probe per device and thread count)


def auto_precision(device: torch.device) -> PrecisionChoice:
    """--precision auto: bf16 on a CUDA device with native bf16 (compute capability 8.0 and later), fp32 on MPS,
    and on a CPU bf16 only where the (cached) probe measured it clearly faster than fp32."""
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return PrecisionChoice("auto", "bf16" if native else "fp32", "CUDA device with native bf16" if native
                               else "this CUDA device has no native bf16 (compute capability below 8.0)")
    if device.type != "cpu":
        return PrecisionChoice("auto", "fp32", f"{device.type}: fp32 (bf16 autocast is not reliably faster there)")
    if not _bf16_supported(device):
        return PrecisionChoice("auto", "fp32", "this CPU has no native bf16 (AVX512-BF16 or AMX); emulated bf16 is "
                                               "slower than fp32")
    key = ("cpu", torch.get_num_threads())
    if key not in _CHOSEN:
        _CHOSEN[key] = _probed_choice(torch.get_num_threads())
    return _CHOSEN[key]


def decide_precision(seconds: dict[str, float], cached: bool = False) -> PrecisionChoice:
    """The choice from the probe's best times per precision ({"fp32": s, "bf16": s})."""
    gain = seconds["fp32"] / seconds["bf16"]
    how = (f"probe{' (cached)' if cached else ''}: fp32 {seconds['fp32'] * 1e3:.1f} ms, bf16 "
           f"{seconds['bf16'] * 1e3:.1f} ms")
    if gain >= BF16_GAIN:
        return PrecisionChoice("auto", "bf16", f"bf16 ran {gain:.2f}x as fast as fp32 on this CPU ({how})")
    return PrecisionChoice("auto", "fp32", f"bf16 ran {gain:.2f}x as fast as fp32 on this CPU, below the "
                                           f"{BF16_GAIN}x that bf16 needs ({how})")


def time_workloads(work: dict, clock=time.perf_counter, reps: int = PROBE_REPS,
                   budget: float = PROBE_SECONDS) -> dict[str, float]:
    """The best of up to `reps` timings of each workload (name → function), after one warm-up call each; rounds
    stop early once `budget` seconds are spent (after two). The workloads run in turn, so a burst of load from
    other processes slows both and the minimum filters it out."""
    for run in work.values():
        run()
    best, spent = {name: math.inf for name in work}, 0.0
    for done in range(reps):
        if done >= 2 and spent >= budget:
            break
        for name, run in work.items():
            start = clock()
            run()
            took = clock() - start
            best[name], spent = min(best[name], took), spent + took
    return best


def _probe_work() -> dict:
    """A small matmul and convolution, the two operations gentool's networks spend their time in (about 0.3 s)."""
    a, w = torch.randn(256, 1024), torch.randn(1024, 1024)
    x, k = torch.randn(32, 64, 14, 14), torch.randn(64, 64, 3, 3)

    def run():
        a @ w
        torch.nn.functional.conv2d(x, k, padding=1)

    def run_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            run()

    return {"fp32": run, "bf16": run_bf16}


def _probed_choice(threads: int) -> PrecisionChoice:
    path, key = _cache_path(), _cache_key(threads)
    entries = _read_cache(path)
    if key in entries:
        return decide_precision(entries[key], cached=True)
    with torch.no_grad():
        seconds = time_workloads(_probe_work())
    entries[key] = {**seconds, "cpu": _cpu_name()[:200], "torch": torch.__version__[:64], "threads": threads,
                    "measured": time.time()}
    _write_cache(path, dict(sorted(entries.items(), key=lambda e: e[1]["measured"])[-CACHE_ENTRIES:]))
    return decide_precision(seconds)


def _cpu_name() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20).split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _cache_key(threads: int) -> str:
    info = _cpuinfo()
    what = "|".join([_cpu_name(), info.get("flags", ""), platform.machine(), torch.__version__, str(threads)])
    return hashlib.sha256(what.encode()).hexdigest()[:24]


def _cache_path() -> Path:
    from gentool.data import cache_dir

    return cache_dir() / CACHE_FILE


def _read_cache(path: Path) -> dict:
    """The cache's entries; a missing cache counts as empty, and so does an unreadable or malformed one (the file
    may be hostile), which is moved aside with a warning and written again."""
    from gentool import fileio
    from gentool import schema as s

    seconds = s.Num(0, 3600, open_lo=True)
    entry = s.Obj({"fp32": seconds, "bf16": seconds, "measured": s.Num(0)},
                  {"cpu": s.Str(200), "torch": s.Str(64), "threads": s.Int(1, 4096)}, extra=False)
    spec = s.Obj({"format": s.Int(1, 1), "entries": s.Map(entry, key=r"[0-9a-f]{24}", max_len=CACHE_ENTRIES)})
    if not os.path.lexists(path):
        return {}
    try:
        return s.read(path, spec, CACHE_FILE, max_bytes=64 << 10)["entries"]
    except (OSError, s.Invalid) as exc:
        fileio.set_aside(path, exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
        return {}


def _write_cache(path: Path, entries: dict) -> None:
    from gentool import fileio
    from gentool.errors import GentoolError

    try:
        fileio.own(path.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        fileio.atomic_write_json(path, {"format": 1, "entries": entries})
    except fileio.LinkRefused as exc:
        warnings.warn(f"precision cache not written: {exc}")
    except (OSError, GentoolError):
        pass  # an unwritable cache only means probing again next time


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


def default_threads() -> int:
    """Threads for one process: the cores this process may run on (its CPU affinity), not the logical count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, torch.get_num_threads())


def compiler_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` here, or None when it can."""
    import importlib.util
    import shutil

    if device.type == "cpu":
        cxx = os.environ.get("CXX")
        if not any(shutil.which(c) for c in ([cxx] if cxx else []) + ["g++", "clang++", "c++"]):
            return "torch.compile on a CPU needs a C++ compiler (g++ or clang++; set CXX) and none was found"
        return None
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "torch.compile on CUDA needs the triton package, which is not installed"
    if device.type == "mps":
        return "torch.compile is not supported for MPS by this setup; run without --compile"
    return None


def prepare(model, device: torch.device, precision: str = "auto", channels_last: bool | None = None,
            compile: bool = False, fast_kernels: bool = True) -> None:
    """Put `model` on `device` with its precision, memory format (None: channels-last when it has convolutions and
    the device is not MPS), faster formulations of badly shaped layers (`gentool.kernels`) and, optionally,
    compiled networks; in place."""
    amp = Amp(device, pick_precision(precision, device))
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
