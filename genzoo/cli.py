"""The `genzoo` command line (also `python -m genzoo`, and `torchrun ... -m genzoo train ...`).

    genzoo list
    genzoo data prepare NAME [--root DIR] [--download]
    genzoo train FAMILY --dataset NAME [--preset P] [--steps N | --minutes M] [--out RUN_DIR]
                 [--set key=value ...] [--resume]
    genzoo sample RUN_DIR [--n N] [--seed S] [--out FILE.png|FILE.npz] [--set sampler.key=value ...]
                          [--lora ADAPTER[:SCALE] ...] [--merge] [--prompt TEXT | --prompts FILE]
                          [--control FILE | --control-from FILE] [--control-scale S]
                          [--image-prompt FILE] [--ip-adapter ADAPTER] [--ip-scale LAMBDA]
    genzoo eval RUN_DIR [--n N] [--metrics fd,kid,pr,is,bpd] [--out eval.json]
    genzoo eval --samples FILE.npz (--dataset NAME | --reference FILE.npz) [--metrics ...]
    genzoo compare [--dataset NAME] [--families a,b,...] [--preset P] [--minutes-per-family M | --steps N]
                   [--out REPORT_DIR] [--resume] [--eval-n N] [--metrics ...] [--set key=value ...]
    genzoo report RUN_DIR... --out REPORT_DIR [--eval-n N] [--metrics ...]

User errors (unknown names, bad overrides, missing data, corrupt checkpoints) end with a one-line
message and exit status 2; Ctrl-C during training saves a checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import logging
import sys
from pathlib import Path

from genzoo.contract import Component
from genzoo.errors import ConfigError, GenzooError, Interrupted
from genzoo.evaluation.text import PROMPT_SETS
from genzoo.evaluation.harness import METRICS as METRIC_NAMES


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (exit 2), like every other genzoo error."""

    def error(self, message: str):
        self.exit(2, f"genzoo: error: {message} (see `{self.prog} --help`)\n")


