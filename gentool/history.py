"""A run's progress and its one owner.

- `EpochRecord`: one epoch's record (or the record of part of one: a run stopped inside an epoch, or the figures
  drawn inside a long one), as metrics.json holds it.
- `PartialEpoch`: what a checkpoint taken inside an epoch resumes that epoch's means from (running sums, counts,
  images seen, seconds), as the checkpoint's `state.partial` holds it.
- `RunHistory`: a run's metrics.json (its records, events and what hooks keep beside them): grown by the trainer,
  written atomically, validated field by field when read back, cut back to the checkpoint when a run resumes.

Whoever asks whether a record is of a finished epoch asks here (`is_partial`, `finished`, `epoch_position`), so the
trainer, resume, figures, results and the report agree on it. Imports no torch: readers load runs without it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from gentool import schema as s
from gentool.errors import GentoolError, UsageError
from gentool.fileio import atomic_write_json
from gentool.jsonvalues import null_nonfinite

MAX_COUNT = 10**9  # epochs, batches: as train's options allow
MAX_STEP = 10**15

# An epoch's record as read back: the fields the trainer writes are typed, the rest (the steps' means, what hooks
# add) are scalars. A partial record is marked `"partial": true` and says how far into its epoch it is.
RECORD = s.Obj({"epoch": s.Int(0, MAX_COUNT)},
               {"step": s.Int(0, MAX_STEP), "seconds": s.Num(0), "images_per_second": s.Num(0), "partial": s.Bool(),
                "images_seen": s.Int(0, MAX_STEP), "epoch_fraction": s.Num(0, 1)}, extra=s.SCALAR, max_len=1000)
EVENT = s.Obj({}, {"epoch": s.Int(0, MAX_COUNT)}, extra=s.SCALAR, max_len=100)
HISTORY = s.Obj({}, {"epochs": s.List(RECORD, 10**7), "events": s.List(EVENT, 10**6),
                     "best": s.Obj({}, extra=s.SCALAR, max_len=100),
                     "heldout": s.Obj({}, extra=s.SCALAR, max_len=100)})
# A checkpoint's `state.partial`: the epoch in progress's running sums and counts, images seen and seconds.
PARTIAL_EPOCH = s.Obj({}, {"sums": s.Map(s.Num(), max_len=1000), "counts": s.Map(s.Int(0, MAX_COUNT), max_len=1000),
                           "seen": s.Int(0, MAX_STEP), "seconds": s.Num(0)})
CORE = ("epoch", "step", "seconds", "images_per_second")  # where an epoch ended and how long it took
PROGRESS = ("partial", "images_seen", "epoch_fraction")  # a partial record's own fields
# Fields of a record that describe the epoch rather than measure the model (left out of final metrics and loss
# curves): the above, but for `partial` (the final metrics say when the last epoch was stopped inside), and
# `heldout_seconds` (what the epoch's held-out losses took, beside its training `seconds`).
BOOKKEEPING = frozenset(CORE + PROGRESS) - {"partial"} | {"heldout_seconds"}
OWN = CORE + PROGRESS  # a record's fields that only the trainer writes
MAX_EXTRA_BYTES = 16 << 20  # what hooks keep beside the records (a top-level key), as JSON: far under the read limit


def is_partial(record: Mapping) -> bool:
    """Whether a record (a metrics.json dict) is of an epoch stopped inside, or still in progress."""
    return record.get("partial") is True


def finished(records: Iterable[Mapping]) -> list:
    """The records of finished epochs."""
    return [r for r in records if not is_partial(r)]


def partial_records(records: Iterable[Mapping]) -> list:
    """The records of epochs stopped inside (or in progress)."""
    return [r for r in records if is_partial(r)]


def finished_epochs(records: Iterable[Mapping]) -> int:
    """How many epochs the records show finished (a partial record does not count)."""
    return max((r["epoch"] for r in finished(records)), default=0)


def epoch_position(record: Mapping) -> float:
    """Where a record sits on the epoch axis: a finished epoch at its number, a partial one at the share done."""
    return record["epoch"] - 1 + record.get("epoch_fraction", 1.0) if is_partial(record) else record["epoch"]


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's record, or part of one (`partial`, with `images_seen` and `epoch_fraction`). `metrics`: the
    means of what the steps reported, then what the loop and hooks added (skipped_steps, fid, heldout_*), in order."""

    epoch: int
    step: int | None = None
    seconds: float | None = None
    images_per_second: float | None = None
    metrics: Mapping[str, object] = field(default_factory=dict)
    partial: bool = False
    images_seen: int | None = None
    epoch_fraction: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    def to_json(self) -> dict:
        """The record as metrics.json holds it (a new dict, keys in the order gentool has always written them)."""
        out = {k: getattr(self, k) for k in CORE if getattr(self, k) is not None}
        out.update(self.metrics)
        if self.partial:
            out.update({k: getattr(self, k) for k in PROGRESS if getattr(self, k) is not None})
        return out

    @classmethod
    def from_json(cls, value, where: str = "record") -> EpochRecord:
        """A record from metrics.json, every field checked (schema.Invalid naming the field otherwise)."""
        value = s.check(value, RECORD, where)
        typed = {k: value[k] for k in CORE + PROGRESS if k in value}
        typed["partial"] = typed.get("partial") is True
        return cls(**typed, metrics={k: v for k, v in value.items() if k not in CORE + PROGRESS})


