"""The file formats `gentool export` writes, each as a pair: write a module to a path, and load that file back to
run it in its own runtime (the parity check runs what was written, not the module it was traced from).

Both formats use torch's tracer (torch.jit.trace; torch.onnx.export with dynamo=False, which runs it). Measured on
this 2-core host (torch 2.14, a 1-step MNIST flow at width 0.25): the TorchScript-based ONNX exporter took 10 s, the
torch.export-based one (dynamo=True, which also needs onnxscript) 48 s, and the same gap held for every family; a
tracer also takes a sampler's Python loop and schedule as constants, which is what an unrolled few-step sampler is.
The models' samplers avoid len(tensor) and chunk() on the batch, so both exporters keep the batch size free.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gentool.errors import UsageError

INPUTS, OUTPUT = ("z", "labels"), "images"
BATCH = "N"


class Sampler(nn.Module):
    """A model's sampler with fixed settings as one module: (latent codes[, class labels]) → images in [0, 1]."""

    def __init__(self, model, settings: dict):
        super().__init__()
        self.model, self.settings = model, dict(settings)
        self.generator = torch.Generator().manual_seed(0)  # never drawn from: a deterministic sampler is required

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.sample_batch(z, labels, self.settings, self.generator).float()


@contextlib.contextmanager
def quiet():
    """The tracers warn about every Python value they take as a constant: here that is the point (the step count,
    the schedule), so their warnings would only bury gentool's one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def write_onnx(module: Sampler, args: tuple, path: Path) -> dict:
    """Trace `module` on `args` into an ONNX file at `path` with a free batch axis; the opset used is returned."""
    import onnx

    names = list(INPUTS[:len(args)])
    axes = {name: {0: BATCH} for name in [*names, OUTPUT]}
    with quiet():
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=names, output_names=[OUTPUT],
                          dynamic_axes=axes)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {"exporter": f"torch.onnx.export (TorchScript-based) from torch {torch.__version__}", "opset": opset}


def run_onnx(path: Path, args: tuple) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {name: a.numpy() for name, a in zip(INPUTS, args)})[0]


def write_torchscript(module: Sampler, args: tuple, path: Path) -> dict:
    with quiet():
        torch.jit.save(torch.jit.trace(module, args, check_trace=False), str(path))
    return {"exporter": f"torch.jit.trace from torch {torch.__version__}"}


def run_torchscript(path: Path, args: tuple) -> np.ndarray:
    with quiet(), torch.no_grad():
        return torch.jit.load(str(path), map_location="cpu")(*args).numpy()


def runtime_version(fmt: str) -> str:
    if fmt == "onnx":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    return f"torch {torch.__version__}"


WRITERS = {"onnx": (write_onnx, run_onnx), "torchscript": (write_torchscript, run_torchscript)}


def require(fmt: str, packages: tuple[str, ...]) -> None:
    """One line saying how to install what --format needs, when it is missing."""
    import importlib.util

    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise UsageError(f"--format {fmt}: needs {' and '.join(missing)}; install them with "
                         f"pip install 'gentool[export]' (or pip install {' '.join(missing)})")