def _number(kind: type, lo: float, hi: float = math.inf, *, above: bool = False):
    """An argparse type: a finite `kind` in [lo, hi] ((lo, hi] with above=True)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        low_ok = value > lo if above else value >= lo
        if not (math.isfinite(value) and low_ok and value <= hi):
            span = f"{'(' if above else '['}{_fmt(lo)}, {_fmt(hi)}]"
            raise argparse.ArgumentTypeError(f"must be in {span}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _fmt(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


COUNT = _number(int, 1, 10**7)  # --n, --steps, --grid-n
EVAL_N = _number(int, 2, 10**7)  # a sample set for statistics needs two images
BATCH = _number(int, 1, 65536)
SEED = _number(int, 0, 2**63 - 1)
MINUTES = _number(float, 0, 10**6, above=True)


def _out_file(path: str | Path, suffixes: tuple[str, ...]) -> Path:
    """A file the command will write: the right suffix, not a directory, in a folder we can write."""
    out = Path(path)
    if out.suffix not in suffixes:
        raise ConfigError(f"--out must end in {' or '.join(suffixes)}, not {out.suffix or 'no suffix'!r} ({out})")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name ending in {' or '.join(suffixes)}")
    folder = next((d for d in (out.parent, *out.parent.parents) if d.exists()), Path("."))
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(f"cannot write {out}: {folder} is not a writable folder; choose another --out")
    return out


def _out_dir(path: str | Path) -> Path:
    """A directory the command will fill: not an existing file, in a folder we can write."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory; choose another --out")
    folder = next((d for d in (out, *out.parents) if d.exists()), Path("."))
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"cannot write into {folder}: it is read-only; choose another --out")
    return out


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="genzoo", description="A zoo of image generative models: one trainer, one harness.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("list", help="families, datasets and presets")

    data = sub.add_parser("data", help="prepare datasets offline")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prep = data_sub.add_parser("prepare", help="make a dataset available (offline importers; --download opts in)")
    prep.add_argument("name")
    prep.add_argument("--root", help="data directory (default: $GENZOO_DATA or ~/.cache/genzoo/data)")
    prep.add_argument("--download", action="store_true", help="allow downloading from the internet")

    tr = sub.add_parser("train", help="train a family (torchrun-aware)")
    tr.add_argument("family")
    tr.add_argument("--dataset", help="dataset name (default: the preset's, mnist)")
    tr.add_argument("--preset", default="quick", help="named preset of the family (default: quick)")
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=COUNT, help="optimizer steps (train.steps)")
    budget.add_argument("--minutes", type=MINUTES, help="wall-clock budget; the LR schedule is fitted to it")
    tr.add_argument("--out", help="run directory (default: runs/FAMILY-DATASET)")
    tr.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="overrides, e.g. train.lr=2e-4")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--root", help="data directory")
    tr.add_argument("--download", action="store_true", help="allow downloading the dataset")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    sa = sub.add_parser("sample", help="sample from a trained run (EMA weights)")
    sa.add_argument("run_dir")
    sa.add_argument("--n", type=COUNT, default=64)
    sa.add_argument("--seed", type=SEED, default=0)
    sa.add_argument("--out", help="FILE.png (a grid) or FILE.npz (uint8 images, labels); default RUN_DIR/samples.png")
    sa.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="sampler knobs, e.g. sampler.temperature=0.8")
    sa.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    sa.add_argument("--best", action="store_true", help="use best.pt (lowest in-loop FD) instead of the latest")
    sa.add_argument("--batch-size", type=BATCH, default=256)
    sa.add_argument("--device", default="cpu")
    sa.add_argument("--lora", action="append", default=[], metavar="ADAPTER[:SCALE]",
                    help="add a LoRA adapter (a lora run directory or its adapter.safetensors) trained on RUN_DIR, "
                         "at SCALE (default 1; 0 = the base); repeat to mix several")
    sa.add_argument("--merge", action="store_true", help="merge the --lora adapters into the weights before sampling")
    control = sa.add_mutually_exclusive_group()
    control.add_argument("--control", metavar="FILE", help="a controlnet run: control images as it reads them "
                                                           "(PNG, or NPZ `images` [+ `labels`]), one or one per sample")
    control.add_argument("--control-from", metavar="FILE", help="a controlnet run: images (PNG or NPZ) to compute "
                                                                "the controls from, as in training")
    sa.add_argument("--control-scale", type=float, default=1.0, help="a controlnet run: its residuals' scale "
                                                                      "(default 1; 0 = the base)")
    sa.add_argument("--image-prompt", metavar="FILE", help="an ip-adapter run (or --ip-adapter): image prompts "
                                                            "(PNG, or NPZ `images` [+ `labels`]), one or one per sample")
    sa.add_argument("--ip-adapter", metavar="ADAPTER", help="add an IP-Adapter (an ip-adapter run directory or its "
                                                            "adapter.safetensors) trained on RUN_DIR's base")
    sa.add_argument("--ip-scale", type=float, default=1.0, help="the image prompt's weight lambda (default 1; 0 = none)")
    prompt = sa.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="a text-conditioned run: draw every sample from this prompt")
    prompt.add_argument("--prompts", metavar="FILE", help="a text-conditioned run: prompts, one per line; the grid "
                                                          "has one row per prompt")
    ev = sub.add_parser("eval", help="score a run, or a set of samples, with the harness's protocol (JSON)")
    ev.add_argument("run_dir", nargs="?", help="a training run (its EMA weights are sampled)")
    ev.add_argument("--samples", help="FILE.npz of uint8 images (N, C, H, W) [+ labels] instead of a run")
    ev.add_argument("--reference", help="FILE.npz to compare --samples with, instead of a dataset")
    ev.add_argument("--dataset", help="dataset of --samples (default for a run: the run's)")
    ev.add_argument("--metrics", help=f"comma-separated from {','.join(METRIC_NAMES)} "
                                      "(default: fd,kid,pr,is[,bpd] where a domain classifier exists, else fid,kid,pr)")
    ev.add_argument("--n", type=EVAL_N, default=5000, help="samples to generate from a run (default 5000)")
    ev.add_argument("--n-ref", type=EVAL_N, default=10000, help="reference images (default 10000)")
    ev.add_argument("--prompt-set", default="heldout", choices=PROMPT_SETS,
                    help="a text-conditioned run's prompts: heldout, the captions of held-out test images (default); "
                         "uniform, every class and attribute combination equally often; label, the class alone")
    ev.add_argument("--bpd-n", type=EVAL_N, help="test images for bits/dim (default: --n)")
    ev.add_argument("--ref-split", default="train", choices=("train", "test"))
    ev.add_argument("--seed", type=SEED, default=0)
    ev.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="sampler knobs, e.g. sampler.temperature=0.8")
    ev.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    ev.add_argument("--best", action="store_true", help="use best.pt (lowest in-loop FD) instead of the latest")
    ev.add_argument("--fid-weights", help="path to the FID Inception weights (else GENZOO_FID_WEIGHTS, caches, package)")
    ev.add_argument("--download", action="store_true", help="allow downloading FID weights / data")
    ev.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda")
    ev.add_argument("--batch-size", type=BATCH, default=256)
    ev.add_argument("--out", help="also write the JSON here")
    ev.add_argument("--no-progress", action="store_true")

    co = sub.add_parser("compare", help="train every family under one budget, evaluate alike, write a report")
    co.add_argument("--dataset", default="mnist", help="dataset for every family (default mnist)")
    co.add_argument("--families", help="comma-separated entries (default: every entry whose families exist)")
    co.add_argument("--preset", default="quick", help="preset of every family (default: quick)")
    budget = co.add_mutually_exclusive_group()
    budget.add_argument("--minutes-per-family", type=MINUTES, metavar="M",
                        help="training minutes per entry, split between a two-stage entry's stages")
    budget.add_argument("--steps", type=COUNT, help="optimizer steps per entry (default: each preset's own)")
    co.add_argument("--out", help="report directory (default: reports/compare-DATASET)")
    co.add_argument("--resume", action="store_true", help="reuse finished runs and cached evaluations in --out, "
                                                          "continue interrupted runs")
    co.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="overrides for every stage, e.g. train.threads=1 model.class_cond=true, or for one "
                         "family: gan:train.lr=1e-4")
    co.add_argument("--root", help="data directory")
    conditioning = co.add_mutually_exclusive_group()
    conditioning.add_argument("--unconditional", action="store_true",
                              help="every entry unconditional (default: every entry class-conditional)")
    conditioning.add_argument("--text", action="store_true",
                              help="every entry that reads text (ddpm, ldm, dit, flow) conditioned on captions "
                                   "through one shared clip run, trained first; prompt grids in the report")
    _report_args(co)
    re_ = sub.add_parser("report", help="re-render a comparison report from finished runs")
    re_.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    re_.add_argument("--out", required=True, help="report directory")
    _report_args(re_)
    return p


