"""Written with gentool main @5730eab (before gentool.history) for tests/test_checkpoint_compat.py: a VAE run stopped
by its time budget after the first of the 4 steps of epoch 1, as that release wrote it (last.safetensors holds the
epoch's running sums in `state.partial`, metrics.json the epoch's partial record); and expected.json, what that
release's `--resume` of it to 2 epochs ended with (its records, and a digest of every tensor of its last checkpoint).

    PYTHONPATH=/path/to/old/checkout python tests/data/make_partial_run.py tests/data/partial_run
"""
import hashlib, json, shutil, sys, tempfile
from pathlib import Path
import torch
from safetensors.torch import load_file
from gentool.train import TrainOptions, train

RUN = dict(model="vae", data="mnist-sample", limit=64, batch_size=16, width=0.02, latent_dim=2, seed=0,
           precision="fp32", epochs=2, sample_every=0, checkpoint_every=0, threads=1)
TIMING = ("seconds", "images_per_second")  # the only fields that differ between two runs of the same steps


def summary(path) -> dict:
    """Per tensor, [sum, sum of squares] in float64: compared within a tolerance, since fp32 kernels round
    differently on different CPUs (the digest matches only on the host that wrote it)."""
    tensors = load_file(str(path))
    return {k: [float(v.double().sum()), float(v.double().square().sum())] for k, v in sorted(tensors.items())}


def digest(path) -> str:
    """sha256 over every tensor of a checkpoint (weights, optimizer state), by name, as raw bytes."""
    tensors, h = load_file(str(path)), hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    out = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        train(TrainOptions(**RUN, max_minutes=1e-9, out=f"{tmp}/run"))
        out.mkdir(parents=True, exist_ok=True)
        for name in ("last.safetensors", "metrics.json"):
            shutil.copyfile(f"{tmp}/run/{name}", out / name)
        train(TrainOptions(resume=f"{tmp}/run", epochs=2, threads=1))
        records = json.loads(Path(f"{tmp}/run/metrics.json").read_text())["epochs"]
        expected = {"records": [{k: v for k, v in r.items() if k not in TIMING} for r in records],
                    "digest": digest(f"{tmp}/run/last.safetensors"), "tensors": summary(f"{tmp}/run/last.safetensors")}
        (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
