"""A fuzz test over the whole CLI: every bad value either works or ends in one line and exit 2.

For every family and every config key, values of the wrong type, zero, negative, huge, NaN, empty
and unknown choices; for every numeric or file argument of `sample`, `eval` and `compare`, the same.
Each call either succeeds (exit 0) or exits 2 with exactly one `genzoo: error:` line on stderr and no
traceback; the checkpoints of the finished runs it points at never change (sha256 before and after).

A seeded sample of the combinations runs in the suite (about a minute on 2 cores);
GENZOO_FUZZ_FULL=1 runs the whole product.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import random
import typing
from pathlib import Path

import pytest

from genzoo.cli import main
from genzoo.registry import FAMILIES, resolve_config
from genzoo.train import checkpoint as ckpt

FULL = os.environ.get("GENZOO_FUZZ_FULL") == "1"
SAMPLE_PER_FAMILY = 40  # train-key combinations per family in the seeded sample
TRIED: dict[str, int] = {}  # reported in the terminal summary (conftest.py)
SKIP_KEYS = {"train.device", "data.root", "data.dataset", "data.download", "model.autoencoder"}


def bad_values(tp) -> list[str]:
    """Command-line strings that are wrong for a field of type `tp` (or right but extreme)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return ["bogus", ""]
    if origin is tuple:
        return ["", "-1", "0", "a", "1000000000", "nan", "1,x"]
    if tp is bool:
        return ["maybe", "", "2"]
    if tp is int:
        return ["0", "-1", "-8", "1000000000000", "x", "", "1.5", "nan"]
    if tp is float:
        return ["0", "-1", "nan", "inf", "-inf", "1e30", "x", ""]
    if tp is str:
        return [""]
    return []


def run_cli(args: list[str]) -> tuple[int, list[str]]:
    """main(args) in this process: (exit code, stderr lines). A traceback fails the test right here."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as e:  # argparse
            code = e.code
    return code, err.getvalue().strip().splitlines()


def assert_works_or_one_line(args: list[str], run: Path | None = None) -> int:
    """The call works (0) or exits 2 with one error line; when it fails, `run`'s checkpoint is unchanged."""
    before = digest(run) if run is not None else None
    code, lines = run_cli(args)
    assert not any("Traceback" in ln or "internal error" in ln for ln in lines), (args, lines)
    errors = [ln for ln in lines if ln.startswith("genzoo: error:")]
    assert code in (0, 2), (args, code, lines)
    if code == 2:
        assert len(errors) == 1, (args, lines)
        assert run is None or digest(run) == before, f"{args} failed and changed {run}'s checkpoint"
    return code