def _report_args(p: argparse.ArgumentParser) -> None:
    """The evaluation protocol of compare / report (the same for every entry)."""
    p.add_argument("--eval-n", type=EVAL_N, default=2000, help="samples per entry (default 2000)")
    p.add_argument("--metrics", help=f"comma-separated from {','.join(METRIC_NAMES)} (default: fd,kid,pr,is,acc,"
                                     "bpd where a domain classifier exists, else fid,kid,pr,bpd; bpd_ode: the ODE "
                                     "estimate beside a bound)")
    p.add_argument("--n-ref", type=EVAL_N, default=10000, help="reference images (default 10000)")
    p.add_argument("--bpd-n", type=EVAL_N, default=100, help="test images for bits/dim (default 100, at most --eval-n)")
    p.add_argument("--ref-split", default="train", choices=("train", "test"))
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--grid-n", type=COUNT, default=100, help="samples in each entry's grid (default 100)")
    p.add_argument("--sampler-steps", help="also evaluate families with a sampler.steps knob at these steps, "
                                           "e.g. 10,25,50, or NAME:STEPS such as ddim:50 (quality against "
                                           "sampling cost)")
    p.add_argument("--prompt-set", default="heldout", choices=PROMPT_SETS,
                   help="a text entry's evaluation prompts: heldout, the captions of held-out test images (default); "
                        "uniform, every class and attribute combination equally often; label, the class alone")
    p.add_argument("--fid-weights", help="path to the FID Inception weights")
    p.add_argument("--download", action="store_true", help="allow downloading data / FID weights")
    p.add_argument("--device", default="auto", help="evaluation device: auto | cpu | cuda")
    p.add_argument("--batch-size", type=BATCH, default=0,
                   help="sampling batch size (default: each entry's own on a CPU, 500 on a GPU)")
    p.add_argument("--no-progress", action="store_true")


