"""PixelCNN sampling images/s of this checkout against the same file at another revision, side by side.

    python benchmarks/pixelcnn_cache.py [--run RUN] [--against REV] [--n 500] [--batch 500] [--cfg-scale 2]

Loads `models/pixelcnn.py` as it was at --against (git show) beside the current one, draws the same n samples
(labels cycling through the classes, the same seed per batch) with both `sample` methods on the same weights,
alternating over --repeats rounds (these machines are noisy), checks that the samples are identical, and prints
one JSON line with the median images/s of each and their ratio. Without --run a freshly initialised quick-preset
model is timed (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def old_module(rev: str):
    """models/pixelcnn.py at `rev`, importable beside the current one."""
    source = subprocess.run(["git", "show", f"{rev}:models/pixelcnn.py"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    path = Path(tempfile.mkdtemp()) / "pixelcnn_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("pixelcnn_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pixelcnn_at_rev"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    from genzoo.evaluation.harness import dataset_shape
    from genzoo.registry import FAMILIES, resolve_config
    from genzoo.runs import open_run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None)
    p.add_argument("--against", default="ec1879c", help="the revision to compare with (before the column window)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--cfg-scale", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.run:
        model = open_run(a.run, device="cpu").model
    else:
        cfg = resolve_config("pixelcnn", dataset="mnist", preset="quick")
        torch.manual_seed(0)
        model = FAMILIES["pixelcnn"].model(cfg.model, image_shape=dataset_shape("mnist", cfg.data), num_classes=10).eval()
    samplers = {"current": type(model).sample, a.against: old_module(a.against).PixelCNN.sample}
    rates: dict[str, list[float]] = {k: [] for k in samplers}
    for _ in range(a.repeats):
        outs = {}
        for name, sample in samplers.items():
            t0, chunks = time.perf_counter(), []
            for i in range(0, a.n, a.batch):
                b = min(a.batch, a.n - i)
                chunks.append(sample(model, b, labels=torch.arange(i, i + b) % 10,
                                     generator=torch.Generator().manual_seed(i), cfg_scale=a.cfg_scale))
            rates[name].append(a.n / (time.perf_counter() - t0))
            outs[name] = torch.cat(chunks)
        same = torch.equal(*outs.values())
        if not same:
            raise SystemExit("the two revisions drew different samples")
    med = {k: round(statistics.median(v), 2) for k, v in rates.items()}
    print(json.dumps({"benchmark": "pixelcnn_cache", "run": a.run or "quick preset, initialised", "n": a.n,
                      "batch": a.batch, "cfg_scale": a.cfg_scale, "threads": a.threads, "repeats": a.repeats,
                      "img_per_s": med, "ratio_current_to_against": round(med["current"] / med[a.against], 3),
                      "same_samples": True, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
