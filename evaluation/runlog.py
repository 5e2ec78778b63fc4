"""A run's `metrics.jsonl`, read in one place, with the one definition of training images/s.

    rows = read_metrics(run_dir)              # every logged row, in order
    steps, values = series(rows, "loss")      # one logged quantity against the step
    train_images_per_s(rows)                  # the training speed every report and benchmark quotes
    training_cost(run_dir)                    # {"train_img_per_s", "train_s", "images_seen", "in_loop_eval_s"}

The trainer writes one row per log interval (`step`, the mean losses, `img_per_s`, `elapsed_s`), a row per
in-loop evaluation (`fd`, `fd_extractor`, `eval_n`) and, when a session ends, `{"event": "end", ...}` with the
run's step, training seconds, images seen and the seconds spent off the training clock on sample grids and
in-loop evaluation (`eval_s`; genzoo.train.trainer).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from genzoo.train.checkpoint import METRICS


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every row of the run's metrics.jsonl, in order ([] before the first interval is logged)."""
    path = Path(run_dir) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that logged `key`."""
    rows = [r for r in rows if key in r]
    return [r["step"] for r in rows], [r[key] for r in rows]


def train_images_per_s(rows: list[dict]) -> float | None:
    """Training images/s: the median over the logged intervals (steps x batch size / seconds) of every session,
    leaving out each session's first interval where it logged more than one (it holds the warm-up: first
    kernels, allocator growth, torch.compile). None when nothing was logged."""
    rates, session = [], []
    for r in rows + [{"event": "end"}]:
        if "img_per_s" in r:
            session.append(r["img_per_s"])
        elif r.get("event") == "end":
            rates += session[1:] if len(session) > 1 else session
            session = []
    return statistics.median(rates) if rates else None


def training_cost(run_dir: str | Path) -> dict:
    """Training images/s, training seconds and images seen of a run (None where it logged none)."""
    rows = read_metrics(run_dir)
    ends = [r for r in rows if r.get("event") == "end"]
    return {"train_img_per_s": train_images_per_s(rows),
            "train_s": ends[-1]["train_s"] if ends else None,
            "images_seen": ends[-1]["images_seen"] if ends else None,
            "in_loop_eval_s": ends[-1].get("eval_s") if ends else None}  # grids and in-loop FD, off the clock
