"""The reference feature extractor: a small CNN classifier that gentool trains itself, once per data set and recipe,
with a fixed seed, and caches in the user cache dir as safetensors plus JSON metadata (never a pickle).

Its penultimate layer gives the features FID, KID and precision/recall compare; its class probabilities give the
inception-style score and the mode counts. A folder without classes gets the same network trained on a pretext
task instead (predicting rotations: gentool.metrics.pretext), and no class metrics. The cache file's name carries
the recipe hash and a fingerprint of the data, so a changed recipe or other data never reuses stale weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

import gentool
from gentool.digests import tensors_digest
from gentool import fileio, schema
from gentool.cache import cache_dir, prepare_entry, set_aside
from gentool.data import Geometry, ImageData, batches
from gentool.datatypes import class_names_problem
from gentool.errors import UsageError, dims
from gentool.fileio import atomic_write_bytes
from gentool.metrics.pretext import CLASSES, KIND, ROTATION, TASKS, TURNS, rotate, rotation_batch
from gentool.metrics.reference import Reference, reference_geometry
from gentool.progress import Reporter

FORMAT = "gentool-extractor"
# JSON object of Recipe fields overriding the default recipe. For experiments and for the test suite, which needs
# an extractor that trains in a second; the overrides enter the recipe hash, so they never mix with the default.
RECIPE_ENV = "GENTOOL_EXTRACTOR_RECIPE"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the extractor's weights (with the data): network shape and training settings."""

    widths: tuple[int, ...] = (16, 32, 64)  # channels of each conv stage; each stage halves the resolution
    convs_per_stage: int = 1
    feature_dim: int = 128
    dropout: float = 0.3
    epochs: int = 3
    min_steps: int = 1000  # small data sets train for more epochs, so BatchNorm statistics and weights settle
    batch_size: int = 128
    lr: float = 3e-3  # AdamW, one-cycle schedule
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0  # > 0 blunts the class probabilities (the inception-style score could not reach K)
    shift: int = 2  # random translations of up to ±shift pixels
    flip: bool = False  # random horizontal flips
    seed: int = 0
    version: int = 1  # bump when the training code changes in a way these fields do not show
    task: str = CLASSES  # what it learns to predict: the data's classes, or the rotation of an unlabelled image

    def to_dict(self) -> dict:
        """The fields (a classifier's without `task`, so the recipe hashes and caches from before it stay valid)."""
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        if fields["task"] == CLASSES:
            del fields["task"]
        return fields

    @property
    def hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


GREY_RECIPE = Recipe()
COLOUR_RECIPE = Recipe(widths=(32, 64, 128), convs_per_stage=2, epochs=20, batch_size=128, lr=4e-3, shift=3,
                       flip=True, dropout=0.2)


# What $GENTOOL_EXTRACTOR_RECIPE may set, each field bounded so that no recipe asks for more memory or time than an
# experiment needs (the default recipes sit well inside: widths ≤ 128, batch 128); other keys are refused. A batch
# is at least 2: the extractor's BatchNorm layers cannot train on one image (a traceback when it was allowed).
RECIPE_SPEC = schema.Obj({}, {
    "widths": schema.List(schema.Int(1, 256), max_len=5), "convs_per_stage": schema.Int(1, 4),
    "feature_dim": schema.Int(1, 1024), "dropout": schema.Num(0, 1, open_hi=True), "epochs": schema.Int(1, 1000),
    "min_steps": schema.Int(0, 10**6), "batch_size": schema.Int(2, 1024), "lr": schema.Num(0, 10, open_lo=True),
    "weight_decay": schema.Num(0, 10), "label_smoothing": schema.Num(0, 1, open_hi=True), "shift": schema.Int(0, 16),
    "flip": schema.Bool(), "seed": schema.Int(0, 2**63 - 1), "version": schema.Int(0, 10**6)}, extra=False)
MAX_RECIPE_CHARS = 4096  # a recipe is a dozen fields; a longer value is not one


