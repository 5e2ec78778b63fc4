"""LoRA against full fine-tuning of the same finished run, at equal steps, on two small-data tasks (docs/adapters.md).

    python benchmarks/lora.py BASE_RUN --out runs/lora [--tasks style,domain] [--steps 600] [--n 1000]
        [--set-lora KEY=VALUE ...] [--set-full KEY=VALUE ...]
    python benchmarks/lora.py --table benchmarks/results/lora_cpu.jsonl [--tasks style]   # the tables of the docs

Tasks (both on an MNIST run):
    style   200 MNIST digits of the thickest stroke bin (`data.subset=thickness:thick data.limit=200`)
    domain  500 Fashion-MNIST images (`--dataset fashion-mnist data.limit=500`), the base's classes reused

Each method trains with `genzoo train lora --preset quick --set model.base=BASE model.method=lora|full`
(a subprocess, so that its peak memory is its own) for the same number of steps: LoRA at each of `--ranks`
(alpha = r) at the preset's step size, full fine-tuning at 2e-3. Measured per run: trainable
parameters, the size of what must be shipped (the adapter file; for full fine-tuning the denoiser's weights as
safetensors), the training process's peak RSS, training images/s, FD-<domain classifier> and requested-class
accuracy on the target (reference: the whole target bin or dataset, never limited), and FD on the source
(MNIST) of the adapted model (for LoRA: the base with the adapter file added, as shipped); the base's own scores on
both are the first rows. For LoRA also: merged against unmerged samples (max |difference|) and scale 0 against the
base (bit for bit). One JSON line per row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    "style": ("mnist", ["data.subset=thickness:thick", "data.limit=200"], "200 thick MNIST digits"),
    "domain": ("fashion-mnist", ["data.limit=500"], "500 Fashion-MNIST images"),
}
SAMPLE_CHECK = 100  # samples drawn merged and unmerged, at scale 0 and from the base


def method_overrides(method: str) -> list[str]:
    """"lora-r2" -> rank 2 (alpha = rank: the update's factor is 1), "full" -> full fine-tuning."""
    if method == "full":
        return ["model.method=full"]
    r = int(method.removeprefix("lora-r"))
    return ["model.method=lora", f"model.rank={r}", f"model.alpha={r}"]


def train(base: Path, task: str, method: str, out: Path, steps: int, extra: list[str]) -> dict:
    """One fine-tuning run in a subprocess (reused when finished); its wall seconds and peak RSS."""
    dataset, sets, _ = TASKS[task]
    run = out / f"{task}-{method}"
    if (run / "metrics.jsonl").is_file() and '"event": "end"' in (run / "metrics.jsonl").read_text():
        return {"run": run.name, "reused": True}
    argv = ["train", "lora", "--dataset", dataset, "--preset", "quick", "--steps", str(steps), "--out", str(run),
            "--no-progress", "--set", f"model.base={base}", *method_overrides(method), *sets, *extra]
    code = ("import resource, sys; from genzoo.cli import main; rc = main(sys.argv[1:]); "
            "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    t0 = time.time()
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"benchmarks/lora.py: `genzoo {' '.join(argv)}` failed:\n{done.stderr[-2000:]}")
    rss = next(int(x.split()[1]) for x in done.stdout.splitlines() if x.startswith("MAXRSS_KB"))
    (run / "peak_rss_kb").write_text(str(rss))
    return {"run": run.name, "command": "genzoo " + " ".join(argv), "wall_s": round(time.time() - t0, 1)}


def safetensors_bytes(tensors: dict[str, torch.Tensor]) -> int:
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as d:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, f"{d}/w.safetensors")
        return Path(f"{d}/w.safetensors").stat().st_size


def scores(model, dataset: str, data_cfg, n: int, knobs: dict, batch_size: int) -> dict:
    """FD and requested-class accuracy on the target (the run's data: its whole subset) and FD on MNIST."""
    from genzoo.evaluation.harness import evaluate_images, generate

    images, labels, _ = generate(model, n, seed=0, batch_size=batch_size, knobs=knobs)
    target = evaluate_images(images, dataset=dataset, data_cfg=data_cfg, labels=labels,
                             metrics=("fd", "acc") if labels is not None else ("fd",))
    source = evaluate_images(images, dataset="mnist", metrics=("fd",))
    acc = target.get("label_accuracy", {}).get("value")
    return {"target_fd": round(target["fd"]["value"], 2), "target_acc": None if acc is None else round(acc, 4),
            "source_fd": round(source["fd"]["value"], 2)}


def shipped_model(base: Path, run_dir: Path):
    """The base with the run's adapter file added: what a user of the file samples (its weights as stored)."""
    from genzoo.models import lora
    from genzoo.runs import open_run
    from genzoo.train import checkpoint as ckpt

    model = open_run(base).model
    lora.apply_adapter(model, run_dir / ckpt.ADAPTER)
    return model


def sample_checks(base: Path, adapter: Path, knobs: dict) -> dict:
    """Merged against unmerged, and scale 0 against the base, on SAMPLE_CHECK samples of the same noise."""
    from genzoo.evaluation.harness import generate
    from genzoo.models import lora
    from genzoo.runs import open_run

    def draw(scale: float | None, merge: bool = False) -> torch.Tensor:
        model = open_run(base).model
        if scale is not None:
            lora.apply_adapter(model, adapter, scale)
        if merge:
            lora.merge(model)
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        labels = torch.arange(SAMPLE_CHECK) % model.num_classes if model.num_classes else None
        with torch.no_grad():
            return model.sample(SAMPLE_CHECK, labels=labels, generator=g, **knobs)

    from genzoo.evaluation.grid import to_uint8

    unmerged, merged = draw(1.0), draw(1.0, merge=True)
    return {"merged_max_abs_diff": float((merged - unmerged).abs().max()),
            "merged_mean_abs_diff": float((merged - unmerged).abs().mean()),
            "merged_uint8_pixels_differing": int((to_uint8(merged) != to_uint8(unmerged)).sum()),
            "scale0_equals_base": bool(torch.equal(draw(0.0), draw(None)))}