@dataclass(frozen=True)
class PartialEpoch:
    """The epoch in progress as a checkpoint taken inside it holds it: the batches done (where a resumed run goes
    on), each reported quantity's running sum and count, the images seen and the seconds trained so far (this
    rank's). Between epochs there is none (None)."""

    batch: int
    sums: Mapping[str, float] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)
    seen: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        """`state.partial` as gentool has always written it (the batches done are `state.batch`, beside it)."""
        return {"sums": dict(self.sums), "counts": dict(self.counts), "seen": self.seen, "seconds": self.seconds}

    @classmethod
    def from_state(cls, state: Mapping) -> PartialEpoch | None:
        """From a checkpoint's `state` (its `batch` and `partial`, each checked): None for a checkpoint taken
        between epochs (`batch` 0 and `partial` `{}` or absent)."""
        batch, value = s.check(state.get("batch", 0), s.Int(0, MAX_COUNT), "state.batch"), state.get("partial") or {}
        if not batch and not value:
            return None
        value = s.check(value, PARTIAL_EPOCH, "state.partial")
        return cls(batch, dict(value.get("sums", {})), dict(value.get("counts", {})), value.get("seen", 0),
                   value.get("seconds", 0.0))


def state_fields(partial: PartialEpoch | None) -> dict:
    """A checkpoint's `state.batch` and `state.partial`: 0 and `{}` between epochs, as gentool has always written
    them."""
    return {"batch": partial.batch, "partial": partial.to_json()} if partial else {"batch": 0, "partial": {}}


