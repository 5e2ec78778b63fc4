"""The performance tables of docs/performance.md, from saved outputs of family_costs.py and peers.py (nothing is re-measured).

    python benchmarks/family_costs.py --preset quick --steps 30 --sample-n 64 > benchmarks/results/family_costs_quick_cpu.json
    python benchmarks/perf_table.py                       # prints the markdown
    python benchmarks/perf_table.py --write               # replaces the tables in docs/performance.md

Reads benchmarks/results/family_costs_quick_cpu.json (2 CPU cores, quick presets) and
family_costs_standard_h100.json (one GPU, standard presets) and the peers' JSON files beside them.
A column whose file is missing says "not yet measured".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
BEGIN, END = "<!-- perf_table.py: begin -->", "<!-- perf_table.py: end -->"  # the generated part of PAGE


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def rows_of(doc: dict | None) -> dict[str, dict]:
    return {r["entry"]: r for r in doc["entries"]} if doc else {}


def cells(row: dict | None) -> list[str]:
    """train img/s (stages joined by +), outside network+optimizer (worst stage, signed: a negative value
    means the trainer beat the fixed-batch timing, i.e. noise), sample img/s."""
    if row is None:
        return ["not yet measured"] * 3
    train = " + ".join(f"{s['train_img_per_s']:.0f}" for s in row["stages"])
    outside = max(s["outside_fbo"] for s in row["stages"])
    return [train, f"{100 * outside:+.0f}%", f"{row['sample_img_per_s']:.3g}"]


def family_table(cpu: dict | None, gpu: dict | None) -> str:
    head = (f"| entry | CPU train img/s | CPU outside net+opt | CPU sample img/s | GPU train img/s | "
            f"GPU outside net+opt | GPU sample img/s |\n|---|---|---|---|---|---|---|")
    cpu_rows, gpu_rows = rows_of(cpu), rows_of(gpu)
    names = list(dict.fromkeys([*cpu_rows, *gpu_rows]))
    lines = [head] + [f"| {n} | " + " | ".join(cells(cpu_rows.get(n)) + cells(gpu_rows.get(n))) + " |" for n in names]
    where = []
    for label, doc in (("CPU", cpu), ("GPU", gpu)):
        if doc:
            threads = f", {doc['threads']} threads" if label == "CPU" else ""
            where.append(f"{label}: {doc['device']}{threads}, preset `{doc['preset']}`, torch {doc['torch']}, "
                         f"{doc['steps']} steps per stage, {doc['sample_n']} samples")
        else:
            where.append(f"{label}: not yet measured")
    return "\n".join(lines) + "\n\n" + "; ".join(where) + "."


VARIANTS = {"ours": "ours", "ours_cl": "ours, channels_last",  # peers.py's variants of our U-Net
            "ours_compiled": "ours, sampler.compile=true (sampling only)"}


def peers_table(docs: list[tuple[str, dict]]) -> str:
    """One row per (machine, precision, variant of ours): the ratios ours / peer of images per second."""
    lines = ["| machine, size, precision | ours as | train vs diffusers | train vs lucidrains | DDIM-20 vs diffusers | "
             "DDIM-20 vs lucidrains | DDIM-50 vs diffusers | DDIM-50 vs lucidrains |", "|---|---|---|---|---|---|---|---|"]
    for label, d in docs:
        tr, sa = d["train_ratio"], d["sample_ratio"]
        precision = "bf16 autocast (all)" if d.get("amp", "none") == "bf16" else "fp32"
        for v, name in VARIANTS.items():
            if f"{v}/diffusers" not in sa["20"]:
                continue
            r = [tr, sa["20"], sa["50"]]
            lines.append(f"| {label}, {d['size']}, {precision} | {name} | " + " | ".join(
                f"{x[f'{v}/{peer}']:.2f}" if f"{v}/{peer}" in x else "–"
                for x in r for peer in ("diffusers", "lucidrains")) + " |")
        fair = "ours_compiled/diffusers_compiled"  # the same torch.compile for both: what compilation adds to ours
        if fair in sa["20"]:
            lines.append(f"| {label}, {d['size']}, {precision} | ours compiled, against diffusers compiled | – | – | "
                         f"{sa['20'][fair]:.2f} | – | {sa['50'][fair]:.2f} | – |")
    return "\n".join(lines)


def tables() -> str:
    out = family_table(load("family_costs_quick_cpu.json"), load("family_costs_standard_h100.json"))
    peers = [(label, d) for label, name in (("2 CPU cores", "peers_quick_cpu.json"),
                                            ("H100", "peers_standard_h100.json"),
                                            ("H100", "peers_standard_h100_bf16.json")) if (d := load(name))]
    if peers:
        out += "\n\n" + peers_table(peers)
    return out


def write(page: Path = PAGE) -> None:
    """Replace what lies between the BEGIN and END markers of the page with the tables."""
    text = page.read_text()
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        raise SystemExit(f"{page}: no {BEGIN} ... {END} block to replace")
    page.write_text(f"{head}{BEGIN}\n{tables()}\n{END}{tail}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write", action="store_true", help=f"replace the tables in {PAGE.relative_to(PAGE.parents[1])}")
    if p.parse_args(argv).write:
        write()
    else:
        print(tables())


if __name__ == "__main__":
    main()