def cmd_list(args) -> None:
    from genzoo.datasets import DATASETS
    from genzoo.registry import ADAPTERS, COMPONENTS, FAMILIES

    w = max(map(len, [*FAMILIES, *COMPONENTS, *ADAPTERS, *DATASETS]))  # one column for every name
    print("families:")
    for name, fam in FAMILIES.items():
        print(f"  {name:{w}s} {fam.description}  [presets: {', '.join(fam.presets)}]")
    print("components (trained like a family, scored by `genzoo eval`, no samples):")
    for name, comp in COMPONENTS.items():
        print(f"  {name:{w}s} {comp.description}  [presets: {', '.join(comp.presets)}]")
    print("adapters (train on a finished run: --set model.base=RUN; sample like it):")
    for name, adapter in ADAPTERS.items():
        print(f"  {name:{w}s} {adapter.description}  [presets: {', '.join(adapter.presets)}]")
    print("datasets:")
    for name, info in DATASETS.items():
        c, h, w_ = info.shape
        print(f"  {name:{w}s} {c}x{h}x{w_}, {info.num_classes} classes  {info.description}")


def cmd_data(args) -> None:
    from genzoo import datasets

    print(datasets.prepare(args.name, root=args.root, download=args.download))


def cmd_train(args) -> None:
    from genzoo.registry import resolve_config
    from genzoo.train.distributed import init_distributed, shutdown_distributed
    from genzoo.train.trainer import pick_device, train

    overrides = list(args.set)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.minutes is not None:
        overrides += [f"train.minutes={args.minutes}", "train.steps=0"]
    if args.root:
        overrides.append(f"data.root={args.root}")
    if args.download:
        overrides.append("data.download=true")
    cfg = resolve_config(args.family, dataset=args.dataset, preset=args.preset, overrides=overrides)
    out = _out_dir(args.out or f"runs/{cfg.family}-{cfg.data.dataset}")
    import torch
    dist = init_distributed("cuda" if cfg.train.device.startswith("cuda") or
                            (cfg.train.device == "auto" and torch.cuda.is_available()) else "cpu")
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        summary = train(cfg, out, dist=dist, resume=args.resume, progress=not args.no_progress)
    finally:
        shutdown_distributed()
    if dist.is_main:
        print(f"trained {cfg.family} on {cfg.data.dataset}: {summary['step']} steps in {summary['train_s']:.0f} s "
              f"({summary['stop']}); run in {out}")


