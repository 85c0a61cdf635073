"""`gentool prepare`: build a data set's reference extractor and its real-image statistics ahead of time, so a
batch job's first `gentool evaluate` does not spend minutes training the extractor (a job with a time limit can
run this once, on its own)."""

from __future__ import annotations

import time

from gentool.device import pick_device
from gentool.errors import bad_value
from gentool.metrics.extractor import extractors_dir, get_extractor
from gentool.metrics.reference import reference_geometry, resolve_reference
from gentool.metrics.stats import real_stats
from gentool.models.fields import MAX_SIDE
from gentool.progress import Reporter

SPLITS = ("test", "train")


def prepare(data: str, data_dir: str | None = None, image_size: int | None = None, splits=("test",),
            device: str = "auto", reporter: Reporter | None = None) -> dict:
    """Train (or find in the cache) `data`'s extractor and compute the real statistics of `splits`; what was
    built and where, as a dict. `image_size`: a folder's side as a model trained with --image-size draws it."""
    if image_size is not None and not 8 <= image_size <= MAX_SIDE:
        raise bad_value("--image-size", image_size, f"a side between 8 and {MAX_SIDE} pixels")
    for split in splits:
        if split not in SPLITS:
            raise bad_value("--split", split, "test or train")
    reporter = reporter or Reporter()
    reference = resolve_reference(data, data_dir)
    if image_size is not None:
        if reference.train_folder is None:
            raise bad_value("--image-size", image_size, "only with an image folder (--data DIR)")
        channels = reference_geometry(reference).shape[0]
        reference = reference.sized_for((channels, image_size, image_size))
    start = time.perf_counter()
    extractor = get_extractor(reference, pick_device(device), reporter)
    built = {}
    for split in splits:
        stats = real_stats(extractor, reference, split, reporter)
        built[split] = {"images": len(stats.features), "source": reference.describe_split(split)}
    return {"data": reference.name, "extractor": extractor.meta.get("id"),
            "test_accuracy": extractor.meta.get("test_accuracy"), "cache": str(extractors_dir()),
            "splits": built, "seconds": round(time.perf_counter() - start, 1)}
