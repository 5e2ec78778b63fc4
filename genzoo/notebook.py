"""What every course notebook does the same way: start, show images, train once (or reuse), read what was logged.

    from genzoo import notebook as nb

    RUNS = nb.setup("01_vae")                        # seed 0, plain progress bars; RUNS: where its runs go
    run_dir = nb.train_once(RUNS / "quick", "vae", 2100)
    nb.show(run.model.sample(40), nrow=20, title="samples")
    steps, losses = nb.curve(run_dir, "loss")         # one logged quantity from metrics.jsonl
    nb.finish()                                       # how long the notebook took

`nb.SMALL` is the notebooks' small mode (GENZOO_NOTEBOOK_SMALL=1, used by tests/test_notebooks.py): the same
cells with tiny step counts (`SMALL_SETTINGS`). Runs go to GENZOO_NOTEBOOK_RUNS (default `runs/`), under
`small/` or `full/` and the notebook's name. Like the CLI, this module is user interface: it prints.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import torch

from genzoo.evaluation.runlog import read_metrics, series, train_images_per_s

SMALL = os.environ.get("GENZOO_NOTEBOOK_SMALL") == "1"
# small mode: a few steps of small batches, one thread, no periodic grids or in-loop FD, a tiny final grid
SMALL_SETTINGS = ("train.batch_size=8", "train.warmup_steps=1", "train.log_every=1", "train.sample_every=0",
                  "train.eval_every=0", "train.n_grid=1", "train.threads=1")
_started = time.time()


def setup(name: str) -> Path:
    """Start notebook `name`: seed 0, tqdm's plain-text bars without a warning; returns its runs folder."""
    global _started
    import genzoo

    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
    torch.manual_seed(0)
    _started = time.time()
    runs = Path(os.environ.get("GENZOO_NOTEBOOK_RUNS", "runs")) / ("small" if SMALL else "full") / name
    print(f"genzoo {genzoo.__version__}, torch {torch.__version__}, {'SMALL' if SMALL else 'full'} mode; "
          f"runs go to {runs.resolve()}")
    return runs


def finish() -> None:
    print(f"notebook ran in {time.time() - _started:.0f} s ({'small' if SMALL else 'full'} mode)")


def show(images: torch.Tensor, nrow: int = 10, title: str | None = None, ax=None) -> None:
    """Show (N, C, H, W) images in [-1, 1] as one grid, on `ax` or a new figure."""
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    from genzoo.evaluation.grid import to_uint8

    grid = make_grid(to_uint8(images), nrow=nrow, padding=2, pad_value=255)  # (3, H', W') uint8
    if ax is None:
        rows = (len(images) + nrow - 1) // nrow
        ax = plt.figure(figsize=(0.6 * nrow, 0.6 * rows + 0.4)).gca()
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def train_once(out: str | Path, family: str, steps: int | None = None, *overrides: str, preset: str = "quick",
               dataset: str = "mnist") -> Path:
    """Train `family`'s `preset` into `out`, or reuse the finished run there (continue an unfinished one);
    steps=None keeps the preset's own number. In small mode SMALL_SETTINGS come before `overrides`."""
    from genzoo.registry import resolve_config
    from genzoo.runs import open_run
    from genzoo.train.checkpoint import CHECKPOINT
    from genzoo.train.trainer import train

    cfg = resolve_config(family, dataset=dataset, preset=preset, overrides=[
        *([f"train.steps={steps}"] if steps else []), *(SMALL_SETTINGS if SMALL else ()), *overrides])
    out = Path(out)
    started = (out / CHECKPOINT).exists()
    if started and open_run(out).step >= cfg.train.steps:
        print(f"{out.name}: reusing the finished run in {out}")
        return out
    summary = train(cfg, out, resume=started, progress=False)
    print(f"{out.name}: {family} {preset}, {summary['step']} steps of batch {cfg.train.batch_size} in "
          f"{summary['train_s']:.0f} s ({train_images_per_s(read_metrics(out)):.0f} training images/s)")
    return out


def curve(run_dir: str | Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one quantity the trainer logged for the run (metrics.jsonl)."""
    return series(read_metrics(run_dir), key)


def labels_for(model, n: int) -> torch.Tensor | None:
    """The classes in turn for a class-conditional model, None for an unconditional one."""
    return torch.arange(n) % model.num_classes if model.num_classes else None


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def show_table(rows: list[dict]) -> None:
    """Display rows of strings as a Markdown table (columns in order of first appearance; missing cells empty)."""
    from IPython.display import Markdown, display

    header = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    display(Markdown("\n".join(lines + ["| " + " | ".join(str(r.get(k, "")) for k in header) + " |" for r in rows])))
