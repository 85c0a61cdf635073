"""What `gentool prepare` accepts: one keyword-only dataclass, each option declared once (the data options are
train's own, with their checks), checked before any work. Imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass

from gentool.checks import choice
from gentool.train_options import copy_option, option

SPLITS = {"test": ("test",), "train": ("train",), "both": ("test", "train")}


@dataclass(kw_only=True)
class PrepareOptions:
    """What `gentool prepare` was asked for."""

    data: str = option("The real data evaluate will compare with: mnist, cifar10, mnist-sample or a folder of "
                       "images, with class subfolders or without.", metavar="NAME|DIR", required=True)
    data_dir: str | None = copy_option("data_dir")
    image_size: int | None = option("A folder's images at S×S pixels, as a model trained with --image-size S "
                                    "draws them (default: their own size).", metavar="S",
                                    check=copy_option("image_size").metadata["check"])
    split: str = option("The real split(s) whose statistics to compute: test, train or both.", default="test",
                        metavar="test|train|both", check=choice(*SPLITS))
    device: str = copy_option("device", default="auto")
    threads: int | None = copy_option("threads")
