"""JSON values from elsewhere (a hook's record, a metric) made writable as JSON: NaN and infinities become null, values
JSON cannot hold become null or their number. (Kept apart from gentool.fileio, which writes what this cleans.)"""

from __future__ import annotations

import math

from gentool.schema import MAX_DEPTH  # what gentool reads back: a value nested deeper could be written, never read


def _scalar(item) -> float | None:
    """A numpy or torch scalar's number (a hook's forgotten `.item()`); None for anything else JSON cannot hold."""
    if isinstance(item, (set, bytes)) or getattr(item, "ndim", 0) != 0:
        return None
    try:
        return float(item)
    except (TypeError, ValueError):
        return None


def null_nonfinite(value, field: str = "") -> list[str]:
    """Replace, in place, every NaN or infinite number in the dicts and lists of `value` by None (JSON has no such
    numbers), and every value JSON cannot hold (a set, an object a hook put there) too, as well as a dict or list
    nested more than MAX_DEPTH levels below the top of `value` (gentool's reader refuses it; a hook's value may be
    nested thousands deep) or holding one of the dicts and lists it is in (a cycle: JSON cannot write it). A tuple
    becomes a list and a numpy or torch scalar its number. Returns the fields replaced. In place, so that whoever
    holds a part (a hook, its record) sees it. The depth is bounded, so this never recurses more than MAX_DEPTH
    times."""
    return _clean(value, field, 1, {id(value)})


def _clean(value, field: str, level: int, above: set[int]) -> list[str]:
    """null_nonfinite of `value`, which is `level` levels deep and inside the containers whose ids are `above`."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    replaced = []
    for key, item in list(items):
        where = f"{field}[{key}]" if isinstance(value, list) else f"{field}.{key}" if field else str(key)
        if isinstance(item, tuple):
            item = value[key] = list(item)
        elif not isinstance(item, (dict, list, str, int, float, type(None))):
            item = value[key] = _scalar(item)
            if item is None:
                replaced.append(where)
                continue
        if (isinstance(item, float) and not math.isfinite(item)) or (isinstance(item, (dict, list)) and (
                level >= MAX_DEPTH or id(item) in above)):  # too deep, or one of the containers it is in
            value[key] = None
            replaced.append(where)
        elif isinstance(item, (dict, list)):
            above.add(id(item))
            replaced += _clean(item, where, level + 1, above)
            above.discard(id(item))
    return replaced
