"""IP-Adapter on a finished text-conditioned run: how closely its samples follow their image prompts (the rank of the
prompt among the gallery by the zoo CLIP's image similarity), against the base model's samples for the same digits
(the chance level); what the image prompt costs in FD and requested-class accuracy; and the image prompt combined
with a text prompt and with a ControlNet (docs/adapters.md).

    python benchmarks/ip_adapter.py TEXT_RUN --out runs/ip [--sources patches,embedding] [--n 1000]
        [--controlnet EDGES_RUN] [--knobs sampler.name=dpm++2m sampler.steps=20 sampler.cfg_scale=4]

First, what the fidelity measure tells apart (one JSON line each): the gallery moved by 1 and 2 pixels, another
test image of the same digit, and for an ldm base its autoencoder's reconstructions (the ceiling). Then, for
each source of image tokens: trains `genzoo train ip-adapter --preset quick --set model.base=TEXT_RUN
model.source=SOURCE` into OUT/SOURCE (reused when finished; its wall seconds are printed). The prompts are the first
n test images of the harness's fixed permutation (the gallery). Prints one JSON line per setting, each with the
prompt's rank, FD, the requested digit (the prompt image's) and the share that has the thickness the text prompts
below ask for:
- `base`: the base run from the text prompt naming each prompt image's digit ("a seven"): the chance level;
- `text`: the base from a text prompt naming the digit and the other end of the prompt image's thickness ("a thick
  seven" for a thin or regular seven, "a thin seven" for a thick one);
- `image`: the image prompt alone (empty text), at lambda `--ip-scale`;
- `image+text`: the image prompt and that text prompt, at lambda `--ip-scale-text`;
- with --controlnet (an edges ControlNet trained on the same base): `control` (the edges of another test image of
  the same digit, text "a seven") and `image+control` (the same edges with the image prompt), scored on edge F1.
Writes OUT/grid.png: one row per prompt; columns: the image prompt, then for each source its sample and its sample
with the text prompt, the base's sample from the text alone, and with --controlnet the control's edges, the
ControlNet's sample and the sample with both the control and the image prompt.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from controlnet import test_images  # noqa: E402  (the same gallery as the ControlNet benchmark)


def train(base: Path, source: str, out: Path, extra: list[str]) -> dict:
    run = out / source
    if (run / "metrics.jsonl").is_file() and '"event": "end"' in (run / "metrics.jsonl").read_text():
        return {"run": run.name, "reused": True}
    argv = ["train", "ip-adapter", "--preset", "quick", "--out", str(run), "--no-progress", "--set",
            f"model.base={base}", f"model.source={source}", *extra]
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "genzoo", *argv], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return {"run": run.name, "command": "genzoo " + " ".join(argv), "wall_s": round(time.time() - t0, 1)}


def other_of_same_digit(labels: torch.Tensor) -> torch.Tensor:
    """(n,) for each image, the index of the next image of the same digit in the gallery (cyclically)."""
    out = torch.arange(len(labels))
    for k in labels.unique():
        idx = torch.nonzero(labels == k).flatten()
        out[idx] = idx.roll(-1)
    return out


def main() -> None:
    from genzoo.config import apply_overrides
    from genzoo.datasets import attributes, captions
    from genzoo.evaluation import control as C
    from genzoo.evaluation.grid import save_grid
    from genzoo.evaluation.harness import evaluate_images, generate
    from genzoo.models import controlnet, ip_adapter
    from genzoo.runs import open_run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", help="a finished text-conditioned ddpm or ldm run (U-Net, model.text_encoder)")
    p.add_argument("--out", default="runs/ip-adapter")
    p.add_argument("--sources", default="patches", help="image-token sources to train and score (embedding,patches)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--ip-scale", type=float, default=1.0, help="lambda of the image prompt (alone, with a control)")
    p.add_argument("--ip-scale-text", type=float, default=0.5, help="lambda beside a text prompt (the paper: 0.5)")
    p.add_argument("--controlnet", help="an edges controlnet run on the same base: the combined setting")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--knobs", nargs="+", default=["sampler.name=dpm++2m", "sampler.steps=20", "sampler.cfg_scale=4"],
                   metavar="sampler.KEY=VALUE", help="sampling knobs for all (default: DPM-Solver++ 20 steps, guidance 4)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="extra overrides of the trainings")
    a = p.parse_args()
    base, out = Path(a.base).resolve(), Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sources = a.sources.split(",")
    for source in sources:
        print(json.dumps(train(base, source, out, a.set)), flush=True)

    base_run = open_run(base)
    apply_overrides(base_run.config, a.knobs)
    knobs = vars(base_run.config.sampler)
    dataset, clip = base_run.config.data.dataset, base_run.model.text_encoder
    tokenize = clip.tokenizer.encode_batch
    gallery, labels = test_images(dataset, a.n)
    thick = attributes.measure(dataset, ((gallery + 1) * 127.5).round().to(torch.uint8), only=("thickness",))
    want = torch.where(thick["thickness"] == 2, 0, 2)  # the other end of each prompt's thickness
    words = captions.SYNONYMS["thickness"]
    digit_prompts = [f"a {captions.DIGITS[y]}" for y in labels.tolist()]
    thickness_prompts = [f"a {words[w][0]} {captions.DIGITS[y]}" for w, y in zip(want.tolist(), labels.tolist())]
    gen = dict(seed=0, batch_size=a.batch_size, labels=labels)

    def thickness_accuracy(samples: torch.Tensor) -> float:
        return round(float((attributes.measure(dataset, samples, only=("thickness",))["thickness"] == want)
                           .float().mean()), 4)

    def score(setting: str, samples: torch.Tensor, seconds: float, **extra) -> None:
        """One JSON line: the prompt's rank, FD, the prompt's digit, and the thickness the text prompts ask for."""
        s = evaluate_images(samples, dataset=dataset, metrics=("fd", "acc"), labels=labels)
        f = C.image_prompt_fidelity(clip, samples.float() / 127.5 - 1, gallery)
        print(json.dumps({"setting": setting, "n": a.n, "sampler": dict(knobs), **extra,
                          "top5": round(f["value"], 4), "top1": round(f["top1"], 4), "median_rank": f["median_rank"],
                          "fidelity_protocol": f["protocol"], "fd": round(s["fd"]["value"], 2),
                          "acc": round(s["label_accuracy"]["value"], 4),
                          "thickness_accuracy": thickness_accuracy(samples), "sample_s": round(seconds, 1)}), flush=True)

    def timed(model, **kw):
        t0 = time.time()
        samples, _, _ = generate(model, a.n, knobs=knobs | kw.pop("knobs", {}), **gen, **kw)
        return samples, time.time() - t0

    # what the fidelity measure can tell apart: the gallery itself moved by 1 and 2 pixels, another image of the same
    # digit, and (for an ldm) the first stage's reconstructions, the ceiling of a model on it
    references = {"shift_1px": torch.roll(gallery, 1, -1), "shift_2px": torch.roll(gallery, 2, -1),
                  "same_digit_other_image": gallery[other_of_same_digit(labels)]}
    if getattr(base_run.model, "uses_latents", False):
        with torch.no_grad():
            references["autoencoder_reconstruction"] = base_run.model.decode(base_run.model.encode(gallery))
    for name, images in references.items():
        ranks = C.prompt_ranks(clip, images, gallery)
        print(json.dumps({"reference": name, "n": a.n, "top5": round(float((ranks <= 5).float().mean()), 4),
                          "top1": round(float((ranks == 1).float().mean()), 4)}), flush=True)

    plain, s = timed(base_run.model, text=tokenize(digit_prompts))
    score("base", plain, s, prompt="a DIGIT")
    text_only, s = timed(base_run.model, text=tokenize(thickness_prompts))
    score("text", text_only, s, prompt="a THICKNESS DIGIT")
    cols, unit = 8, lambda x: x[:cols].float() / 127.5 - 1  # noqa: E731
    rows = {"prompt": gallery[:cols]}
    for source in sources:
        run = open_run(out / source)
        alone, s = timed(run.model, image_prompt=gallery, knobs={"ip_scale": a.ip_scale})
        score("image", alone, s, source=source, step=run.step, ip_scale=a.ip_scale)
        both, s = timed(run.model, text=tokenize(thickness_prompts), image_prompt=gallery,
                        knobs={"ip_scale": a.ip_scale_text})
        score("image+text", both, s, source=source, prompt="a THICKNESS DIGIT", ip_scale=a.ip_scale_text)
        rows |= {f"{source}": unit(alone), f"{source}+text": unit(both)}
    rows["text"] = unit(text_only)
    if a.controlnet:
        cn = open_run(a.controlnet)
        edges = controlnet.edges(gallery[other_of_same_digit(labels)])
        steered, s = timed(cn.model, text=tokenize(digit_prompts), control=edges)
        score("control", steered, s, controlnet=str(a.controlnet),
              edge_f1=round(C.edge_f1(steered.float() / 127.5 - 1, edges), 4))
        rows |= {"edges": edges[:cols].expand(-1, gallery.shape[1], -1, -1), "control": unit(steered)}
        for source in sources:
            model = ip_adapter.attach(open_run(a.controlnet).model, out / source)  # one adapter per model
            combined, s = timed(model, text=tokenize(digit_prompts), control=edges, image_prompt=gallery,
                                knobs={"ip_scale": a.ip_scale})
            score("image+control", combined, s, source=source, controlnet=str(a.controlnet), ip_scale=a.ip_scale,
                  edge_f1=round(C.edge_f1(combined.float() / 127.5 - 1, edges), 4))
            rows[f"{source}+control"] = unit(combined)
    # one row per prompt, one column per setting
    save_grid(torch.stack(list(rows.values()), 1).flatten(0, 1), out / "grid.png", nrow=len(rows), scale=2)
    print(json.dumps({"grid": str(out / "grid.png"), "columns": list(rows)}), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