def default_recipe(geometry: Geometry, task: str = CLASSES) -> Recipe:
    """The fixed recipe for a geometry (grey: MNIST-like, colour: CIFAR-like) and task, with
    $GENTOOL_EXTRACTOR_RECIPE overrides applied (each field checked: a bad one is a UsageError naming it)."""
    recipe = dataclasses.replace(GREY_RECIPE if geometry.channels == 1 else COLOUR_RECIPE, task=task)
    text = os.environ.get(RECIPE_ENV)
    if not text:
        return recipe
    if len(text) > MAX_RECIPE_CHARS:
        raise UsageError(f"${RECIPE_ENV}: {len(text):,} characters; expected a JSON object of recipe fields (at "
                         f"most {MAX_RECIPE_CHARS:,} characters)")
    try:
        overrides = schema.check(schema.parse(text, "", max_depth=2), RECIPE_SPEC, "")
    except schema.Invalid as exc:
        named = exc.field.split("[")[0] in RECIPE_SPEC.optional  # else list the fields a recipe has
        known = "" if named else f" (its fields: {', '.join(RECIPE_SPEC.optional)})"
        raise UsageError(f"${RECIPE_ENV}: {str(exc).replace('the file', 'the value')}{known}") from None
    return dataclasses.replace(recipe, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})


