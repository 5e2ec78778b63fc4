"""Package hygiene: only `genzoo.*` imports, no prints in library code."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ["genzoo", "models", "datasets", "train", "evaluation"]
TOP_LEVEL = {"models", "datasets", "train", "evaluation", "notebooks", "benchmarks", "tests"}


def python_files(folders):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_bare_top_level_imports():
    """`import models` / `from datasets import ...` would collide with other packages: use `genzoo.*`."""
    offenders = []
    for path in python_files(LIBRARY + ["tests", "benchmarks"]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in TOP_LEVEL]
    assert offenders == []


def test_no_print_in_library_code():
    """Library code logs or returns; only the user interfaces print: the CLI and the notebooks' helpers."""
    offenders = []
    for path in python_files(LIBRARY):
        if path.name in ("cli.py", "__main__.py", "notebook.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_folders_map_into_the_genzoo_namespace():
    import genzoo.datasets
    import genzoo.evaluation
    import genzoo.models
    import genzoo.train

    for module, folder in [(genzoo.models, "models"), (genzoo.datasets, "datasets"), (genzoo.train, "train"),
                           (genzoo.evaluation, "evaluation")]:
        assert Path(module.__file__).parent == ROOT / folder


def test_an_installed_wheel_holds_every_subpackage():
    """pyproject lists packages by hand: a folder with an __init__.py missing there is missing from a
    non-editable install (genzoo.models.diffusion once was, found on the GPU machine)."""
    import tomllib

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = {name: ROOT / folder for name, folder in tool["package-dir"].items()}
    for name in ("genzoo", "genzoo.models", "genzoo.datasets", "genzoo.train", "genzoo.evaluation"):
        for init in listed[name].rglob("__init__.py"):
            sub = ".".join([name, *init.parent.relative_to(listed[name]).parts])
            assert sub in tool["packages"] and listed.get(sub) == init.parent, f"{sub} is not in pyproject.toml"


def test_the_performance_page_tables_are_the_output_of_perf_table():
    """docs/performance.md's figures come from saved benchmark outputs, not from hand edits (issues 10, 25)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "perf_table.py")], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out and out in (ROOT / "docs" / "performance.md").read_text()
