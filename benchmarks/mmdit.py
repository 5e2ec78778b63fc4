"""SD3's MM-DiT against the cross-attention DiT, at equal training minutes: both text-conditioned rectified flows
in the latents of the same VAE, on the same frozen CLIP (docs/flow.md, MM-DiT).

    python benchmarks/mmdit.py --out runs/mmdit [--clip runs/t2i/clip] [--ae runs/t2i/ae] [--minutes 5]
        [--n 500] [--cfg 2,3] [--steps 10] [--prompt-set heldout|uniform]

Trains (or reuses, when finished) with `genzoo train flow --preset latent-quick --set model.denoiser=dit
model.text_attention=cross|joint ... train.minutes=M`, the clip and vae quick runs first when --clip / --ae are
not given. Scores both at each guidance scale on the evaluation prompts (`evaluation.text.evaluation_prompts`,
--prompt-set: digit, thickness, slant): FD, requested digit, thickness and slant accuracy, the zoo's CLIP score. Prints one
JSON line per run and per (run, scale), and writes OUT/grid-<attention>.png (rows = prompts, columns = seeds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from text_to_image import PROMPTS, train  # benchmarks/text_to_image.py

ATTENTIONS = ("cross", "joint")


def main() -> None:
    from genzoo.config import apply_overrides
    from genzoo.evaluation.grid import save_grid
    from genzoo.evaluation.harness import evaluate_run, generate
    from genzoo.runs import open_run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/mmdit")
    p.add_argument("--clip", help="a finished clip run (default: train one in OUT/clip)")
    p.add_argument("--ae", help="a finished vae run with model.latent_channels=4 (default: train one in OUT/ae)")
    p.add_argument("--minutes", type=float, default=5.0, help="training minutes of each flow (default 5)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--cfg", default="2,3")
    p.add_argument("--steps", type=int, default=10, help="Euler steps of every evaluation (default 10)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--prompt-set", default="heldout", choices=("heldout", "uniform"),
                   help="the evaluation prompts (evaluation.text.evaluation_prompts): the captions of held-out test "
                        "images (default) or every digit and bin combination equally often")
    a = p.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if not a.clip:
        rows.append(train("clip", "clip", out))
    if not a.ae:
        rows.append(train("ae", "vae", out, "model.latent_channels=4"))
    clip, ae = Path(a.clip or out / "clip").resolve(), Path(a.ae or out / "ae").resolve()
    for attention in ATTENTIONS:
        rows.append(train_flow(out, attention, clip, ae, a.minutes))
    for row in rows:
        print(json.dumps(row), flush=True)
    sampler = ["name=euler", f"steps={a.steps}"]
    for attention in ATTENTIONS:
        run_dir = out / f"flow-{attention}"
        run = open_run(run_dir)
        log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        end = next(x for x in reversed(log) if x.get("event") == "end")
        print(json.dumps({"run": run_dir.name, "text_attention": attention, "step": run.step,
                          "train_s": round(end.get("train_s", 0.0), 1), "images_seen": end.get("images_seen"),
                          "parameters": sum(p.numel() for n, p in run.model.named_parameters()
                                            if "text_encoder" not in n and "autoencoder" not in n)}), flush=True)
        for s in [float(x) for x in a.cfg.split(",")]:
            t0 = time.time()
            r = evaluate_run(run_dir, n=a.n, metrics=("fd", "acc"), sampler_overrides=[*sampler, f"cfg_scale={s:g}"],
                             batch_size=a.batch_size, prompt_set=a.prompt_set)
            m = {k: v["value"] for k, v in r["metrics"].items() if isinstance(v, dict) and "value" in v}
            print(json.dumps({"run": run_dir.name, "cfg_scale": s, "n": a.n, "prompt_set": a.prompt_set,
                              "sampler": sampler, **m,
                              "eval_s": round(time.time() - t0, 1)}), flush=True)
        apply_overrides(run.config, [f"sampler.{kv}" for kv in sampler] + [f"sampler.cfg_scale={a.cfg.split(',')[0]}"])
        seeds = 8
        tokens = run.model.text_encoder.tokenizer.encode_batch([q for q in PROMPTS for _ in range(seeds)])
        images, _, _ = generate(run.model, len(tokens), seed=0, batch_size=a.batch_size, text=tokens,
                                knobs=vars(run.config.sampler))
        save_grid(images.float() / 127.5 - 1, out / f"grid-{attention}.png", nrow=seeds)
    print(json.dumps({"grids": [str(out / f"grid-{x}.png") for x in ATTENTIONS], "prompts": PROMPTS}), flush=True)


def train_flow(out: Path, attention: str, clip: Path, ae: Path, minutes: float) -> dict:
    """A text-conditioned latent flow on the DiT, `attention` cross or joint, for `minutes` of training."""
    return train(f"flow-{attention}", "flow", out, f"model.autoencoder={ae}", f"model.text_encoder={clip}",
                 "data.captions=true", "model.denoiser=dit", f"model.text_attention={attention}",
                 f"train.minutes={minutes:g}", preset="latent-quick")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
