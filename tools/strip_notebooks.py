"""Strip notebooks for git: clear outputs, execution counts, timings and widget state.

    python tools/strip_notebooks.py                 # every notebooks/*.ipynb, in place
    python tools/strip_notebooks.py PATH.ipynb ...  # these files
    python tools/strip_notebooks.py --check         # list unstripped notebooks, exit 1 if any

tests/test_notebooks.py enforces the result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def strip(nb) -> bool:
    """Strip `nb` in place; True if anything changed."""
    changed = nb.metadata.pop("widgets", None) is not None
    for cell in nb.cells:
        changed |= cell.metadata.pop("execution", None) is not None
        if cell.cell_type == "code":
            changed |= bool(cell.outputs) or cell.execution_count is not None
            cell.outputs, cell.execution_count = [], None
    return changed


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            dirty.append(path)
            if not check:
                nbformat.write(nb, path)
    for path in dirty:
        print(f"{'not stripped' if check else 'stripped'}: {path}")
    return 1 if check and dirty else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
