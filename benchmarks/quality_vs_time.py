"""Quality against wall-clock training time, from the in-loop FD a run logs (train.eval_every).

    genzoo train gan --dataset mnist --preset quick --out runs/gan --set train.eval_every=250
    python benchmarks/quality_vs_time.py runs/gan [runs/vae ...] [--plot fd_vs_time.png]

Prints JSON with (step, seconds, FD) per logged evaluation for each run, and draws them on one plot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve(run: Path) -> dict:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run / "config.json").read_text())
    points = [{"step": r["step"], "seconds": r["elapsed_s"], "fd": r["fd"]} for r in rows if "fd" in r]
    extractor = next((r["fd_extractor"] for r in rows if "fd" in r), None)
    eval_n = next((r["eval_n"] for r in rows if "fd" in r), None)
    return {"run": str(run), "family": config["family"], "dataset": config["data"]["dataset"],
            "metric": f"FD-{extractor}" if extractor else None, "n_generated": eval_n, "weights": "ema",
            "points": points}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--plot", help="write a PNG of FD against training seconds")
    a = p.parse_args()
    curves = [curve(r) for r in a.runs]
    print(json.dumps({"benchmark": "quality_vs_time", "curves": curves}, indent=2))
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
        for c in curves:
            ax.plot([q["seconds"] for q in c["points"]], [q["fd"] for q in c["points"]], marker="o",
                    label=f"{c['family']} ({Path(c['run']).name})")
        ax.set_xlabel("training seconds")
        ax.set_ylabel(curves[0]["metric"] or "FD")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot)


if __name__ == "__main__":
    main()
