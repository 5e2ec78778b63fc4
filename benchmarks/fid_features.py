"""FID feature extraction: genzoo's Inception vs torchmetrics' `FrechetInceptionDistance` extractor, same weights.

    python benchmarks/fid_features.py [--n 32] [--batch-size 16] [--rounds 3] [--size 32] [--device cpu]

Both sides take the same uint8 (N, 3, size, size) images and the same weights: torchmetrics is given a
torch-fidelity-format state dict (ours, plus an unused zero `fc`) through `feature_extractor_weights_path`,
so nothing downloads, and `antialias=False`, which selects torch-fidelity's TF1 bilinear resize (the FID
protocol; torchmetrics' default `antialias=True` is a different resize). Runs alternate (ours, theirs,
theirs, ours, ...) in one process; prints one JSON object with images/s (median over rounds), the ratio
ours / theirs, and the largest feature difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from genzoo.evaluation.inception import load_inception


def torchmetrics_extractor(ours, device):
    """torchmetrics' FID feature extractor (NoTrainInceptionV3, pool3) loaded with our network's weights."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    state = {**ours.net.state_dict(), "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights-inception-2015-12-05.pth"
        torch.save({k: v.cpu() for k, v in state.items()}, path)
        fid = FrechetInceptionDistance(feature=2048, antialias=False, feature_extractor_weights_path=str(path))
    return fid.inception.to(device)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=32, help="images per timed run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=32, help="image side before the resize to 299")
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default=None, help="FID Inception weights (default: genzoo's lookup order)")
    a = p.parse_args()

    ours = load_inception(a.weights, device=a.device)
    theirs_net = torchmetrics_extractor(ours, a.device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (a.n, 3, a.size, a.size), dtype=torch.uint8, generator=g)

    @torch.inference_mode()
    def theirs(x):
        out = [theirs_net(x[i:i + a.batch_size].to(a.device)) for i in range(0, len(x), a.batch_size)]
        return torch.cat(out).double().cpu().numpy()

    runs = {"genzoo": lambda x: ours.features(x, batch_size=a.batch_size), "torchmetrics": theirs}
    for f in runs.values():  # warm-up (oneDNN / cuDNN algorithm choice), untimed
        f(images[:2])
    speed, feats = {k: [] for k in runs}, {}
    for r in range(a.rounds):
        for name in (runs if r % 2 == 0 else reversed(list(runs))):
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            feats[name] = runs[name](images)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            speed[name].append(a.n / (time.perf_counter() - t))

    ours_ips, theirs_ips = statistics.median(speed["genzoo"]), statistics.median(speed["torchmetrics"])
    print(json.dumps({
        "benchmark": "fid_features", "device": str(ours.device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "n": a.n, "batch_size": a.batch_size, "rounds": a.rounds,
        "input": f"uint8 random (N, 3, {a.size}, {a.size})", "weights": ours.source, "weights_sha256": ours.sha256,
        "torchmetrics_resize": "antialias=False (torch-fidelity's TF1 bilinear)",
        "images_per_s": {"genzoo": round(ours_ips, 3), "torchmetrics": round(theirs_ips, 3)},
        "rounds_images_per_s": {k: [round(v, 3) for v in vs] for k, vs in speed.items()},
        "ratio_genzoo_over_torchmetrics": round(ours_ips / theirs_ips, 3),
        "max_abs_feature_diff": float(np.abs(feats["genzoo"] - feats["torchmetrics"]).max()),
        "max_abs_feature": float(np.abs(feats["genzoo"]).max()),
    }, indent=2))


if __name__ == "__main__":
    main()
