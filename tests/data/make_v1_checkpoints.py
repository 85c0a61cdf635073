"""Written with gentool main @6431a1a (checkpoint format 1) for tests/test_checkpoint_compat.py."""
import sys, numpy as np, torch
from gentool.checkpoint import save_checkpoint, load_checkpoint
from gentool.data import Geometry
from gentool.ema import EMA
from gentool.images import to_uint8
from gentool.registry import get_entry
out = sys.argv[1]
expected = {}
for name, kw, with_optim in [("vae", dict(latent_dim=3, width=0.01), False), ("wgan-gp", dict(latent_dim=4, width=0.05), True)]:
    geo = Geometry(1, 28, 28, 10)
    cls = get_entry(name).cls
    torch.manual_seed(0)
    m = cls(cls.config_class.create(geo, **kw))
    opt = m.build_optimizers()
    g = torch.Generator().manual_seed(1)
    x = m.normalize(torch.randint(0, 256, (8, 1, 28, 28), generator=g, dtype=torch.uint8))
    ema = EMA(m, 0.9)
    for s in range(5):
        m.train_step(x, torch.arange(8) % 10, opt, s)
        ema.update(m)
    path = f"{out}/v1_{name}.safetensors"
    save_checkpoint(path, m, opt if with_optim else {}, {"epoch": 1, "step": 5, "seed": 0, "options": {"data": "mnist"}},
                    {"name": "mnist", "source": "mnist", "geometry": geo.to_dict(), "pixel_range": list(m.pixel_range),
                     "class_names": [str(i) for i in range(10)]}, "built-in", ema)
    expected[name.replace("-", "_")] = to_uint8(load_checkpoint(path).model.generate(4, torch.Generator().manual_seed(0)))
np.savez_compressed(f"{out}/v1_samples.npz", **expected)