def digest(run: Path) -> str:
    return hashlib.sha256((run / ckpt.CHECKPOINT).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """One tiny finished run per family (the ldm on a tiny spatial VAE), and each checkpoint's hash."""
    root = tmp_path_factory.mktemp("fuzz")
    runs = {}
    base = ["--dataset", "synthetic", "--preset", "tiny", "--steps", "2", "--no-progress"]
    ae = root / "vae-ae"
    assert main(["train", "vae", *base, "--out", str(ae), "--set", "model.latent_channels=2"]) == 0
    for family in FAMILIES:
        extra = ["--set", f"model.autoencoder={ae}"] if family == "ldm" else []
        runs[family] = root / family
        assert main(["train", family, *base, "--out", str(runs[family]), *extra]) == 0
    return root, ae, runs


def config_combinations(family: str, ae: Path) -> list[tuple[str, str]]:
    overrides = [f"model.autoencoder={ae}"] if family == "ldm" else []
    cfg = resolve_config(family, dataset="synthetic", preset="tiny", overrides=overrides)
    combos = []
    for section in ("model", "sampler", "train", "data"):
        obj = getattr(cfg, section)
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            key = f"{section}.{f.name}"
            if key not in SKIP_KEYS:
                combos += [(key, v) for v in bad_values(hints[f.name])]
    return combos


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_config_key_with_bad_values(family, finished_runs, tmp_path):
    root, ae, runs = finished_runs
    combos = config_combinations(family, ae)
    if not FULL:
        combos = random.Random(f"fuzz-{family}").sample(combos, min(SAMPLE_PER_FAMILY, len(combos)))
    extra = [f"model.autoencoder={ae}"] if family == "ldm" else []
    for i, (key, value) in enumerate(combos):
        item = f"{key}={value}"
        # a fresh run: trains two steps or stops with one line
        assert_works_or_one_line(["train", family, "--dataset", "synthetic", "--preset", "tiny", "--steps", "2",
                                  "--no-progress", "--out", str(tmp_path / f"r{i}"), "--set", *extra, item])
        # resuming the finished run with it: a changed key is refused, and its checkpoint stays as it was
        assert_works_or_one_line(["train", family, "--dataset", "synthetic", "--preset", "tiny", "--steps", "2",
                                  "--no-progress", "--out", str(runs[family]), "--resume", "--set", *extra, item],
                                 run=runs[family])
        if key.startswith("sampler."):
            assert_works_or_one_line(["sample", str(runs[family]), "--n", "2", "--out", str(tmp_path / "s.npz"),
                                      "--set", item])
    TRIED["config"] = TRIED.get("config", 0) + len(combos)


ARGUMENT_CASES = [
    *[["sample", "{run}", "--n", v] for v in ("0", "-3", "x", "1e9", "nan")],
    *[["sample", "{run}", "--batch-size", v] for v in ("0", "-1", "x", "1000000")],
    *[["sample", "{run}", "--seed", v] for v in ("-1", "x", str(2**70), "1.5")],
    *[["sample", "{run}", "--n", "2", "--out", v] for v in ("{tmp}/grid.jpg", "{tmp}/noext", "{tmp}", "{file}.png/x.png")],
    *[["eval", "{run}", "--n", v, "--metrics", "fd"] for v in ("0", "1", "-3", "x")],
    *[["eval", "{run}", "--n-ref", v] for v in ("0", "x")],
    *[["eval", "{run}", "--n", "4", "--bpd-n", v] for v in ("0", "-1", "x")],
    *[["eval", "{run}", "--n", "4", "--metrics", v] for v in ("", "fdd", "fd,,x")],
    *[["eval", "{run}", "--out", v] for v in ("{tmp}/e.txt", "{tmp}")],
    ["eval", "--samples", "{file}.npz", "--dataset", "synthetic"],
    ["eval", "--samples", "{tmp}/missing.npz", "--dataset", "synthetic"],
    *[["compare", "--dataset", "synthetic", "--minutes-per-family", v, "--out", "{tmp}/c"]
      for v in ("0", "-1", "nan", "inf", "x")],
    *[["compare", "--dataset", "synthetic", "--steps", v, "--out", "{tmp}/c"] for v in ("0", "-5", "x")],
    *[["compare", "--dataset", "synthetic", "--eval-n", v, "--out", "{tmp}/c"] for v in ("0", "1", "x")],
    *[["compare", "--dataset", "synthetic", "--bpd-n", v, "--out", "{tmp}/c"] for v in ("0", "x")],
    ["compare", "--dataset", "synthetic", "--families", "vea", "--out", "{tmp}/c"],
    ["compare", "--dataset", "synthetic", "--steps", "2", "--out", "{file}.png"],
    *[["train", "vae", "--dataset", "synthetic", "--preset", "tiny", v, w, "--out", "{tmp}/t"]
      for v, w in (("--steps", "0"), ("--steps", "-2"), ("--minutes", "0"), ("--minutes", "nan"), ("--minutes", "-1"))],
    ["train", "vae", "--dataset", "synthetic", "--preset", "tiny", "--out", "{file}.png"],
    ["train", "vae", "--dataset", "synthetic", "--preset", "tiny", "--out", "{run}"],  # exists: needs --resume
    ["train", "vae", "--dataset", "mnsit", "--out", "{tmp}/t"],
    ["data", "prepare", "nope"],
    ["nosuchcommand"],
]


def test_every_argument_with_bad_values(finished_runs, tmp_path):
    root, ae, runs = finished_runs
    file = tmp_path / "a-file"
    file.write_text("not a run")
    (tmp_path / "a-file.npz").write_bytes(b"not an npz")
    (tmp_path / "a-file.png").write_bytes(b"not a png")
    for case in ARGUMENT_CASES:
        args = [a.format(run=runs["vae"], tmp=tmp_path, file=file) for a in case]
        assert_works_or_one_line(args, run=runs["vae"])
    TRIED["arguments"] = len(ARGUMENT_CASES)
