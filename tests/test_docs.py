"""The documentation works (issue 25): its links resolve, the commands it shows parse, its generated tables
are the generators' output.

- Every relative link and image in README.md, docs/**/*.md, notebooks/README.md and benchmarks/README.md
  points at an existing file; an anchor into a markdown page names one of its headings (GitHub's slugs).
- Every `genzoo ...` command in a code block or an inline code span (also `.venv/bin/genzoo`, after `&&`,
  `python -m genzoo`, `torchrun ... -m genzoo`) parses with the real CLI parser: a known subcommand and known
  flags. Its `--set` keys are known to the family: `train` resolves its config (with its preset) through
  genzoo.registry.resolve_config; `sample` / `eval` take `sampler.*` keys, checked against the family of the
  run when the page trains that run (or its directory name starts with a family); `compare` checks each key
  against the families it names (all, without `--families`; `FAMILY:key=value` against FAMILY).
  Placeholders in capitals (RUN, N, FILE.npz) are fine as values.
- The comparison table shown in README.md and docs/compare.md is the one in the generated report.
Nothing is trained.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted({ROOT / "README.md", ROOT / "notebooks" / "README.md", ROOT / "benchmarks" / "README.md",
                *(ROOT / "docs").rglob("*.md")})

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", re.I)
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(\.\.\.)?")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """The page without its fenced code blocks and inline code (links there are not links)."""
    return INLINE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def links(page: Path):
    text = prose(page.read_text())
    for m in [*LINK.finditer(text), *HTML_SRC.finditer(text)]:
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # http(s), mailto: not relative
        yield target


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_and_image_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {rel(dest)}")
    assert broken == [], f"{rel(page)}: broken links"


def test_the_pages_link_to_each_other():
    """Every docs page is reachable from the README (in one or two clicks)."""
    readme = set()
    for target in links(ROOT / "README.md"):
        readme.add((ROOT / target.partition("#")[0]).resolve())
    reachable = set(readme)
    for page in readme:
        if page.suffix == ".md" and page.is_file():
            reachable |= {(page.parent / t.partition("#")[0]).resolve() for t in links(page)}
    docs = {p.resolve() for p in (ROOT / "docs").glob("*.md")}
    assert docs - reachable == set()


# ----------------------------------------------------------------------------------------------------------
# commands


def command_lines(page: Path):
    """(source text, argv after `genzoo`) for every genzoo command shown on the page."""
    text = page.read_text()
    snippets = []
    for block in FENCE.findall(text):
        snippets += block.replace("\\\n", " ").splitlines()
    snippets += [m.group(1) for m in INLINE.finditer(FENCE.sub("", text))]
    for snippet in snippets:
        try:
            words = shlex.split(snippet, comments=True)
        except ValueError:
            continue
        command: list[str] = []
        for w in words + ["&&"]:
            if w in ("&&", "||", ";", "|"):
                if argv := genzoo_argv(command):
                    yield snippet.strip(), argv
                command = []
            else:
                command.append(w)


def genzoo_argv(words: list[str]) -> list[str] | None:
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]  # VAR=value before the command
    if not words:
        return None
    if re.fullmatch(r"(\S*/)?genzoo", words[0]):  # genzoo, .venv/bin/genzoo (not the folder genzoo/)
        argv = words[1:]
    elif "-m" in words and words.index("-m") + 1 < len(words) and words[words.index("-m") + 1] == "genzoo" \
            and Path(words[0]).name in ("python", "python3", "torchrun"):
        argv = words[words.index("-m") + 2:]
    else:
        return None
    return argv or None


def parser():
    from genzoo import cli

    build = getattr(cli, "build_parser", None) or getattr(cli, "_parser")
    return build()


def subcommands() -> dict:
    import argparse

    return next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def placeholder(word: str) -> bool:
    return bool(PLACEHOLDER.fullmatch(word))


def concrete(argv: list[str]) -> list[str]:
    """Placeholders in capitals stand for values: give typed options a number, keep the rest."""
    return ["1" if placeholder(w) else w for w in argv]


def trained_runs(page: Path) -> dict[str, str]:
    """run directory -> family, for every `genzoo train FAMILY ... --out DIR` on the page."""
    runs = {}
    for _, argv in command_lines(page):
        if argv[0] == "train" and len(argv) > 1:
            try:
                args = parser().parse_args(concrete(argv))
            except SystemExit:
                continue
            runs[args.out or f"runs/{args.family}-{args.dataset or 'mnist'}"] = args.family
    return runs


def family_of_run(run_dir: str | None, runs: dict[str, str], families) -> str | None:
    if not run_dir or placeholder(run_dir):
        return None
    if run_dir in runs:
        return runs[run_dir]
    name = Path(run_dir).name.split("-")[0]
    return name if name in families else None


def check_keys(family: str, items: list[str], preset: str = "quick") -> list[str]:
    from genzoo.config import DataConfig, RunConfig, apply_overrides
    from genzoo.errors import ConfigError
    from genzoo.registry import ADAPTERS, COMPONENTS, FAMILIES, resolve_config
    from genzoo.train.trainer import TrainConfig

    if placeholder(family):
        return []
    if family in ADAPTERS:  # its model.base names a run that does not exist here: check the keys, not the base
        cfg = RunConfig(family, ADAPTERS[family].config(), None, DataConfig(), TrainConfig())
        try:
            apply_overrides(cfg, [i for i in items if not i.startswith("sampler.")])
        except ConfigError as e:
            return [f"{family}: {e}"]
        return []
    if family not in FAMILIES and family not in COMPONENTS:
        return [f"unknown family {family!r}"]
    try:
        resolve_config(family, preset=preset, overrides=items)
    except ConfigError as e:
        return [f"{family}: {e}"]
    return []


COMMANDS = [(page, source, argv) for page in PAGES for source, argv in command_lines(page)]


def test_the_pages_show_commands():
    assert len(COMMANDS) > 40
    assert {argv[0] for _, _, argv in COMMANDS} >= {"list", "train", "sample", "eval", "compare", "report"}


@pytest.mark.parametrize("page, source, argv", COMMANDS, ids=[f"{rel(p)}: {s[:70]}" for p, s, _ in COMMANDS])
def test_every_shown_command_parses(page, source, argv):
    from genzoo.registry import FAMILIES

    if "..." in argv or len(argv) == 1:  # a sketch (`genzoo train ...`) or a subcommand named in prose
        sub = subcommands().get(argv[0])
        assert sub is not None, f"{rel(page)}: `{source}`: unknown subcommand {argv[0]!r}"
        unknown = [w.split("=")[0] for w in argv if w.startswith("--") and w.split("=")[0] not in sub._option_string_actions]
        assert unknown == [], f"{rel(page)}: `{source}`: unknown flags"
        return
    try:
        args = parser().parse_args(concrete(argv))
    except SystemExit:
        pytest.fail(f"{rel(page)}: `{source}` does not parse (unknown subcommand or flag, or a bad value)")
    items = [s for s in getattr(args, "set", []) if not placeholder(s)]
    problems = []
    if args.command == "train":
        problems = check_keys(args.family, items, preset=args.preset)
    elif args.command in ("sample", "eval"):
        problems = [f"{s}: only sampler.* keys" for s in items if not s.startswith("sampler.")]
        family = family_of_run(args.run_dir, trained_runs(page), FAMILIES)
        if family and not problems:
            problems = check_keys(family, items)
    elif args.command == "compare":
        named = [f.strip() for f in (args.families or "").split(",") if f.strip()]
        from genzoo.compare import ENTRIES

        families = sorted({st.family for n in (named or ENTRIES) for st in ENTRIES.get(n, ())}) or list(FAMILIES)
        problems = [f"unknown entry {n!r}" for n in named if n not in ENTRIES]
        for item in items:
            key = item.partition("=")[0]
            if ":" in key:
                fam, _, rest = item.partition(":")
                problems += check_keys(fam.strip(), [rest])
            elif all(check_keys(f, [item]) for f in families):
                problems.append(f"{item}: known to none of {', '.join(families)}")
    assert problems == [], f"{rel(page)}: `{source}`"


# ----------------------------------------------------------------------------------------------------------
# generated tables


def results_table(text: str) -> str:
    """The comparison's table: the lines from its header row to the first non-table line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| entry | stages |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("page", ["README.md", "docs/compare.md"])
