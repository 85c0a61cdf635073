"""Written with gentool main @350820d (before gentool.history) for tests/test_checkpoint_compat.py: a VAE run stopped
by its time budget after the first of the 4 steps of epoch 1, as the release wrote it (last.safetensors holds the
epoch's running sums in `state.partial`, metrics.json the epoch's partial record).

    PYTHONPATH=/path/to/old/checkout python tests/data/make_partial_run.py MNIST_DATA_DIR tests/data/partial_run
"""
import shutil, sys, tempfile
from pathlib import Path
from gentool.train import TrainOptions, train
data_dir, out = sys.argv[1], Path(sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    train(TrainOptions(model="vae", data="mnist", data_dir=data_dir, limit=64, batch_size=16, width=0.02, latent_dim=2,
                       seed=0, precision="fp32", epochs=2, sample_every=0, checkpoint_every=0, max_minutes=1e-9,
                       out=f"{tmp}/run"))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("last.safetensors", "metrics.json"):
        shutil.copyfile(f"{tmp}/run/{name}", out / name)
