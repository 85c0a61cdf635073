"""How much of a run its per-epoch sample grids may take. A grid is a full sampler run over 64 codes (a guided
16-step flow: 2,048 network evaluations), so on a small data set, whose epochs take a second, the grids took about
80 % of a 3-minute `--max-minutes` (a walk on a 100-image folder). Past a grace of GRACE_SECONDS of grids, an epoch's
grid is skipped while grids have taken more than GRID_SHARE of the run's time; the last epoch's grid is always
drawn, and so is a skipped one when the run stops after it (a budget or a signal), so the newest weights always
have their grid."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from gentool import rundir
from gentool.guards import preserved_rng
from gentool.images import make_grid, to_uint8, write_png

GRID = 8  # fixed-noise sample grids are GRID × GRID
GRID_SHARE = 0.25
GRACE_SECONDS = 30.0  # below this, every grid asked for is drawn: a run of normal epochs never skips one


@dataclass
class GridShare:
    """The grids' time in this process's run, and the last epoch whose grid was skipped."""

    begun: float = field(default_factory=lambda: time.monotonic())
    seconds: float = 0.0
    skipped: int | None = None
    said: bool = False  # whether the run was told grids are being skipped

    def due(self, epoch: int, every: int | None, last: int) -> bool:
        """Whether `epoch`'s grid is drawn (`every`: --sample-every; `last`: --epochs)."""
        if not every or (epoch % every and epoch != last):
            return False
        if epoch == last or self.seconds < GRACE_SECONDS:
            return True
        return self.seconds <= GRID_SHARE * (time.monotonic() - self.begun)

    def skip(self, epoch: int) -> str | None:
        """Record a skipped grid; the first time, the line that says so."""
        self.skipped = epoch
        if self.said:
            return None
        self.said = True
        return (f"note: sample grids have taken {self.seconds:.0f} s of this run's "
                f"{time.monotonic() - self.begun:.0f}; from epoch {epoch} on, an epoch's grid is drawn only while "
                f"they take at most {GRID_SHARE:.0%} of it (the last epoch's always; --sample-every K to choose)")

    @contextlib.contextmanager
    def timed(self):
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds += time.monotonic() - start


def fixed_noise_grid(session) -> np.ndarray:
    """The run's GRID × GRID grid as its weights (averaged, when kept) draw it now, from the run's seed: every grid
    of a run starts from the same noise, so they show one set of samples changing."""
    with session.sampling() as model:
        images = model.generate(GRID * GRID, torch.Generator().manual_seed(session.opts.seed),
                                model.spread_labels(GRID * GRID), settings=session.sample_settings)
    return make_grid(to_uint8(images), GRID, GRID)


def draw_latest_grid(session) -> None:
    """samples/latest.png: the fixed-noise grid as the weights draw it now (none with --sample-every 0)."""
    if session.opts.sample_every:
        with preserved_rng():
            grid = fixed_noise_grid(session)
        write_png(session.run_dir / rundir.SAMPLES / rundir.LATEST_GRID, grid)
