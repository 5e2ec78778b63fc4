"""Classifier-free guidance against classifier guidance on the same model, as GLIDE compared them (Nichol et al.
2022, §3 and Fig. 4): FD against requested-class accuracy (and against the zoo's CLIP score for a text model) as
each guidance scale grows (docs/text.md, Guidance).

    python benchmarks/guidance_tradeoff.py RUN --classifier CLF_RUN --out docs/guidance-tradeoff.png \
        [--cfg 1,1.5,2,3,4] [--cg 0.5,1,2,4,8] [--n 500] [--sampler "name=dpm++2m steps=20"]
    python benchmarks/guidance_tradeoff.py RUN --train-classifier CLF_RUN ...    # train the classifier first

RUN is a class- or text-conditional pixel diffusion run (ddpm, dit); CLF_RUN a noisy-classifier run on the same
dataset and process (`genzoo train noisy-classifier --dataset mnist --preset quick --out CLF_RUN`; with
--train-classifier this script runs that command, with RUN's T and schedule, unless CLF_RUN is finished).
Each point is `genzoo eval`'s harness (EMA weights, seed 0, labels cycling through the classes, or the
evaluation prompts of a text run) with the sampler and one guidance setting: the classifier-free curve is
sampler.cfg_scale = c (no classifier), the classifier curve sampler.classifier_scale = s at cfg_scale 1 (the
conditional model as trained); the two curves share their first point (cfg 1, classifier 0). Prints one JSON line
per point and draws both curves in one figure (FD against accuracy; a text run adds FD against CLIP score).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from text_to_image import train  # benchmarks/text_to_image.py: `genzoo train` unless finished, timed


def train_classifier(run_dir: Path, out: Path) -> dict:
    """`genzoo train noisy-classifier --preset quick` on RUN's dataset and process, unless it finished."""
    from genzoo.registry import load_config_json

    cfg = load_config_json((run_dir / "config.json").read_text())
    return train(out.name, "noisy-classifier", out.parent, f"model.T={cfg.model.T}",
                 f"model.schedule={cfg.model.schedule}", dataset=cfg.data.dataset)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genzoo.evaluation.harness import evaluate_run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--classifier", help="a finished noisy-classifier run")
    g.add_argument("--train-classifier", metavar="CLF_RUN", help="train the noisy classifier there first")
    p.add_argument("--out", default="guidance-tradeoff.png", help="the figure (PNG)")
    p.add_argument("--cfg", default="1,1.5,2,3,4", help="classifier-free guidance scales (the first: 1)")
    p.add_argument("--cg", default="0.5,1,2,4,8", help="classifier guidance scales (0 is the shared first point)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--sampler", default="name=dpm++2m steps=20", help="sampler knobs of every point")
    p.add_argument("--batch-size", type=int, default=50)
    a = p.parse_args()
    run_dir = Path(a.run_dir)
    clf = Path(a.classifier or a.train_classifier).resolve()
    if a.train_classifier:
        print(json.dumps(train_classifier(run_dir, clf)), flush=True)
    sampler = a.sampler.split()
    points = ([("classifier-free", "cfg_scale", float(c), []) for c in a.cfg.split(",")] +
              [("classifier", "classifier_scale", float(s), [f"classifier={clf}", "cfg_scale=1"])
               for s in a.cg.split(",")])
    rows = []
    for curve, knob, value, extra in points:
        t0 = time.time()
        r = evaluate_run(run_dir, n=a.n, metrics=("fd", "acc"), batch_size=a.batch_size,
                         sampler_overrides=[*sampler, *extra, f"{knob}={value:g}"])
        m = {k: v["value"] for k, v in r["metrics"].items() if isinstance(v, dict) and "value" in v}
        row = {"run": str(run_dir), "curve": curve, knob: value, "n": a.n, "sampler": sampler, **m,
               "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    text = "clip_score" in rows[0]
    fig, axes = plt.subplots(1, 2 if text else 1, figsize=(10 if text else 5.2, 3.8), squeeze=False)
    for ax, x_key, x_label in zip(axes[0], ("label_accuracy", "clip_score"),
                                  ("requested class (domain classifier)", "CLIP score (the zoo's own)")):
        for curve, knob, marker in (("classifier-free", "cfg_scale", "o-"), ("classifier", "classifier_scale", "s-")):
            pts = [r for r in rows if r["curve"] == curve]
            if curve == "classifier":  # the shared first point: the conditional model (cfg 1, no classifier)
                pts = [r for r in rows if r["curve"] == "classifier-free" and r["cfg_scale"] == 1.0][:1] + pts
            ax.plot([r[x_key] for r in pts], [r["fd"] for r in pts], marker, label=f"{curve} guidance")
            for r in pts:
                ax.annotate(f"{r.get(knob, 0):g}", (r[x_key], r["fd"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
        ax.set(xlabel=x_label, ylabel="FD (LeNet) ↓", yscale="log")
        ax.legend(fontsize=8)
    fig.suptitle(f"{run_dir.name}: guidance trade-offs (n = {a.n}, {' '.join(sampler)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(json.dumps({"figure": a.out}), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