def cmd_sample(args) -> None:
    import numpy as np

    from genzoo.config import apply_overrides
    from genzoo.evaluation.grid import save_grid
    from genzoo.evaluation.harness import generate
    from genzoo.runs import open_run

    out = _out_file(args.out or Path(args.run_dir) / "samples.png", (".png", ".npz"))
    run = open_run(args.run_dir, ema=not args.raw, device=args.device, best=args.best)
    if isinstance(run.model, Component):
        raise ConfigError(f"{args.run_dir} is a {run.config.family} run, a component that draws no samples; "
                          f"score it with `genzoo eval {args.run_dir}`")
    if any(not item.startswith("sampler.") for item in args.set):
        raise ConfigError("genzoo sample takes only sampler.* overrides, e.g. --set sampler.temperature=0.8")
    apply_overrides(run.config, args.set)
    add_adapters(run, args.lora, args.merge)
    prompts = sample_prompts(run, args)
    text = None if prompts is None else run.model.text_encoder.tokenizer.encode_batch(prompts)
    control, control_labels = sample_controls(run, args)
    model, image_prompt = sample_image_prompts(run, args)
    knobs = (vars(run.config.sampler) | ({"control_scale": args.control_scale} if control is not None else {})
             | ({"ip_scale": args.ip_scale} if image_prompt is not None else {}))
    uint8, labels, _ = generate(model, args.n, seed=args.seed, batch_size=args.batch_size, device=args.device,
                                knobs=knobs, text=text, control=control, labels=control_labels,
                                image_prompt=image_prompt)
    K = run.model.num_classes
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        arrays = {"images": uint8.numpy()}
        if labels is not None:
            arrays["labels"] = labels.numpy()
        if prompts is not None:
            arrays["prompts"] = np.array(prompts)
        np.savez(out, **arrays)
    else:
        per_prompt = -(-args.n // len(set(prompts))) if prompts is not None else 0
        save_grid(uint8.float() / 127.5 - 1, out, nrow=per_prompt or (K if K and args.n >= K else None))
    print(f"wrote {args.n} samples of {run.config.family} (step {run.step}) to {out}")


def add_adapters(run, adapters: list[str], merge: bool) -> None:
    """`--lora ADAPTER[:SCALE]` (repeatable) and `--merge`: the adapters added to the run's model."""
    from genzoo.models import lora

    if merge and not adapters:
        raise ConfigError("--merge merges --lora adapters into the weights: pass at least one --lora")
    for item in adapters:
        source, scale = item, 1.0
        head, sep, tail = item.rpartition(":")
        if sep and not Path(item).exists():
            try:
                source, scale = head, float(tail)
            except ValueError:
                raise ConfigError(f"--lora {item}: write ADAPTER or ADAPTER:SCALE with a number, e.g. "
                                  f"runs/thick:0.5") from None
        lora.apply_adapter(run.model, source, scale)
    if merge:
        lora.merge(run.model)


def sample_controls(run, args):
    """(control images (n, c, H, W) in [-1, 1], their labels or None) from --control / --control-from, or
    (None, None); a run that is not a controlnet refuses them."""
    import torch

    from genzoo.models import controlnet

    source = args.control or args.control_from
    if source is None:
        if args.control_scale != 1.0:
            raise ConfigError("--control-scale scales a control: pass --control FILE or --control-from FILE")
        return None, None
    if run.config.family != "controlnet":
        raise ConfigError(f"{args.run_dir} is a {run.config.family} run; --control steers a controlnet run "
                          f"(`genzoo train controlnet --set model.base={args.run_dir}`)")
    images, labels = _load_images(source, run.image_shape if args.control_from else (
        controlnet.control_channels(run.config.model.control, run.image_shape[0]), *run.image_shape[1:]))
    x = images.float() / 127.5 - 1
    if args.control_from:
        x = controlnet.control_image(run.config.model.control, x)
    if len(x) not in (1, args.n):
        raise ConfigError(f"{source} holds {len(x)} images: give one (for every sample) or --n {len(x)}")
    if labels is not None and run.model.num_classes:
        labels = labels.long().expand(args.n) if len(labels) == 1 else labels.long()
    return x.expand(args.n, -1, -1, -1).contiguous(), (labels if run.model.num_classes else None)


def sample_image_prompts(run, args):
    """(the model to sample, image prompts (n, C, H, W) in [-1, 1] or None) from --image-prompt, --ip-adapter and
    --ip-scale; the model reads them when it is an ip-adapter run or --ip-adapter adds one."""
    from genzoo.models import ip_adapter

    model = run.model
    if args.ip_adapter:
        if run.config.family == "ip-adapter":
            raise ConfigError(f"{args.run_dir} is an ip-adapter run already: drop --ip-adapter")
        model = ip_adapter.attach(run.model, args.ip_adapter)
    if args.image_prompt is None:
        if args.ip_adapter or args.ip_scale != 1.0:
            raise ConfigError("--ip-adapter and --ip-scale weigh an image prompt: pass --image-prompt FILE")
        return model, None
    if run.config.family != "ip-adapter" and not args.ip_adapter:
        raise ConfigError(f"{args.run_dir} is a {run.config.family} run; --image-prompt needs an ip-adapter run, or "
                          f"--ip-adapter ADAPTER trained on this run's base")
    images, _ = _load_images(args.image_prompt, run.image_shape)
    if len(images) not in (1, args.n):
        raise ConfigError(f"{args.image_prompt} holds {len(images)} images: give one (for every sample) or "
                          f"--n {len(images)}")
    return model, (images.float() / 127.5 - 1).expand(args.n, -1, -1, -1).contiguous()


def _load_images(path: str, shape: tuple[int, int, int]):
    """uint8 (N, C, H, W) images and their labels (or None) from a PNG or an NPZ (`images`, optional `labels`)."""
    import numpy as np
    import torch

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file")
    if path.endswith(".npz"):
        images, labels = _load_npz(path)
    else:
        from PIL import Image, UnidentifiedImageError
        try:
            img = Image.open(path).convert("L" if shape[0] == 1 else "RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise ConfigError(f"{path}: not a readable image ({e})") from None
        a = np.asarray(img, dtype=np.uint8)
        images, labels = torch.from_numpy(a.reshape(*a.shape[:2], -1)).permute(2, 0, 1)[None].contiguous(), None
    if images.dtype != torch.uint8:
        raise ConfigError(f"{path}: images must be uint8 (0..255), got {images.dtype}")
    if tuple(images.shape[1:]) != tuple(shape):
        raise ConfigError(f"{path}: images of shape {tuple(images.shape[1:])}; this run needs {tuple(shape)}")
    return images, labels


def sample_prompts(run, args) -> list[str] | None:
    """The prompt of each of the n samples (--prompt, or --prompts FILE: each prompt for n / P samples in a row),
    or None without either; a run that takes no text refuses them."""
    if args.prompt is None and args.prompts is None:
        return None
    if getattr(run.model, "text_encoder", None) is None:
        raise ConfigError(f"{args.run_dir} is not text-conditioned; train one with `--set "
                          f"model.text_encoder=CLIP_RUN data.captions=true` (docs/text.md)")
    if args.prompt is not None:
        return [args.prompt] * args.n
    try:
        lines = [line.strip() for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    except OSError as e:
        raise ConfigError(f"--prompts {args.prompts}: cannot read it ({e.strerror})") from None
    if not lines:
        raise ConfigError(f"--prompts {args.prompts} holds no prompt; write one per line")
    per = -(-args.n // len(lines))  # ceil(n / P)
    return [lines[i // per] for i in range(args.n)]


def _load_npz(path: str):
    import numpy as np
    import torch

    try:
        with np.load(path) as f:
            images = torch.from_numpy(f["images"])
            labels = torch.from_numpy(f["labels"]).long() if "labels" in f else None
    except (OSError, KeyError, ValueError) as e:
        raise ConfigError(f"{path}: not a samples file with an 'images' array ({e}); write one with "
                          f"`genzoo sample RUN --out FILE.npz`") from None
    return images, labels


def cmd_eval(args) -> None:
    import json

    import torch

    from genzoo.evaluation.classifier import EXTRACTORS
    from genzoo.evaluation.harness import evaluate_images, evaluate_run

    out = _out_file(args.out, (".json",)) if args.out else None  # checked before the work, not after
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    common = dict(seed=args.seed, n_ref=args.n_ref, ref_split=args.ref_split, fid_weights=args.fid_weights,
                  download=args.download, device=device, progress=not args.no_progress)
    if args.run_dir and (args.samples or args.reference):
        raise ConfigError("give either RUN_DIR or --samples, not both")
    if args.run_dir:
        from genzoo.evaluation.harness import evaluate_component
        from genzoo.registry import COMPONENTS, load_config_json
        from genzoo.train.checkpoint import CONFIG

        cfg_path = Path(args.run_dir) / CONFIG
        saved = load_config_json(cfg_path.read_text()) if cfg_path.is_file() else None
        dataset = saved.data.dataset if saved else None
        default = "fd,kid,pr,is,bpd" if dataset in EXTRACTORS else "fid,kid,pr,bpd"
        if saved and saved.family in COMPONENTS:
            result = evaluate_component(args.run_dir, n=args.n, ema=not args.raw, device=device)
        else:
            result = evaluate_run(args.run_dir, n=args.n, metrics=args.metrics or default, ema=not args.raw, best=args.best,
                                  sampler_overrides=args.set, n_bpd=args.bpd_n, batch_size=args.batch_size,
                                  prompt_set=args.prompt_set, **common)
    elif args.samples:
        images, labels = _load_npz(args.samples)
        reference = _load_npz(args.reference)[0] if args.reference else None
        if reference is None and not args.dataset:
            raise ConfigError("--samples needs --dataset NAME or --reference FILE.npz to compare with")
        default = "fd,kid,pr,is" if args.dataset in EXTRACTORS else "fid,kid,pr"
        result = {"samples": args.samples, "dataset": args.dataset, "reference_file": args.reference,
                  "metrics": evaluate_images(images, dataset=args.dataset, reference=reference, labels=labels,
                                             metrics=args.metrics or default, **common)}
    else:
        raise ConfigError("nothing to evaluate: give RUN_DIR, or --samples FILE.npz with --dataset or --reference")
    text = json.dumps(result, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)


def _protocol(args):
    from genzoo.compare import Protocol
    from genzoo.evaluation.harness import parse_metrics

    from genzoo.compare import sweep_overrides

    items = [x.strip() for x in (args.sampler_steps or "").split(",") if x.strip()]
    steps = tuple(x if sweep_overrides(x)[0] else int(x) for x in items)  # STEPS or NAME:STEPS
    if args.eval_n < 2 or args.grid_n < 1:
        raise ConfigError("--eval-n must be at least 2 and --grid-n at least 1")
    return Protocol(n=args.eval_n, metrics=parse_metrics(args.metrics) if args.metrics else (), n_ref=args.n_ref,
                    n_bpd=args.bpd_n, ref_split=args.ref_split, seed=args.seed, grid_n=args.grid_n, sampler_steps=steps,
                    batch_size=args.batch_size, device=args.device, fid_weights=args.fid_weights,
                    download=args.download, prompt_set=args.prompt_set)


def cmd_compare(args) -> None:
    from genzoo.compare import Budget, compare

    budget = (Budget("minutes", args.minutes_per_family) if args.minutes_per_family is not None else
              Budget("steps", args.steps) if args.steps is not None else Budget())
    if budget.kind != "preset" and budget.value <= 0:
        raise ConfigError("--minutes-per-family and --steps must be positive")
    overrides = list(args.set) + ([f"data.root={args.root}"] if args.root else []) + (
        ["data.download=true"] if args.download else [])
    out = _out_dir(args.out or f"reports/compare-{args.dataset}")
    families = [f.strip() for f in args.families.split(",") if f.strip()] if args.families else None
    compare(dataset=args.dataset, families=families, preset=args.preset, budget=budget, out=out, resume=args.resume,
            overrides=overrides, protocol=_protocol(args), progress=not args.no_progress, command=args.command_line,
            conditional=not args.unconditional, text=args.text)
    print(f"report: {Path(out) / 'index.html'} (also report.md, results.json)")


def cmd_report(args) -> None:
    from genzoo.compare import report_from_runs

    report_from_runs(args.run_dirs, out=args.out, protocol=_protocol(args), progress=not args.no_progress,
                     command=args.command_line)
    print(f"report: {Path(args.out) / 'index.html'} (also report.md, results.json)")


def main(argv: list[str] | None = None) -> int:
    import shlex

    args = _parser().parse_args(argv)
    args.command_line = shlex.join(["genzoo", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="genzoo: %(message)s")
    commands = {"list": cmd_list, "data": cmd_data, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval,
                "compare": cmd_compare, "report": cmd_report}
    try:
        commands[args.command](args)
    except Interrupted as e:
        print(f"genzoo: {e}", file=sys.stderr)
        return 130
    except GenzooError as e:
        print(f"genzoo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genzoo: aborted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in USER_OS_ERRORS:
            return _report_bug(args)
        print(f"genzoo: error: {e.strerror}: {e.filename or ''}; free space or fix permissions, then run "
              f"again (with --resume for training)", file=sys.stderr)
        return 2
    except Exception:
        return _report_bug(args)
    return 0


# file-system conditions a user can fix (not bugs): one line, no traceback
USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _report_bug(args) -> int:
    """A real bug: the traceback is printed in full, and the last line says what to report."""
    import traceback

    from genzoo import __version__

    traceback.print_exc()
    print(f"genzoo: internal error in `{args.command_line}` (genzoo {__version__}); please report it with the "
          f"traceback above", file=sys.stderr)
    return 1
