"""Text-to-image at MNIST scale, end to end: the zoo's CLIP, the VAE, a text-conditioned ldm, and the
class-conditional ldm on the same VAE beside it (docs/text.md, Measured).

    python benchmarks/text_to_image.py --out runs/t2i [--n 1000] [--cfg 1,2,3,4] [--denoiser unet]
        [--sampler "name=dpm++2m steps=20"] [--prompt-set heldout|uniform|label] [--ldm-set "model.scale_shift=false"]
        [--ae-set "model.beta=0.01"]

Trains (or reuses, when finished) four quick runs with `genzoo train`, timing each: clip, vae
(model.latent_channels=4 and --ae-set), ldm with model.text_encoder=CLIP (data.captions=true) and ldm with class labels.
Then scores both ldm runs at each guidance scale: the text run from the evaluation prompts
(`evaluation.text.evaluation_prompts`, `--prompt-set`: by default the captions of held-out test images, naming
digit, thickness and slant), the class run from labels. Beside them, the metric's floors at the same n: the
held-out images themselves (`evaluation.text.heldout_images`) and the VAE's reconstructions of them, each
scored against the same train reference. Prints one JSON line per run, per floor and per (run, scale), and
writes OUT/prompt-grid.png: rows = prompts, columns = seeds.
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
PROMPTS = ("a thin, left-leaning seven", "a thick, right-leaning seven", "a thin, upright three",
           "a thick, upright three", "a thick, left-leaning zero", "a thin, right-leaning four",
           "a regular, upright eight", "a thick, right-leaning two")


def train(name: str, family: str, out: Path, *sets: str, preset: str = "quick", dataset: str = "mnist") -> dict:
    """`genzoo train FAMILY --preset PRESET` into out/name unless it finished; its wall seconds."""
    run = out / name
    cmd = [sys.executable, "-m", "genzoo", "train", family, "--dataset", dataset, "--preset", preset, "--out",
           str(run), "--no-progress", *(["--set", *sets] if sets else [])]
    if (run / "checkpoint.pt").is_file() and any('"event": "end"' in line for line in
                                                  (run / "metrics.jsonl").read_text().splitlines()):
        return {"run": name, "reused": True}
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return {"run": name, "command": " ".join(["genzoo", *cmd[3:]]), "wall_s": round(time.time() - t0, 1)}


def main() -> None:
    from genzoo.config import apply_overrides
    from genzoo.contract import Batch
    from genzoo.evaluation import text
    from genzoo.evaluation.grid import save_grid, to_uint8
    from genzoo.evaluation.harness import evaluate_images, evaluate_run, generate
    from genzoo.runs import open_run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/t2i")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--cfg", default="1,2,3,4")
    p.add_argument("--denoiser", default="unet", choices=("unet", "dit"))
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--prompt-set", default="heldout", choices=("heldout", "uniform", "label"),
                   help="the evaluation prompts (evaluation.text.evaluation_prompts): the captions of held-out test "
                        "images (default), every digit and bin combination equally often, or the digit alone")
    p.add_argument("--sampler", default="name=dpm++2m steps=20", help="sampler knobs of every evaluation")
    p.add_argument("--ae-set", default="model.beta=0.01",
                   help="extra overrides of the vae run (default model.beta=0.01: a first stage weighted towards "
                        "reconstruction, as latent diffusion's; '' for the vae quick preset's ELBO, beta 1)")
    p.add_argument("--ldm-set", default="", help="extra overrides of both ldm runs, e.g. 'model.scale_shift=false' (the block before adaGN)")
    a = p.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ae, clip = out / "ae", out / "clip"
    rows = [train("clip", "clip", out), train("ae", "vae", out, "model.latent_channels=4", *a.ae_set.split()),
            train(f"ldm-text-{a.denoiser}", "ldm", out, f"model.autoencoder={ae}", f"model.text_encoder={clip}",
                  "data.captions=true", f"model.denoiser={a.denoiser}", *a.ldm_set.split()),
            train(f"ldm-class-{a.denoiser}", "ldm", out, f"model.autoencoder={ae}", f"model.denoiser={a.denoiser}",
                  *a.ldm_set.split())]
    for row in rows:
        print(json.dumps(row), flush=True)
    metrics = ("fd", "kid")  # KID is unbiased in n; FD's estimate is not
    images, labels = text.heldout_images("mnist", a.n)  # the images the held-out prompts describe
    with torch.no_grad():
        recons = to_uint8(open_run(ae).model.reconstruct(Batch(images.float() / 127.5 - 1, labels)))
    for name, x in (("held-out images", images), ("vae reconstructions", recons)):
        m = evaluate_images(x, dataset="mnist", metrics=metrics)
        print(json.dumps({"floor": name, "n": a.n, **{k: m[k]["value"] for k in metrics}}), flush=True)
    for kind in ("text", "class"):
        run_dir = out / f"ldm-{kind}-{a.denoiser}"
        for s in [float(x) for x in a.cfg.split(",")]:
            t0 = time.time()
            r = evaluate_run(run_dir, n=a.n, metrics=("fd", "kid", "acc"),
                             sampler_overrides=[*a.sampler.split(), f"cfg_scale={s:g}"], batch_size=a.batch_size,
                             prompt_set=a.prompt_set)
            m = {k: v["value"] for k, v in r["metrics"].items() if isinstance(v, dict) and "value" in v}
            print(json.dumps({"run": run_dir.name, "cfg_scale": s, "n": a.n, "prompt_set": a.prompt_set, **m,
                              "eval_s": round(time.time() - t0, 1)}), flush=True)
    run = open_run(out / f"ldm-text-{a.denoiser}")
    apply_overrides(run.config, [f"sampler.{kv}" for kv in a.sampler.split()] + ["sampler.cfg_scale=3"])
    seeds = 8
    tokens = run.model.text_encoder.tokenizer.encode_batch([q for q in PROMPTS for _ in range(seeds)])
    images, _, _ = generate(run.model, len(tokens), seed=0, batch_size=a.batch_size, text=tokens,
                            knobs=vars(run.config.sampler))
    save_grid(images.float() / 127.5 - 1, out / "prompt-grid.png", nrow=seeds)
    print(json.dumps({"grid": str(out / "prompt-grid.png"), "prompts": PROMPTS, "cfg_scale": 3.0}), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
