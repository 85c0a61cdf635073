"""torch and torchvision must come as a pair: a torchvision built for another torch fails at import with a long
traceback ("operator torchvision::nms does not exist"). Read from the installed packages' metadata, without
importing either."""

from __future__ import annotations

import re

from gentool.errors import GentoolError

TESTED_PAIR = ("2.14.1", "0.29.1")  # what gentool's CI installs; any torch 2.x with its own torchvision works
FIX = f"pip install torch=={TESTED_PAIR[0]} torchvision=={TESTED_PAIR[1]}"


def _minor(version: str) -> tuple[int, int] | None:
    found = re.match(r"([0-9]+)\.([0-9]+)", version)
    return (int(found.group(1)), int(found.group(2))) if found else None


def installed(name: str) -> str | None:
    from gentool.installed import version

    return version(name)


def torchvision_problem(torch_version: str | None = None, vision_version: str | None = None) -> str | None:
    """Why the installed torchvision cannot run with the installed torch, or None when they pair. torchvision
    0.(m+15) is built for torch 2.m (0.19 for 2.4, ..., 0.29 for 2.14)."""
    torch_version = torch_version or installed("torch")
    vision_version = vision_version or installed("torchvision")
    if torch_version is None or vision_version is None:
        missing = "torch" if torch_version is None else "torchvision"
        return f"{missing} is not installed; install a matching pair: {FIX}"
    t, v = _minor(torch_version), _minor(vision_version)
    if t is None or v is None or t[0] != 2 or v[0] != 0:
        return None  # a version scheme this rule does not know: let the import speak
    if v[1] != t[1] + 15:
        return (f"torchvision {vision_version} does not match torch {torch_version} (torch 2.{t[1]} needs "
                f"torchvision 0.{t[1] + 15}); install a matching pair: {FIX}")
    return None


def require_torchvision() -> None:
    """Refuse, in one line, to go on with a torchvision that does not pair with torch."""
    problem = torchvision_problem()
    if problem:
        raise GentoolError(problem)
