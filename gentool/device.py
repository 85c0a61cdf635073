"""The one place that picks the device and seeds the random number generators."""

from __future__ import annotations

import random

import torch

from gentool.errors import bad_value

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


def seed_everything(seed: int) -> None:
    """Seed Python and torch (all devices) so CPU runs repeat exactly."""
    random.seed(seed)
    torch.manual_seed(seed)