def main() -> None:
    from genzoo.config import DataConfig
    from genzoo.runs import open_run
    from genzoo.train import checkpoint as ckpt

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", nargs="?", help="a finished class-conditional MNIST run (ddpm, ldm, dit, ...)")
    p.add_argument("--out", default="runs/lora")
    p.add_argument("--tasks", default="style,domain")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps of every method (default 600)")
    p.add_argument("--n", type=int, default=1000, help="samples per evaluation (default 1000)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--ranks", default="1,2", help="LoRA ranks to train, each beside full fine-tuning (default 1,2)")
    p.add_argument("--set-lora", nargs="+", default=[], metavar="KEY=VALUE", help="extra overrides of the LoRA runs")
    p.add_argument("--set-full", nargs="+", default=["train.lr=2e-3"], metavar="KEY=VALUE",
                   help="extra overrides of the full runs (default train.lr=2e-3: the base's lr 1e-3, doubled)")
    p.add_argument("--table", metavar="RESULTS.jsonl", help="print the README's table from these results and stop")
    a = p.parse_args()
    if a.table:
        rows = [json.loads(x) for x in Path(a.table).read_text().splitlines() if x.strip()]
        print(table([r for r in rows if r.get("task") in a.tasks.split(",")]))
        return
    if not a.base:
        p.error("give a BASE_RUN (or --table RESULTS.jsonl)")
    base, out = Path(a.base).resolve(), Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tasks = a.tasks.split(",")
    methods = [f"lora-r{r}" for r in a.ranks.split(",")] + ["full"]
    for task in tasks:
        for method in methods:
            print(json.dumps(train(base, task, method, out, a.steps, a.set_full if method == "full" else a.set_lora)),
                  flush=True)

    base_run = open_run(base)
    knobs = vars(base_run.config.sampler)
    base_weights = safetensors_bytes(base_run.model.state_dict())
    for task in tasks:
        dataset, sets, what = TASKS[task]
        data_cfg = DataConfig(dataset=dataset, subset=next((s.split("=", 1)[1] for s in sets if "subset" in s), ""))
        print(json.dumps({"task": task, "target": what, "method": "base", "steps": 0,
                          **scores(base_run.model, dataset, data_cfg, a.n, knobs, a.batch_size)}), flush=True)
        for method in methods:
            run_dir = out / f"{task}-{method}"
            run = open_run(run_dir)
            trainable = [p for p in run.model.parameters_for("main")]
            end = next(json.loads(x) for x in reversed((run_dir / ckpt.METRICS).read_text().splitlines())
                       if '"event": "end"' in x)
            lora = method != "full"
            shipped = ((run_dir / ckpt.ADAPTER).stat().st_size if lora else
                       safetensors_bytes({n: p for n, p in run.model.named_parameters() if p.requires_grad}))
            row = {"task": task, "target": what, "method": "lora" if lora else "full", "steps": run.step,
                   "rank": run.config.model.rank if lora else None,
                   "targets": run.config.model.targets if lora else None,
                   "lr": run.config.train.lr, "batch_size": run.config.train.batch_size,
                   "trainable": sum(p.numel() for p in trainable),
                   "base_parameters": sum(p.numel() for p in base_run.model.parameters()),
                   "file_bytes": shipped, "base_weights_bytes": base_weights,
                   "peak_rss_mb": round(int((run_dir / "peak_rss_kb").read_text()) / 1024, 1),
                   "train_img_per_s": round(end["images_seen"] / end["train_s"], 1), "train_s": round(end["train_s"], 1),
                   **scores(shipped_model(base, run_dir) if lora else run.model, dataset, run.config.data, a.n, knobs,
                            a.batch_size)}
            if lora:
                row.update(sample_checks(base, run_dir / ckpt.ADAPTER, knobs))
            print(json.dumps(row), flush=True)


def table(rows: list[dict]) -> str:
    """The side-by-side markdown table (README, docs/adapters.md)."""
    lines = ["| task | method | trainable | shipped file | peak RSS | train img/s | FD target | digit/class "
             "| FD MNIST |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "method" not in r:
            continue
        if r["method"] == "base":
            lines.append(f"| {r['target']} | the base, not fine-tuned | | | | | {r['target_fd']:.1f} | "
                         f"{pct(r['target_acc'])} | {r['source_fd']:.1f} |")
            continue
        name = (f"LoRA r={r['rank']} ({r['targets']})" if r["method"] == "lora" else "full fine-tuning")
        share = 100 * r["trainable"] / r["base_parameters"]
        size = 100 * r["file_bytes"] / r["base_weights_bytes"]
        lines.append(f"| {r['target']} | {name}, {r['steps']} steps | {r['trainable']:,} ({share:.1f}%) | "
                     f"{r['file_bytes'] / 1024:.0f} KiB ({size:.1f}%) | {r['peak_rss_mb']:.0f} MB | "
                     f"{r['train_img_per_s']:.0f} | {r['target_fd']:.1f} | {pct(r['target_acc'])} | "
                     f"{r['source_fd']:.1f} |")
    return "\n".join(lines)


def pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
