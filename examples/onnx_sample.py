"""Draw images from a file written by `gentool export` with onnxruntime and numpy only (Pillow saves the grid).

    python examples/onnx_sample.py runs/flow/last.onnx grid.png [N] [CLASS]
"""
import json, sys
import numpy as np, onnxruntime as ort
from PIL import Image

path, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 64
spec = json.load(open(path + ".json"))  # input/output shapes, value range, the model it came from
feed = {"z": np.random.default_rng(0).standard_normal((n, *spec["inputs"]["z"]["shape"][1:]), dtype=np.float32)}
if "labels" in spec["inputs"]:  # a class-conditional model: one class per sample
    feed["labels"] = np.full(n, int(sys.argv[4]) if len(sys.argv) > 4 else 0, dtype=np.int64)
images = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)[0]  # N×C×H×W in [0, 1]
rows = int(n ** 0.5)
grid = images[:rows * (n // rows)].reshape(rows, n // rows, *images.shape[1:]).transpose(0, 3, 1, 4, 2)
grid = (grid.reshape(rows * images.shape[2], -1, images.shape[1]) * 255).round().astype(np.uint8)
Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(out)
print(f"{n} samples of {spec['model']} ({spec['sampling']}) -> {out}")
