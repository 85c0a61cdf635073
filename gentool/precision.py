"""--precision: which floating-point format a command computes in, and why.

`auto` must not rest on one timing taken at a bad moment: a probe timed while other jobs held the cores once
measured bf16 at 0.77x fp32 on a CPU where it runs 2-2.5x as fast, cached that, and every later run trained 2-4x
slower. So on a CPU the decision starts from a rule on the CPU's features (what bf16 is known to do on that kind of
CPU), a short probe confirms it, and the probe may overrule the rule only when it ran on a quiet machine and
disagrees clearly. Only quiet measurements are cached, and a cached one expires after CACHE_DAYS.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from gentool.errors import bad_value

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


# fp32 or bf16: what `auto` decides, whatever the rule and the probe say. For batch jobs across hosts of different
# kinds that must all train alike, and for CI, which runs the suite with the decision forced each way.
AUTO_ENV = "GENTOOL_AUTO_PRECISION"
FORCEABLE = ("fp32", "bf16")


def forced_auto(device: torch.device) -> PrecisionChoice | None:
    """What $GENTOOL_AUTO_PRECISION makes `auto` decide on `device` (None when it is unset or empty). Any other
    value is refused, and so is bf16 where the device has no native bf16: falling back to fp32 would let a job (or
    a CI run meant to cover bf16) believe it ran in bf16, and emulated bf16 is slower than fp32."""
    value = os.environ.get(AUTO_ENV, "").strip().lower()
    if not value:
        return None
    if value not in FORCEABLE:
        raise bad_value(AUTO_ENV, os.environ[AUTO_ENV], "fp32 or bf16 (what --precision auto then picks), or unset")
    if value == "bf16" and not _bf16_supported(device):
        raise bad_value(AUTO_ENV, value, f"fp32 or unset on this {device.type}: it has no native bf16 "
                                         "(AVX512-BF16 or AMX on a CPU)")
    return PrecisionChoice("auto", value, f"forced by {AUTO_ENV}={value}")


def check_precision(name: str, device: torch.device) -> str:
    """--precision, lower-cased, when `device` can run it (auto always can, unless $GENTOOL_AUTO_PRECISION forces
    what it cannot); refuses anything else. Cheap: auto is checked here without being probed."""
    name = (name or "auto").lower()
    if name not in PRECISIONS:
        raise bad_value("--precision", name, "one of " + ", ".join(PRECISIONS))
    if name == "auto":
        forced_auto(device)
    if name == "bf16" and not _bf16_supported(device):
        raise bad_value("--precision", name, f"a precision this {device.type} supports (it lacks fast bf16; use fp32)")
    if name == "fp16" and device.type not in ("cuda", "mps"):
        raise bad_value("--precision", name, "fp32 or bf16 on a CPU (fp16 needs a CUDA or MPS device)")
    return name


def choose_precision(name: str, device: torch.device) -> PrecisionChoice:
    """The precision for --precision on `device`: an explicit one is checked (refused when the device lacks it);
    auto follows `auto_precision`."""
    name = check_precision(name, device)
    return auto_precision(device) if name == "auto" else PrecisionChoice(name, name, "given")


def pick_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --precision on `device` (None: fp32 throughout); refuses what the device lacks."""
    return choose_precision(name, device).dtype


BF16_GAIN = 1.15  # a measured gain beyond timing noise either way (bf16 >= 1.15x fp32, or <= 1/1.15x)
PROBE_REPS = 7
PROBE_SECONDS = 0.6  # timing budget of the probe, on top of one warm-up call per precision
BUSY_SHARE = 0.25  # other processes using more than this share of the cores during the probe: a busy machine
OWN_SHARE = 0.6  # ... or the probe getting less than this share of its own threads' cores (another job on them)
CACHE_FILE = "precision.json"
CACHE_ENTRIES = 32  # a few machines x thread counts x torch versions; the oldest are dropped beyond this
CACHE_DAYS = 30  # a measurement older than this is taken again (a new kernel library, BIOS or VM placement)
_CHOSEN: dict[tuple, PrecisionChoice] = {}  # this process's decisions (one per device and thread count)