class FeatureNet(nn.Module):
    """Conv stages (conv-BN-ReLU, max-pool) → flatten → `feature_dim` features (BN, ReLU) → dropout → logits."""

    def __init__(self, recipe: Recipe, geometry: Geometry, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin, h, w = geometry.channels, geometry.height, geometry.width
        for width in recipe.widths:
            for _ in range(recipe.convs_per_stage):
                layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                cin = width
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise UsageError(f"--data: images of {geometry.height}x{geometry.width} are too small for the extractor")
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.features = nn.Sequential(nn.Linear(cin * h * w, recipe.feature_dim), nn.BatchNorm1d(recipe.feature_dim),
                                      nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(recipe.dropout), nn.Linear(recipe.feature_dim, num_classes))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 N×C×H×W images → (features, logits)."""
        f = self.features(self.body(images.float().div(127.5).sub(1.0)))
        return f, self.head(f)


@dataclass
class Extractor:
    """A trained extractor and what describes it (id, data set, recipe, test accuracy, training time)."""

    net: FeatureNet
    meta: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def classifier(self) -> bool:
        """Whether its outputs are the data's classes (else rotations: no class metrics may be read from them)."""
        return self.meta["recipe"].get("task", CLASSES) == CLASSES

    @torch.no_grad()
    def run(self, images: torch.Tensor, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """Features (float32 N×D) and class probabilities (float32 N×K) for uint8 N×C×H×W images."""
        self.net.eval()
        device = next(self.net.parameters()).device
        feats, probs = [], []
        for chunk in images.split(batch_size):
            f, logits = self.net(chunk.to(device))
            feats.append(f.float().cpu())
            probs.append(logits.float().softmax(1).cpu())
        return torch.cat(feats).numpy(), torch.cat(probs).numpy()

    def accuracy(self, data: ImageData) -> float:
        """Top-1 accuracy on labelled data; a rotation extractor's, at telling each image's four rotations apart."""
        if self.classifier:
            _, probs = self.run(data.images)
            return float((probs.argmax(1) == data.labels.numpy()).mean())
        hits = [self.run(rotate(data.images, torch.full((len(data),), k)))[1].argmax(1) == k for k in range(TURNS)]
        return float(np.concatenate(hits).mean())


def extractors_dir() -> Path:
    """Where extractors and real-data statistics are cached ($XDG_CACHE_HOME/gentool/extractors): a folder gentool
    owns, so a link inside it is never written through."""
    return cache_dir() / "extractors"


def extractor_id(reference: Reference, recipe: Recipe) -> str:
    """`<data>-r<recipe hash>-d<data fingerprint>`: the cache name of this data set's extractor."""
    return f"{reference.name}-r{recipe.hash}-d{reference.fingerprint()}"


def get_extractor(reference: Reference, device: torch.device, reporter: Reporter | None = None,
                  hint: bool = True) -> Extractor:
    """The reference's extractor: loaded from the cache, or trained now (with progress) and cached. `hint`: name
    `gentool prepare` as the way to build it ahead (not when the caller is that command)."""
    reporter = reporter or Reporter()
    geometry = reference_geometry(reference)
    task = CLASSES if reference.labelled else ROTATION
    if task == ROTATION and geometry.height != geometry.width:
        raise UsageError(f"--data: {reference.spec} has no class subfolders and its images are {geometry.width}x"
                         f"{geometry.height}; its extractor learns to predict rotations, which needs square images "
                         f"(a model trained with --image-size draws them)")
    recipe = default_recipe(geometry, task)
    ident = extractor_id(reference, recipe)
    path = extractors_dir() / f"{ident}.safetensors"
    if os.path.lexists(path):
        try:
            return load_extractor(path, device, recipe, geometry, ident)
        except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError, RecursionError) as exc:
            set_aside(path, fileio.cause(exc).splitlines()[0])
    # a link there, or no room for the file, is refused now, not after minutes of training
    prepare_entry(path, need=extractor_bytes(recipe, geometry))
    ahead = _prepare_hint(reference) if hint else ""
    train, test = reference.load("train", reporter), reference.load("test", reporter)  # a refusal comes before...
    what = "" if task == CLASSES else " (no classes: a rotation-prediction network)"
    reporter.message(f"training the reference extractor{what} for {reference.describe_split('train')} "  # ... this
                     f"(first use; recipe {recipe.hash}, seed {recipe.seed}){ahead}")
    extractor = train_extractor(train, test, recipe, device, reporter)
    extractor.meta.update(id=ident, data=reference.name, data_spec=reference.spec, kind=KIND[task],
                          trained_on=reference.describe_split("train"), held_out=reference.describe_split("test"))
    save_extractor(path, extractor)
    accuracy = "test accuracy" if task == CLASSES else "accuracy at telling the held-out images' rotations apart"
    reporter.message(f"reference extractor {ident}: {accuracy} {extractor.meta['test_accuracy']:.2%}, "
                     f"trained in {extractor.meta['train_seconds']:.0f} s, cached in {path}")
    return extractor


def extractor_bytes(recipe: Recipe, geometry: Geometry) -> int:
    """What the extractor's file will take: its fp32 tensors (counted on the meta device) and room for the header."""
    from gentool.meta import shapes_only

    with shapes_only():
        net = FeatureNet(recipe, geometry, max(geometry.num_classes, TURNS))
    return 4 * sum(t.numel() for t in net.state_dict().values()) + (64 << 10)


def _prepare_hint(reference: Reference) -> str:
    size = f" --image-size {reference.image_size}" if reference.image_size else ""
    size += f" --data-dir {shlex.quote(str(reference.data_dir))}" if reference.data_dir else ""
    return f"; a batch job can build it ahead with: gentool prepare --data {shlex.quote(reference.spec)}{size}"


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device):
    """Inside the block torch's global RNG starts from `seed`; afterwards the caller's streams are as they were."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def train_extractor(train: ImageData, test: ImageData, recipe: Recipe, device: torch.device,
                    reporter: Reporter) -> Extractor:
    """Train a FeatureNet on `train` with the recipe's fixed seed (without disturbing the caller's RNG streams) and
    measure its accuracy on `test`. A classifier needs labelled images; a rotation extractor makes its own labels."""
    if recipe.task == CLASSES and (len(train) == 0 or bool((train.labels < 0).any())):
        raise UsageError("--data: the extractor's classifier needs labelled images (one subfolder per class)")
    num_classes = max(len(train.class_names), int(train.labels.max()) + 1) if recipe.task == CLASSES else TURNS
    start = time.perf_counter()
    with seeded_rng(recipe.seed, device):
        net = FeatureNet(recipe, train.geometry, num_classes).to(device)
        _fit(net, train, recipe, device, reporter)
    seconds = time.perf_counter() - start
    meta = {"format": FORMAT, "gentool_version": gentool.__version__, "recipe": recipe.to_dict(),
            "recipe_hash": recipe.hash, "geometry": train.geometry.to_dict(), "num_classes": num_classes,
            "class_names": list(train.class_names) if recipe.task == CLASSES else [], "n_train": len(train),
            "n_test": len(test),
            "train_seconds": round(seconds, 1)}
    extractor = Extractor(net, meta)
    extractor.meta["test_accuracy"] = round(extractor.accuracy(test), 5)
    return extractor


def _fit(net: FeatureNet, train: ImageData, recipe: Recipe, device: torch.device, reporter: Reporter) -> None:
    images, labels = train.images.to(device), train.labels.to(device)
    steps = len(batches(len(images), recipe.batch_size, recipe.seed, 1, device))
    epochs = max(recipe.epochs, math.ceil(recipe.min_steps / steps))
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=epochs * steps)
    reporter.start(epochs, 1)
    lines = reporter.pace()  # a small folder's extractor runs a thousand short epochs: not a line each
    try:
        for epoch in range(1, epochs + 1):
            net.train()
            reporter.epoch_start(epoch, steps)
            start, total, correct = time.perf_counter(), 0, 0
            for i, idx in enumerate(batches(len(images), recipe.batch_size, recipe.seed, epoch, device)[:steps]):
                inputs, targets = augment(images[idx], recipe), labels[idx]
                if recipe.task == ROTATION:  # turned after the shift and flip, so the label says the turn
                    inputs, targets = rotation_batch(inputs)
                _, logits = net(inputs)
                loss = F.cross_entropy(logits, targets, label_smoothing=recipe.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                total += len(idx)
                correct += int((logits.argmax(1) == targets).sum())
                reporter.step(i + 1, lambda: {"loss": loss.item()}, total / max(time.perf_counter() - start, 1e-9))
            seconds = time.perf_counter() - start
            if lines.due(last=epoch == epochs):
                reporter.epoch_end({"epoch": epoch, "step": epoch * steps, "seconds": seconds,
                                    "images_per_second": total / max(seconds, 1e-9), "train_accuracy": correct / total})
    finally:
        reporter.close()


def augment(images: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Random translations (zero padding) and, if the recipe says so, horizontal flips of a uint8 batch."""
    n, _, h, w = images.shape
    if recipe.shift:
        s = recipe.shift
        padded = F.pad(images, (s, s, s, s))
        dy, dx = torch.randint(0, 2 * s + 1, (2, n)).tolist()
        images = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if recipe.flip:
        flip = (torch.rand(n) < 0.5).to(images.device)[:, None, None, None]
        images = torch.where(flip, images.flip(3), images)
    return images


