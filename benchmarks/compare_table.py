"""The comparison table of README.md and docs/compare.md, written from the report the README command made.

    .venv/bin/genzoo compare --dataset mnist --minutes-per-family 2.5 --eval-n 1000 --out reports/mnist
    python benchmarks/compare_table.py --from reports/mnist   # copies the report into docs/compare-mnist/, then --write
    python benchmarks/compare_table.py --write                # rewrites the tables from docs/compare-mnist/results.json
    python benchmarks/compare_table.py                        # prints README.md's block

The table is `genzoo.evaluation.report.results_table` of the committed results.json (the report's own table),
written between the markers below in each page, with a link to the report and its sample grid.
tests/test_docs.py keeps the pages equal to this script's output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "compare-mnist"  # the committed report of the README command
PAGES = (ROOT / "README.md", ROOT / "docs" / "compare.md")
BEGIN, END = "<!-- compare_table.py: begin -->", "<!-- compare_table.py: end -->"  # the generated part of a page
COPIED = ("results.json", "report.md", "samples.png", "quality_vs_time.png", "quality_vs_sampling_cost.png",
          "speed.png")  # what the report directory contributes to docs/ (index.html embeds the same images)


def block(page: Path, report: Path = REPORT) -> str:
    """The generated part of `page`: the report's results table and links to the report and its samples."""
    from genzoo.evaluation.report import results_table, to_markdown

    doc = json.loads((report / "results.json").read_text())
    table = to_markdown([("table", *results_table(doc))]).rstrip()
    rel = lambda name: os.path.relpath(report / name, page.parent)  # noqa: E731
    return (f"{table}\n\nWritten by `python benchmarks/compare_table.py --write` from "
            f"[{rel('results.json')}]({rel('results.json')}) (the full report: [{rel('report.md')}]({rel('report.md')}); "
            f"the samples: [{rel('samples.png')}]({rel('samples.png')})).")


def current(page: Path) -> str:
    """What lies between the markers of `page` now."""
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{page}: no {BEGIN} ... {END} block")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def write(page: Path, report: Path = REPORT) -> None:
    text = page.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    current(page)  # the markers are there
    page.write_text(f"{head}{BEGIN}\n{block(page, report)}\n{END}{tail}")


def copy_report(source: Path, report: Path = REPORT) -> None:
    """The report files of `source` (a `genzoo compare --out` directory) into docs/, replacing the old ones."""
    missing = [name for name in COPIED if not (source / name).is_file()]
    if missing:
        raise SystemExit(f"{source} is not a finished comparison report (no {', '.join(missing)})")
    report.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copyfile(source / name, report / name)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write", action="store_true", help="rewrite the blocks of README.md and docs/compare.md")
    p.add_argument("--from", dest="source", type=Path, help="a report directory to copy into docs/compare-mnist "
                                                              "first (implies --write)")
    args = p.parse_args(argv)
    if args.source:
        copy_report(args.source)
    if args.write or args.source:
        for page in PAGES:
            write(page)
    else:
        print(block(PAGES[0]))


if __name__ == "__main__":
    main()