class RunHistory:
    """A run's metrics.json in memory. `doc` is the JSON document: its `epochs` (records in order, a partial record
    of the epoch in progress last), `events`, and what hooks keep beside them (best, heldout, evaluation); hooks add
    to it (see gentool.hooks), the trainer adds records through `keep`."""

    def __init__(self, doc: dict | None = None):
        self.doc = doc if doc is not None else {"epochs": [], "events": []}
        self.doc.setdefault("epochs", [])
        self.doc.setdefault("events", [])
        # the records the trainer stored, each with its own fields as it wrote them: what `mend` puts back
        self.own = [(r, _own_fields(r)) for r in self.doc["epochs"]]
        self.progress: list[dict] = []  # the epoch in progress's running records, as the figures drew them
        self.nonfinite: set[str] = set()  # record keys already warned about holding NaN/Inf (written null)
        self.mended: set[str] = set()  # fields already warned about as changed by a hook (see `mend`)

    @property
    def records(self) -> list[dict]:
        return self.doc["epochs"]

    def typed(self) -> list[EpochRecord]:
        return [EpochRecord.from_json(r, f"epochs[{i}]") for i, r in enumerate(self.records)]

    @classmethod
    def read(cls, path: Path, arg: str = "RUN_DIR") -> RunHistory:
        """A run's metrics.json, every field checked; an unreadable or invalid file is one line naming `arg`, the
        file and the field."""
        return cls(read_history(path, arg))

    @classmethod
    def resumed(cls, path: Path, epoch: int, inside_epoch: bool = False) -> RunHistory | None:
        """The run's metrics.json at `path` cut back to its checkpoint (see `truncate`); None when it has none."""
        if not os.path.lexists(path):  # (a dangling link there is read, and named, not taken for no metrics.json)
            return None
        try:
            history = cls.read(path, "--resume")
        except GentoolError as exc:  # bad input, as a refused config.json there is: exit 2, not 1
            raise UsageError(str(exc)) from None
        history.truncate(epoch, inside_epoch)
        return history

    def truncate(self, epoch: int, inside_epoch: bool = False) -> None:
        """Cut back to the epochs up to `epoch` (the checkpoint's): a record written after the checkpoint is redone
        by the resumed run. A checkpoint taken inside the next epoch (`inside_epoch`) keeps that epoch's partial
        record until its finished record replaces it."""
        self.own = [(r, f) for r, f in self.own if f["epoch"] <= epoch
                    or (is_partial(f) and inside_epoch and f["epoch"] == epoch + 1)]
        self.doc["epochs"] = [r for r, _ in self.own]
        self.doc["events"] = [e for e in self.doc.get("events", []) if e.get("epoch", 0) <= epoch]

    def keep(self, record: EpochRecord) -> dict:
        """Add an epoch's record in place of any record of the same epoch (its partial one); returns the stored dict
        (the one hooks are shown and may add to)."""
        stored = record.to_json()
        self.own = [(r, f) for r, f in self.own if f["epoch"] < record.epoch] + [(stored, _own_fields(stored))]
        self.records[:] = [r for r, _ in self.own]
        return stored

    def add_event(self, event: dict) -> None:
        """Record what happened to the run (`epoch`, `kind`, `message`, other scalars) in metrics.json's events."""
        self.doc["events"].append(s.check(event, EVENT, "event"))

    def with_running(self, running: EpochRecord) -> dict:
        """The history to draw while an epoch runs: its earlier running records (a curve through a long first epoch,
        not one point) and `running` in place of any older record of its epoch."""
        self.tidy()  # what hooks did since the last write (in on_step) is not drawn, nor read below
        record = running.to_json()
        self.progress = [r for r in self.progress if r["epoch"] == running.epoch] + [record]
        return {**self.doc, "epochs": [r for r, own in self.own if own["epoch"] < running.epoch] + self.progress}

    def intact(self) -> bool:
        """Whether the records and events are where the trainer keeps them (cheap enough for every step; `tidy`
        checks everything, and puts back what a hook moved)."""
        epochs = self.doc.get("epochs")
        return (isinstance(epochs, list) and isinstance(self.doc.get("events"), list) and len(epochs) == len(self.own)
                and all(a is b for a, (b, _) in zip(epochs, self.own)))

    def write(self, path: Path, **about) -> None:
        """Rewrite metrics.json at `path` (atomically), with `about` (model, run_dir) set in the document, after
        `tidy`: what hooks did to the document is no reason to stop a run, nor to write one gentool cannot read."""
        self.doc.update(about)
        self.tidy(Path(path).name)
        atomic_write_json(path, self.doc)

    def tidy(self, name: str = "metrics.json") -> None:
        """Put back what hooks did to the document that gentool could not write or read back (the loop calls this
        after every hook event, so its next step finds the records it keeps): a NaN or infinite value, a value
        nested too deep or holding itself becomes null, and what `mend` undoes is undone, each with a warning
        naming the field once (`name`: the file, in the warnings)."""
        replaced, undone = null_nonfinite(self.doc), mend(self)  # (mend after: a cycle would not end its checks)
        replaced = [r for r in replaced if not any(r == u or r.startswith((u + ".", u + "[")) for u in undone)]
        new = _first_time([r.rsplit(".", 1)[-1] for r in replaced], self.nonfinite)  # (what mend left out: below)
        if new:
            warnings.warn(f"{name}: {', '.join(new[:5])}{' ...' if len(new) > 5 else ''} "
                          f"{'is' if len(new) == 1 else 'are'} not a finite number or a JSON value, or nested too "
                          f"deep or within itself ({replaced[0][:80]}); written as null, here and in later records")
        fresh = _first_time([u.rsplit(".", 1)[-1] for u in undone], self.mended)
        undone = [u for u in undone if u.rsplit(".", 1)[-1] in fresh]
        if undone:
            more = " ..." if len(undone) > 3 else ""
            warnings.warn(f"{name}: a hook changed {', '.join(undone[:3])}{more} in a way gentool could "
                          f"not read back (the trainer's own record fields, or values metrics.json does not hold); "
                          f"gentool's own values are kept and the rest left out")