def auto_precision(device: torch.device) -> PrecisionChoice:
    """--precision auto: bf16 on a CUDA device with native bf16 (compute capability 8.0 and later), fp32 on MPS,
    and on a CPU the feature rule confirmed (or, on a quiet machine, clearly overruled) by the probe; or what
    $GENTOOL_AUTO_PRECISION forces."""
    forced = forced_auto(device)
    if forced is not None:
        return forced
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


def feature_rule(info: dict | None = None) -> tuple[str | None, str]:
    """What bf16 is known to do on this kind of CPU: ("bf16" | "fp32" | None for unknown, why). Measured here:
    AMX tiles (Intel Sapphire Rapids and later) and AMD Zen 4's AVX512-BF16 run bf16 matmuls 2-2.8x as fast as
    fp32; an Intel CPU with AVX512-BF16 but no AMX runs them at about half the fp32 speed."""
    info = _cpuinfo() if info is None else info
    flags, vendor = set(info.get("flags", "").split()), info.get("vendor_id", "")
    if "amx_bf16" in flags:
        return "bf16", "AMX bf16 tiles"
    if "avx512_bf16" in flags and vendor == "AuthenticAMD":
        return "bf16", "an AMD CPU with AVX512-BF16"
    if "avx512_bf16" in flags and vendor == "GenuineIntel":
        return "fp32", "an Intel CPU with AVX512-BF16 but no AMX"
    return None, "a CPU gentool has no rule for"


def decide_precision(seconds: dict[str, float], cached: bool = False, expected: str | None = None,
                     busy: bool = False, why: str = "") -> PrecisionChoice:
    """The choice from the probe's best times per precision ({"fp32": s, "bf16": s}) and the feature rule's
    expectation: the rule stands unless a quiet probe clearly disagrees; with no rule, the probe decides."""
    gain = seconds["fp32"] / seconds["bf16"]
    how = (f"probe{' (cached)' if cached else ''}: fp32 {seconds['fp32'] * 1e3:.1f} ms, bf16 "
           f"{seconds['bf16'] * 1e3:.1f} ms{', machine busy' if busy else ''}")
    measured = "bf16" if gain >= BF16_GAIN else "fp32" if gain <= 1 / BF16_GAIN else None
    if expected and (busy or measured in (None, expected)):
        verdict = "confirms" if measured == expected else "does not overrule"
        return PrecisionChoice("auto", expected, f"{why}: {expected} expected; bf16 ran {gain:.2f}x as fast as fp32, "
                                                 f"which {verdict} it ({how})")
    if measured == "bf16":
        return PrecisionChoice("auto", "bf16", f"bf16 ran {gain:.2f}x as fast as fp32 on this CPU ({how})")
    return PrecisionChoice("auto", "fp32", f"bf16 ran {gain:.2f}x as fast as fp32 on this CPU, below the "
                                           f"{BF16_GAIN}x that bf16 needs ({how})")


def time_workloads(work: dict, clock=time.perf_counter, reps: int = PROBE_REPS,
                   budget: float = PROBE_SECONDS) -> dict[str, float]:
    """The best of up to `reps` timings of each workload (name -> function), after one warm-up call each; rounds
    stop early once `budget` seconds are spent (after three). The workloads run in turn, so a burst of load from
    other processes slows both and the minimum filters it out."""
    for run in work.values():
        run()
    best, spent = {name: math.inf for name in work}, 0.0
    for done in range(reps):
        if done >= 3 and spent >= budget:
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
    from gentool.load import LoadMeter

    expected, why = feature_rule()
    path, key = cache_path(), _cache_key(threads)
    entries = read_cache(path)
    if key in entries:
        return decide_precision(entries[key], cached=True, expected=expected, why=why)
    with torch.no_grad(), LoadMeter() as load:
        seconds = time_workloads(_probe_work())
    busy = load.busy(threads, BUSY_SHARE, OWN_SHARE)
    if not busy:  # a busy machine's timings say more about the other jobs than about this CPU
        entries[key] = {**seconds, "cpu": _cpu_name()[:200], "torch": torch.__version__[:64], "threads": threads,
                        "measured": time.time()}
        _write_cache(path, dict(sorted(entries.items(), key=lambda e: e[1]["measured"])[-CACHE_ENTRIES:]))
    return decide_precision(seconds, expected=expected, busy=busy, why=why)


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


