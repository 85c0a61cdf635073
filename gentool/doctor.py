"""`gentool doctor`: what this machine gives gentool — versions (and whether torch and torchvision pair), the
device `--device auto` picks, the CPU's bf16 support, what `--precision auto` decides and from which cached
measurements, and how busy the machine is now."""

from __future__ import annotations

import os
import time

from gentool import __version__


def _cache_rows(now: float) -> list[dict]:
    from gentool.precision import CACHE_DAYS, cache_path, read_cache

    rows = []
    for key, e in read_cache(cache_path(), now).items():
        age = (now - e["measured"]) / 86400
        rows.append({"key": key, "threads": e.get("threads"), "cpu": e.get("cpu"), "torch": e.get("torch"),
                     "fp32_ms": round(e["fp32"] * 1e3, 3), "bf16_ms": round(e["bf16"] * 1e3, 3),
                     "age_days": round(age, 2), "expires_in_days": round(CACHE_DAYS - age, 2)})
    return rows


def diagnose(threads: int | None = None, clear_precision: bool = False) -> dict:
    """The doctor's findings as one JSON-ready dict; `clear_precision` first forgets the cached probe results."""
    import torch

    from gentool.cache import cache_dir
    from gentool.device import choose_precision, default_threads, pick_device
    from gentool.load import cores, load_warning, quota_cores
    from gentool.precision import _bf16_supported, _cpu_name, cache_path, clear_cache, feature_rule, forced_auto
    from gentool.versions import installed, torchvision_problem

    found = clear_cache() if clear_precision else None
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    device = pick_device("auto")
    rule, why = feature_rule()
    choice = choose_precision("auto", device)
    forced = forced_auto(device)
    return {
        "gentool": __version__, "torch": torch.__version__, "torchvision": installed("torchvision"),
        "torchvision_problem": torchvision_problem(),
        "device": str(device), "cpu": _cpu_name(), "cores": cores(), "cpu_quota": quota_cores(), "threads": threads,
        "bf16_native": _bf16_supported(torch.device("cpu")), "bf16_rule": rule, "bf16_rule_reason": why,
        "precision": choice.to_dict(), "precision_forced": forced.used if forced else None,
        "precision_cache": str(cache_path()),
        "precision_cache_cleared": (found is not None) if clear_precision else None, "precision_cache_found": found,
        "precision_cache_entries": _cache_rows(time.time()),
        "cache_dir": str(cache_dir()), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "load_warning": load_warning(threads),
    }