def save_extractor(path: Path, extractor: Extractor) -> None:
    """Write weights and metadata (JSON under the key "meta") to one safetensors file, atomically."""
    fileio.make_dirs(path.parent)
    tensors = {k: v.detach().cpu().contiguous() for k, v in extractor.net.state_dict().items()}
    # the weights' SHA-256: metadata and weights must be one extractor's (weights swapped for another data set's,
    # the metadata kept, were scored with the wrong network under the right name)
    meta = {"meta": json.dumps(extractor.meta), "weights_sha256": tensors_digest(tensors)}
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


SIDE = schema.Int(1, 4096)
EXTRACTOR_META = schema.Obj({
    "format": schema.Str(100, FORMAT), "id": schema.Str(300), "recipe": schema.Obj({}),
    "geometry": schema.Obj({"channels": SIDE, "height": SIDE, "width": SIDE}, {"num_classes": schema.Int(0, 10_000)},
                           extra=False),
    "num_classes": schema.Int(1, 10_000), "test_accuracy": schema.Num(0, 1), "train_seconds": schema.Num(0)},
    # what metric JSONs repeat to say how the extractor was made: counts no training could have had are damage too
    {"n_train": schema.Int(1, 10**9), "n_test": schema.Int(0, 10**9), "gentool_version": schema.Str(100),
     "recipe_hash": schema.Str(100), "class_names": schema.List(schema.Str(200), 10_000)})