def _host_text() -> str:
    info = _cpuinfo()
    return "|".join([_cpu_name(), info.get("flags", ""), platform.machine(), torch.__version__])


def host_id() -> str:
    """This machine's kind for precision purposes: CPU model and flags, architecture and torch version."""
    return hashlib.sha256(_host_text().encode()).hexdigest()[:24]


def _cache_key(threads: int) -> str:
    return hashlib.sha256(f"{_host_text()}|{threads}".encode()).hexdigest()[:24]


def cache_path() -> Path:
    from gentool.cache import cache_dir

    return cache_dir() / CACHE_FILE


def read_cache(path: Path, now: float | None = None) -> dict:
    """The cache's unexpired entries; a missing cache counts as empty, and so does an unreadable or malformed one (the
    file may be hostile), which is moved aside with a warning and written again."""
    from gentool import schema as s
    from gentool.cache import set_aside

    now = time.time() if now is None else now
    seconds = s.Num(1e-6, 3600)  # no probe's matmul runs in under a microsecond
    # measured: not later than a day from now (clock skew between hosts sharing a home); a future date never expired
    entry = s.Obj({"fp32": seconds, "bf16": seconds, "measured": s.Num(0, now + 86400)},
                  {"cpu": s.Str(200), "torch": s.Str(64), "threads": s.Int(1, 4096)}, extra=False)
    spec = s.Obj({"format": s.Int(1, 1), "entries": s.Map(entry, key=r"[0-9a-f]{24}", max_len=CACHE_ENTRIES)})
    if not os.path.lexists(path):
        return {}
    try:
        entries = s.read(path, spec, CACHE_FILE, max_bytes=64 << 10, follow=False)["entries"]
    except (OSError, s.Invalid) as exc:
        set_aside(path, exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
        return {}
    oldest = now - CACHE_DAYS * 86400
    return {k: e for k, e in entries.items() if e["measured"] >= oldest}


def _write_cache(path: Path, entries: dict) -> None:
    from gentool import fileio, links
    from gentool.errors import GentoolError

    try:
        links.own(path.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        fileio.atomic_write_json(path, {"format": 1, "entries": entries})
    except links.LinkRefused as exc:
        warnings.warn(f"precision cache not written: {exc}")
    except (OSError, GentoolError):
        pass  # an unwritable cache only means probing again next time


def clear_cache() -> str | None:
    """Forget every cached measurement (`gentool doctor --clear-precision`); what stood at the cache's path and what
    became of it, in words (None: nothing was there). A link is removed, never what it leads to; anything else that
    is not a file (a folder, a named pipe) is not gentool's to delete: it is moved aside, as a damaged entry is."""
    from gentool.cache import move_aside
    from gentool.fileio import kind_of
    from gentool.links import link_kind

    path = cache_path()
    _CHOSEN.clear()
    if not os.path.lexists(path):
        return None
    if path.is_symlink():
        what = link_kind(path)
        path.unlink()
        return f"{what}, not a cache file gentool wrote; the link removed, not what it leads to"
    kind = kind_of(os.lstat(path).st_mode)
    if kind == "a regular file":
        path.unlink()
        return "a cache file, removed"
    return f"{kind}, not a cache file gentool wrote; {move_aside(path)}"
