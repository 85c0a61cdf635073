"""`gentool prepare`: build a data set's reference extractor and its real-image statistics ahead of time, so a
batch job's first `gentool evaluate` does not spend minutes training the extractor (a job with a time limit can
run this once, on its own)."""

from __future__ import annotations

import time
from gentool.device import pick_device, use_threads
from gentool.errors import bad_value
from gentool.metrics.extractor import extractors_dir, get_extractor
from gentool.metrics.reference import resolve_reference
from gentool.metrics.stats import real_stats
from gentool.models.fields import MAX_SIDE
from gentool.prepare_options import SPLITS, PrepareOptions
from gentool.progress import Reporter


def prepare(opts: PrepareOptions, reporter: Reporter | None = None) -> dict:
    """Train (or find in the cache) the data's extractor and compute the real statistics of the split(s); what
    was built and where, as a dict. A folder's images are taken at --image-size when it is given, as a model
    trained with that size draws them."""
    image_size = opts.image_size
    if image_size is not None and not 8 <= image_size <= MAX_SIDE:
        raise bad_value("--image-size", image_size, f"a side between 8 and {MAX_SIDE} pixels")
    reporter = reporter or Reporter()
    reference = resolve_reference(opts.data, opts.data_dir)
    if image_size is not None:
        if reference.train_folder is None:
            raise bad_value("--image-size", image_size, "only with an image folder (--data DIR)")
        reference = reference.at_size(image_size)
    start = time.perf_counter()
    device = pick_device(opts.device)
    use_threads(opts.threads, device)
    extractor = get_extractor(reference, device, reporter, hint=False)  # it is that command
    built = {}
    for part in SPLITS[opts.split]:
        stats = real_stats(extractor, reference, part, reporter)
        built[part] = {"images": len(stats.features), "source": reference.describe_split(part)}
    return {"data": reference.name, "extractor": extractor.meta.get("id"),
            "extractor_kind": extractor.meta.get("kind", "classifier"),
            "test_accuracy": extractor.meta.get("test_accuracy"), "cache": str(extractors_dir()),
            "splits": built, "seconds": round(time.perf_counter() - start, 1)}
