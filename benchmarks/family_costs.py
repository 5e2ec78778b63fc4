"""Every family's cost at one preset, on this machine: training and sampling images/s, and where a step's time goes.

    python benchmarks/family_costs.py --preset quick --steps 30 --sample-n 64 --threads 2   # CPU table
    python benchmarks/family_costs.py --preset standard --steps 60 --sample-n 256           # on a GPU

For each comparison entry (`genzoo.compare.ENTRIES`: vqvae = VQ-VAE + its transformer prior, ldm = VAE +
latent diffusion) every stage trains `--steps` steps through the real trainer (`train()`, as `genzoo train`
does), and then

- `train_img_per_s`: the trainer's logged images/s (median of its intervals after the first, which holds
  start-up / compilation);
- `net_img_per_s`: the trainer's own pieces (`setup()`: device, memory format, data, latents, AdamW, grad
  scaler, autocast) and its `forward_backward`, timed on one fixed global batch doing only the network's
  forward + loss + backward (`fb`) and then also the optimizer step (`fbo`); so
  `outside_fbo = 1 - train/fbo_rate` is the share of a trainer step spent outside the network and the
  optimizer (data indexing, EMA, LR schedule, gradient clipping and finite checks, logging);
- `sample_img_per_s`: `model.sample()` through `harness.generate` for the entry's last stage
  (`--sample-n` images in batches of `--sample-batch`, the preset's own sampler settings).
- with `--profile`: torch.profiler over three fixed-batch steps per stage: the share of operator self time
  by kind (convolution, matmul, attention, normalisation, ...), the top operators, and the AdamW step's share.

Weights are what `--steps` steps give: speed does not depend on them. Prints one JSON document; with
`--markdown` also the README table. Families run one after another, so compare rows of one run only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from genzoo.compare import Budget, select_entries, stage_configs
from genzoo.evaluation.harness import generate
from genzoo.evaluation.runlog import read_metrics, train_images_per_s
from genzoo.runs import open_run
from genzoo.train.distributed import DistInfo
from genzoo.train.trainer import forward_backward, lr_at, micro_batch, pick_device, setup, train


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def trainer_rate(cfg, run_dir: Path) -> float:
    train(cfg, run_dir, progress=False)
    return train_images_per_s(read_metrics(run_dir))


def fixed_batch_step(cfg, run_dir: Path):
    """(step(with_opt), device): the trainer's step on one fixed global batch, built by the trainer's `setup()`
    into a fresh `run_dir` and run through its `forward_backward` and optimizers at the LR of step 0, without
    its data order, EMA, clipping, finite checks or logging."""
    p, s = setup(cfg, run_dir)
    batches = [micro_batch(p, k) for k in range(cfg.train.grad_accum)]  # one global batch (one process)
    for phase, (peak, _) in p.phase_cfg.items():
        for g in p.optims[phase].param_groups:
            g["lr"] = lr_at(s.step, s.horizon, p.tc, peak)
    p.model.train()

    def step(with_opt: bool):
        for phase in p.model.phases:
            for _ in range(p.phase_cfg[phase][1]):
                p.model.zero_grad(set_to_none=True)
                with torch.profiler.record_function("forward+backward"):
                    for batch in batches:
                        forward_backward(p, batch, phase)
                if with_opt:
                    with torch.profiler.record_function("optimizer"):
                        p.scaler.step(p.optims[phase])
                        p.scaler.update()

    return step, p.device


def network_rates(cfg, run_dir: Path, steps: int) -> dict:
    """images/s of forward+backward and of forward+backward+AdamW on one fixed batch, as the trainer sets them up."""
    step, device = fixed_batch_step(cfg, run_dir)
    out = {}
    for name, with_opt in (("fb", False), ("fbo", True)):
        step(with_opt), step(with_opt)  # warm-up (and compilation)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(with_opt)
        sync(device)
        out[name] = steps * cfg.train.batch_size / (time.perf_counter() - t0)
    return out


# operator name fragments -> what they are, first match wins (aten names, forward and backward)
KINDS = (("convolution", ("conv",)), ("matmul", ("addmm", "mm", "matmul", "linear")),
         ("attention", ("attention", "softmax")), ("normalisation", ("norm",)),
         ("activation", ("silu", "gelu", "relu", "sigmoid", "tanh")), ("embedding", ("embedding",)),
         ("loss", ("cross_entropy", "nll_loss", "mse_loss", "log_softmax", "binary_cross")),
         ("optimizer (AdamW)", ("_foreach", "_fused_adam", "lerp", "addcdiv", "addcmul")),
         ("copies and layout", ("copy_", "contiguous", "clone", "cat", "stack", "to_copy", "reshape", "view",
                                "transpose", "permute", "index", "pad", "fill_", "zero_", "empty")))


def profile_step(cfg, run_dir: Path, steps: int = 3, top: int = 6) -> dict:
    """torch.profiler over `steps` fixed-batch training steps: the share of operator self time by kind of
    operator (KINDS; the rest is "elementwise and other"), the `top` operators, and the share of the step
    inside the forward + backward and the optimizer step."""
    from torch.profiler import ProfilerActivity, profile
    step, device = fixed_batch_step(cfg, run_dir)
    step(True), step(True)  # warm-up
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(True)
        sync(device)
    events = prof.key_averages()
    self_time = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)  # noqa: E731
    ops = [e for e in events if e.key.startswith("aten::") and self_time(e) > 0]
    total = sum(self_time(e) for e in ops)
    kinds: dict[str, float] = {}
    for e in ops:
        name = e.key.removeprefix("aten::")
        kind = next((k for k, frags in KINDS if any(f in name for f in frags)), "elementwise and other")
        kinds[kind] = kinds.get(kind, 0.0) + self_time(e) / total
    regions = {e.key: e.cpu_time_total for e in events if e.key in ("forward+backward", "optimizer")}
    return {"measure": "device self time" if cuda else "CPU self time", "steps": steps,
            "by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
            "top_ops": {e.key: self_time(e) / total for e in sorted(ops, key=self_time, reverse=True)[:top]},
            "optimizer_share": regions.get("optimizer", 0.0) / max(sum(regions.values()), 1e-9)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--families", help="comma-separated comparison entries (default: all)")
    p.add_argument("--steps", type=int, default=30, help="trainer steps per stage (and timed network steps)")
    p.add_argument("--sample-n", type=int, default=64)
    p.add_argument("--sample-batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = the trainer's default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every stage")
    p.add_argument("--markdown", action="store_true", help="also print the README table (to stderr)")
    p.add_argument("--profile", action="store_true", help="also profile each stage's fixed-batch step (torch.profiler)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    chosen = select_entries(a.families.split(",") if a.families else None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, stages in chosen:
            sets = [f"train.log_every={max(1, a.steps // 5)}", "train.sample_every=0", "train.eval_every=0",
                    f"train.ckpt_every={10 * a.steps}", *([f"train.threads={a.threads}"] if a.threads else []), *a.set]
            entry = stage_configs(name, stages, dataset=a.dataset, preset=a.preset, budget=Budget("steps", a.steps),
                                  overrides=sets, runs_dir=Path(tmp))
            row = {"entry": name, "stages": []}
            for stage, cfg, run_dir in zip(entry.stages, entry.configs, entry.dirs):
                cfg.train.steps = a.steps  # every stage the same number of steps: this is about speed
                rate = trainer_rate(cfg, run_dir)
                net = network_rates(cfg, run_dir.with_name(run_dir.name + "-net"), a.steps)
                row["stages"].append({
                    "family": stage.family, "preset": stage.preset(a.preset), "batch_size": cfg.train.batch_size,
                    "train_img_per_s": rate, "net_fb_img_per_s": net["fb"], "net_fbo_img_per_s": net["fbo"],
                    "outside_fb": 1 - rate / net["fb"], "outside_fbo": 1 - rate / net["fbo"]})
                if a.profile:
                    row["stages"][-1]["profile"] = profile_step(cfg, run_dir.with_name(run_dir.name + "-profile"))
            device = str(pick_device(entry.configs[-1].train.device, DistInfo()))
            run = open_run(entry.dirs[-1], device=device)
            knobs = vars(run.config.sampler)
            generate(run.model, min(8, a.sample_n), batch_size=a.sample_batch, device=device, knobs=knobs)  # warm-up
            _, _, rate = generate(run.model, a.sample_n, batch_size=a.sample_batch, device=device, knobs=knobs)
            row.update(sample_img_per_s=rate, sampler=dict(knobs),
                       parameters=sum(q.numel() for q in run.model.parameters()))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_name()
    doc = {"benchmark": "family_costs", "preset": a.preset, "dataset": a.dataset, "steps": a.steps,
           "sample_n": a.sample_n, "device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "entries": rows}
    print(json.dumps(doc, indent=2))
    if a.markdown:
        print(markdown(doc), file=sys.stderr)
        if a.profile:
            print(profile_markdown(doc), file=sys.stderr)


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def markdown(doc: dict) -> str:
    lines = [f"| entry (stage) | batch | train img/s | network-only img/s (fwd+bwd+opt) | outside network+opt | "
             f"sample img/s |", "|---|---|---|---|---|---|"]
    for r in doc["entries"]:
        for i, s in enumerate(r["stages"]):
            name = r["entry"] if len(r["stages"]) == 1 else f"{r['entry']} ({s['family']})"
            sample = f"{r['sample_img_per_s']:.1f}" if i == len(r["stages"]) - 1 else ""
            lines.append(f"| {name} | {s['batch_size']} | {s['train_img_per_s']:.0f} | {s['net_fbo_img_per_s']:.0f} | "
                         f"{100 * s['outside_fbo']:.0f}% | {sample} |")
    return "\n".join(lines)


def profile_markdown(doc: dict) -> str:
    """Where a fixed-batch training step's operator time goes, per stage: the kinds above 5%."""
    lines = ["| entry (stage) | where the operator time goes (share of self time) | AdamW step |", "|---|---|---|"]
    for r in doc["entries"]:
        for s in r["stages"]:
            if "profile" not in s:
                continue
            name = r["entry"] if len(r["stages"]) == 1 else f"{r['entry']} ({s['family']})"
            kinds = ", ".join(f"{k} {100 * v:.0f}%" for k, v in s["profile"]["by_kind"].items() if v >= 0.05)
            lines.append(f"| {name} | {kinds} | {100 * s['profile']['optimizer_share']:.0f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