def _first_time(names: list[str], warned: set[str]) -> list[str]:
    """The names of `names` not in `warned` (sorted), added to it: each field is warned about once per run."""
    new = sorted(set(names) - warned)
    warned.update(new)
    return new


def _own_fields(record: Mapping) -> dict:
    return {k: record[k] for k in OWN if k in record}


def _fits(value, spec: s.Spec) -> bool:
    try:
        s.check(value, spec, "")
        return True
    except (s.Invalid, OverflowError, RecursionError):  # OverflowError: an int too large for a float
        return False


def mend(history: RunHistory) -> list[str]:
    """Put metrics.json back into a form gentool reads: what hooks did to it (they may add to records and to the
    document, see gentool.hooks) must not make a run that resume, report and summary refuse. The trainer's records
    come back in its order with its own fields (OWN) as it wrote them; a record's other values must be scalars (the
    extras beyond RECORD's limit dropped); events, `best` and `heldout` must fit their specs; any other key must be
    JSON of at most MAX_EXTRA_BYTES. Returns what it undid or left out, by field."""
    doc, undone = history.doc, []
    if not isinstance(doc.get("epochs"), list) or len(doc["epochs"]) != len(history.own) or any(
            a is not b for a, (b, _) in zip(doc["epochs"], history.own)):
        undone.append("epochs")
    for i, (record, own) in enumerate(history.own):
        undone += _mend_record(record, own, f"epochs[{i}]")
    doc["epochs"] = [r for r, _ in history.own]
    events = doc.get("events")
    doc["events"] = [e for e in events if _fits(e, EVENT)][:10**6] if isinstance(events, list) else []
    if not isinstance(events, list) or len(doc["events"]) != len(events):
        undone.append("events")
    for key in [k for k in doc if k not in ("epochs", "events")]:
        spec = HISTORY.optional.get(key) if isinstance(key, str) else None
        if (_fits(doc[key], spec) if spec is not None else isinstance(key, str) and _small_json(doc[key])):
            continue
        undone.append(str(key)[:40])
        del doc[key]
    return undone


def _mend_record(record: dict, own: dict, where: str) -> list[str]:
    """One record as the trainer wrote it (`own`), with the scalars hooks added (up to RECORD's limit of keys)."""
    changed = [k for k in OWN if (k in record) != (k in own)  # equal is not enough: 1.0 and True equal 1
               or type(record.get(k)) is not type(own.get(k)) or record.get(k) != own.get(k)]
    odd = [k for k, v in record.items() if k not in OWN
           and (not isinstance(k, str) or len(k) > 4096 or not _fits(v, s.SCALAR))]
    if not changed and not odd and len(record) <= RECORD.max_len:
        return []
    extras = [(k, v) for k, v in record.items() if k not in OWN and k not in odd][:RECORD.max_len - len(own)]
    record.clear()
    record.update({k: own[k] for k in CORE if k in own})
    record.update({**dict(extras), **{k: own[k] for k in PROGRESS if k in own}})
    return [f"{where}.{str(k)[:40]}" for k in changed + odd] or [where]


def _small_json(value) -> bool:
    """JSON of at most MAX_EXTRA_BYTES, nested shallow enough for the reader (the document is one level)."""
    try:
        return s.depth(value) < s.MAX_DEPTH and len(json.dumps(value, allow_nan=False)) <= MAX_EXTRA_BYTES
    except (TypeError, ValueError, RecursionError):
        return False


def read_history(path: Path, arg: str = "RUN_DIR") -> dict:
    """A run's metrics.json as a dict, every field checked; an unreadable or invalid file is one GentoolError naming
    `arg`, the file and the field."""
    return s.read_checked(path, HISTORY, arg)


def read_records(path: Path, arg: str = "RUN_DIR") -> list[dict]:
    """The epoch records of the metrics.json at `path`, checked (none when the run has written none yet)."""
    # lexists: a dangling link, a pipe or a folder there is read, and refused naming what it is; nothing there: none
    return read_history(path, arg).get("epochs", []) if os.path.lexists(path) else []
