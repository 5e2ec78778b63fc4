"""ControlNet on a finished run: how closely its samples follow controls made from test images, against the base
model's samples for the same labels (the chance level), and what the control costs in FD and in requested-class
accuracy (docs/adapters.md).

    python benchmarks/controlnet.py BASE_RUN --out runs/controlnet [--controls edges,low-res,masked] [--n 1000]

For each control kind: trains `genzoo train controlnet --preset quick --set model.base=BASE model.control=KIND`
into OUT/KIND (reused when finished; its wall seconds are printed), takes the first n test images (a fixed
permutation) and their labels, computes their controls, and samples the controlnet (scale 1) and the base with
the same labels and noise. Prints one JSON line per run: control fidelity (evaluation/control.py) for both,
FD-<domain classifier> and requested-class accuracy for both. Writes OUT/KIND.png: rows of 10 columns, the
control, the controlled sample and the base sample for the same label.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def train(base: Path, kind: str, out: Path, extra: list[str]) -> dict:
    run = out / kind
    if (run / "metrics.jsonl").is_file() and '"event": "end"' in (run / "metrics.jsonl").read_text():
        return {"run": run.name, "reused": True}
    argv = ["train", "controlnet", "--preset", "quick", "--out", str(run), "--no-progress", "--set",
            f"model.base={base}", f"model.control={kind}", *extra]
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "genzoo", *argv], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)  # JSON only
    return {"run": run.name, "command": "genzoo " + " ".join(argv), "wall_s": round(time.time() - t0, 1)}


def test_images(dataset: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test images of the harness's fixed permutation, in [-1, 1], and their labels."""
    from genzoo import datasets
    from genzoo.evaluation.harness import REFERENCE_SEED

    data = datasets.load(dataset, "test")
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(REFERENCE_SEED))[:n]
    return data.images[idx].float() / 127.5 - 1, data.labels[idx]


def main() -> None:
    from genzoo.evaluation import control as C
    from genzoo.evaluation.grid import save_grid
    from genzoo.evaluation.harness import evaluate_images, generate
    from genzoo.models import controlnet
    from genzoo.runs import open_run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", help="a finished class-conditional ddpm or ldm run (U-Net)")
    p.add_argument("--out", default="runs/controlnet")
    p.add_argument("--controls", default=",".join(controlnet.CONTROLS))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="extra overrides of the trainings")
    a = p.parse_args()
    base, out = Path(a.base).resolve(), Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    kinds = a.controls.split(",")
    for kind in kinds:
        print(json.dumps(train(base, kind, out, a.set)), flush=True)

    base_run = open_run(base)
    knobs = vars(base_run.config.sampler)
    dataset = base_run.config.data.dataset
    images, labels = test_images(dataset, a.n)
    t0 = time.time()
    plain, _, _ = generate(base_run.model, a.n, seed=0, batch_size=a.batch_size, knobs=knobs, labels=labels)
    base_scores = evaluate_images(plain, dataset=dataset, metrics=("fd", "acc"), labels=labels)
    base_s = time.time() - t0
    for kind in kinds:
        run = open_run(out / kind)
        controls = controlnet.control_image(kind, images)
        t0 = time.time()
        steered, _, _ = generate(run.model, a.n, seed=0, batch_size=a.batch_size, knobs=knobs, labels=labels,
                                 control=controls)
        scores = evaluate_images(steered, dataset=dataset, metrics=("fd", "acc"), labels=labels)
        f_steered = C.fidelity(kind, steered.float() / 127.5 - 1, controls)
        f_base = C.fidelity(kind, plain.float() / 127.5 - 1, controls)
        print(json.dumps({"control": kind, "run": str(out / kind), "step": run.step, "n": a.n,
                          "sampler": dict(knobs), "fidelity_protocol": f_steered["protocol"],
                          "fidelity": round(f_steered["value"], 4), "fidelity_base": round(f_base["value"], 4),
                          "fd": round(scores["fd"]["value"], 2), "fd_base": round(base_scores["fd"]["value"], 2),
                          "acc": round(scores["label_accuracy"]["value"], 4),
                          "acc_base": round(base_scores["label_accuracy"]["value"], 4),
                          "eval_s": round(time.time() - t0 + base_s, 1)}), flush=True)
        cols = 10
        rows = [controls[:cols, :1].expand(-1, images.shape[1], -1, -1), steered[:cols].float() / 127.5 - 1,
                plain[:cols].float() / 127.5 - 1]
        save_grid(torch.cat(rows), out / f"{kind}.png", nrow=cols)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