def test_the_comparison_table_is_the_generated_reports(page):
    """The table of the main command is benchmarks/compare_table.py's output from the report's results.json
    (the report's own table), never edited by hand."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_table", ROOT / "benchmarks" / "compare_table.py")
    compare_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_table)
    assert compare_table.current(ROOT / page) == compare_table.block(ROOT / page)
    assert results_table(compare_table.current(ROOT / page)), "the block holds the table"


def test_the_readme_stays_a_front_door():
    """Issue 25: about 150 lines; the details live in docs/."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 160


def test_the_lora_table_is_the_benchmark_output():
    """The README's LoRA table and docs/adapters.md's are `benchmarks/lora.py --table` of the committed results."""
    import subprocess
    import sys

    for page, tasks in (("README.md", "style"), ("docs/adapters.md", "style,domain")):
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lora.py"), "--table",
                              str(ROOT / "benchmarks" / "results" / "lora_cpu.jsonl"), "--tasks", tasks],
                             capture_output=True, text=True, check=True).stdout.strip()
        text = (ROOT / page).read_text()
        block = text.split("<!-- lora.py --table: begin -->")[1].split("<!-- lora.py --table: end -->")[0]
        assert block.strip() == out, f"{page}: paste `python benchmarks/lora.py --table ... --tasks {tasks}`"