def load_extractor(path: Path, device: torch.device | str = "cpu", recipe: Recipe | None = None,
                   geometry: Geometry | None = None, ident: str | None = None) -> Extractor:
    """Rebuild an extractor from its file (a cache entry, so it may be damaged: everything is checked): its recipe
    and image geometry (which must be `recipe` and `geometry`, when given, before anything is built) build the
    network, then the weights load (strict; every one finite). Raises ValueError (or OSError, SafetensorError)
    naming what is wrong. `ident`: the id it must have (the cache names its file by it: another data set's file
    copied under this name is not this extractor)."""
    with fileio.regular_path(path, follow=False) as pinned, safe_open(pinned, framework="pt") as f:
        header = f.metadata() or {}
        meta = schema.check(schema.parse(header.get("meta"), "meta"), EXTRACTOR_META, "meta")
        if ident is not None and meta["id"] != ident:
            raise ValueError(f"it is extractor {meta['id'][:80]!r}, not {ident!r} (another data set's or recipe's)")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["recipe"].items()}
        task = fields.get("task", CLASSES)
        if task not in TASKS:
            raise ValueError(f"its recipe's task is not one of {', '.join(TASKS)}")
        # what the metric JSONs say of it must follow from the task it learned: a rotation network has TURNS outputs
        # and no class names, and its kind is the task's (files from before "kind" have none, and are classifiers)
        if meta.get("kind", KIND[CLASSES]) != KIND[task]:
            raise ValueError(f"its kind {str(meta.get('kind'))[:40]!r} is not {KIND[task]!r}, its recipe's task")
        if task == ROTATION and (meta["num_classes"] != TURNS or meta.get("class_names")):
            raise ValueError(f"it learned rotations, yet names {meta['num_classes']} classes, not {TURNS} turns")
        if recipe is not None and Recipe(**fields) != recipe:
            raise ValueError(f"its recipe is not recipe {recipe.hash}")
        saved = Geometry(**meta["geometry"])
        if geometry is not None and saved.shape != geometry.shape:
            raise ValueError(f"it is for {dims(saved.shape)} images, not {dims(geometry.shape)}")
        problem = class_names_problem(meta.get("class_names") or [], meta["num_classes"])
        if problem:
            raise ValueError(problem)
        net = FeatureNet(Recipe(**fields), saved, meta["num_classes"])
        expected = net.state_dict()
        odd = sorted(set(f.keys()) ^ set(expected))
        if odd:
            raise ValueError(f"tensor {odd[0]} is {'missing' if odd[0] in expected else 'not an extractor tensor'}")
        weights = {}
        for k in expected:
            weights[k] = f.get_tensor(k)
            if weights[k].is_floating_point() and not bool(torch.isfinite(weights[k]).all()):
                raise ValueError(f"tensor {k} holds NaN or infinite values")
            if k.endswith("running_var") and not bool((weights[k] > 0).all()):  # a variance: eigh failed on -1
                raise ValueError(f"tensor {k} holds variances that are not above 0")
    if not isinstance(header.get("weights_sha256"), str):  # a missing digest checks nothing: damage, as a wrong one
        raise ValueError("its header has no weights_sha256, the digest its weights are checked against")
    if tensors_digest(weights) != header["weights_sha256"]:
        raise ValueError("its weights are not those written with its metadata (their SHA-256 differs)")
    net.load_state_dict(weights)
    return Extractor(net.to(device).eval(), meta)
