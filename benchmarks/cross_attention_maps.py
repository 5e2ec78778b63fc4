"""Which word each pixel reads: the cross-attention maps of a text-conditioned diffusion run, over the sampling
steps (docs/text.md, Cross-attention maps).

    python benchmarks/cross_attention_maps.py RUN --prompt "a thick, right-leaning seven" --out maps.png
        [--seeds 4] [--steps 20] [--cfg 3] [--stages 3]

Samples `--seeds` images of the prompt (DPM-Solver++, the given steps and guidance) with every cross-attention
layer keeping its weights (`CrossAttention.keep_maps`), and records them at every network call (the conditional
half of each guided batch). A token's map is its attention weight at each position of the feature map, averaged
over heads, over the layers of the finest attention resolution, and over the steps of one stage of sampling
(early, middle, late: `--stages` equal parts). The figure: one row per stage, the first seed's final sample, then
one map per word of the prompt (and <eos>), upsampled to the image, scaled to its own maximum and drawn over it;
each title gives the word's share of the attention (its mean weight over the positions). For a U-Net denoiser (ddpm,
or ldm's U-Net in the latents); prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genzoo.config import apply_overrides
    from genzoo.models.unet import CrossAttention
    from genzoo.runs import open_run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--prompt", default="a thick, right-leaning seven")
    p.add_argument("--out", default="cross-attention-maps.png")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--stages", type=int, default=3)
    a = p.parse_args()
    run = open_run(a.run_dir)
    model = run.model
    if getattr(model, "text_encoder", None) is None:
        raise SystemExit(f"error: {a.run_dir} is not text-conditioned (no model.text_encoder)")
    crosses = [m for m in model.modules() if isinstance(m, CrossAttention)]
    if not crosses:
        raise SystemExit(f"error: {a.run_dir} has no U-Net cross-attention layers (a DiT denoiser?)")
    for m in crosses:
        m.keep_maps = True
    n = a.seeds
    calls = []  # per network call: one (n, HW, L) map per cross-attention layer, the mean over heads

    def record(_module, _inputs, _output):
        calls.append([m.maps[:n].mean(1) for m in crosses])  # conditional half, mean over heads: (n, HW, L) each

    net = model.diffusion.net if hasattr(model, "diffusion") else model.net
    hook = net.register_forward_hook(record)
    apply_overrides(run.config, ["sampler.name=dpm++2m", f"sampler.steps={a.steps}", f"sampler.cfg_scale={a.cfg:g}"])
    tokens = model.text_encoder.tokenizer.encode(a.prompt)[None].expand(n, -1)  # (n, L)
    images = model.sample(n, text=tokens, generator=torch.Generator().manual_seed(0), **vars(run.config.sampler))
    hook.remove()
    tok = model.text_encoder.tokenizer
    ids = tokens[0].tolist()
    keep = [i for i, t in enumerate(ids) if t != tok.pad and t != tok.bos]  # the words and <eos>
    words = [tok.vocab[ids[i]] for i in keep]
    hw = max(m.shape[1] for m in calls[0])  # the finest attention resolution's H W
    finest = [k for k, m in enumerate(calls[0]) if m.shape[1] == hw]
    side = int(hw ** 0.5)
    per_stage = torch.tensor_split(torch.arange(len(calls)), a.stages)
    H, W = images.shape[-2:]
    fig, axes = plt.subplots(a.stages, len(words) + 1, figsize=(1.5 * (len(words) + 1), 1.6 * a.stages + 0.5),
                             squeeze=False)
    img = images[0].mean(0).clamp(-1, 1).add(1).div(2)  # (H, W) in [0, 1]
    for row, idx in enumerate(per_stage):
        maps = torch.stack([calls[i][k] for i in idx.tolist() for k in finest]).mean(0)[0]  # (HW, L), first seed
        axes[row, 0].imshow(img, cmap="gray")
        axes[row, 0].set_title("the sample", fontsize=8)
        axes[row, 0].set_ylabel(f"steps {idx[0] + 1}-{idx[-1] + 1}", fontsize=8)
        for col, (i, w) in enumerate(zip(keep, words), start=1):
            m = maps[:, i].view(1, 1, side, side)
            up = F.interpolate(m, size=(H, W), mode="bilinear", align_corners=False)[0, 0]
            axes[row, col].imshow(img, cmap="gray")
            axes[row, col].imshow(up / up.max(), cmap="inferno", alpha=0.6, vmin=0, vmax=1)  # each map to its max
            axes[row, col].set_title(f"{w}: {maps[:, i].mean():.0%}", fontsize=8)  # its share of the attention
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    rest = 1 - float(maps[:, keep].mean(0).sum())  # <bos> and the padding positions (the keys are not masked)
    fig.suptitle(f'"{a.prompt}": cross-attention at {side}x{side}, stages of {len(calls)} network calls, cfg {a.cfg:g}; '
                 f"<bos> and padding take the other {rest:.0%} (last stage)", fontsize=9)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(json.dumps({"run": a.run_dir, "prompt": a.prompt, "words": words, "resolution": side,
                      "layers": len(finest), "calls": len(calls), "out": a.out}))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
