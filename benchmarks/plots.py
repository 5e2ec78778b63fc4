"""The one line plot the benchmark scripts draw: several curves on log axes, written as a PNG.

    from plots import save_lines   # benchmarks/ is the script's folder, so it is on sys.path
    save_lines("fd.png", [("ddim", nfe, fd), ...], xlabel="network evaluations per sample", ylabel="FD", logx=True)
"""

from __future__ import annotations


def save_lines(path, curves, *, xlabel: str, ylabel: str, logx: bool = False, title: str | None = None) -> None:
    """curves: (label, xs, ys) each, drawn with markers on a log y axis (and a log x axis with logx)."""
    from matplotlib.figure import Figure  # the object API: no pyplot, no backend to switch

    fig = Figure(figsize=(5, 3.5), dpi=120)
    ax = fig.subplots()
    for label, xs, ys in curves:
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log")
    ax.set(yscale="log", xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
