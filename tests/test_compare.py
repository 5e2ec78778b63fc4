"""`genzoo compare` and `genzoo report`: equal budgets, one protocol, a self-contained report, resumable.

Fast: tiny presets on scikit-learn's real 8x8 digits (its committed classifier makes FD cheap; synthetic
data has none, so its metrics would need the Inception network).
"""

import json
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import require
from genzoo import compare as C
from genzoo.cli import main
from genzoo.contract import GenerativeModel
from genzoo.datasets import importers
from genzoo.errors import ConfigError
from genzoo.evaluation import harness, text
from genzoo.evaluation.report import fmt, results_table
from genzoo.registry import FAMILIES, Family
from genzoo.train import checkpoint as ckpt
from genzoo.train import trainer

REPORT_FILES = ("index.html", "report.md", "results.json", "samples.png", "quality_vs_time.png",
                "quality_vs_sampling_cost.png", "speed.png")
PROTOCOL = C.Protocol(n=120, n_ref=300, n_bpd=50, grid_n=20, device="cpu")
FD_ONLY = C.Protocol(n=60, n_ref=300, grid_n=10, metrics=("fd",), device="cpu")  # for tests about training


def run_compare(out, families, steps=10, **kw):
    return C.compare(dataset="digits", families=families, preset="tiny", budget=C.Budget("steps", steps), out=out,
                     protocol=kw.pop("protocol", PROTOCOL), progress=False, command="test", **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One compare of vae and gan, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("compare") / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENZOO_DATA", str(tmp_path_factory.getbasetemp() / "data"))
        doc = run_compare(out, ["vae", "gan"])
    return out, doc


# ----------------------------------------------------------------------------------------
# a second-stage family for the stage wiring: a refiner on top of a frozen VAE, with a `steps` knob


@dataclass
class RefinerConfig:
    autoencoder: str = ""
    class_cond: bool = False


@dataclass
class RefinerSampler:
    steps: int = 2


class Refiner(GenerativeModel):
    """Samples the frozen VAE, then applies a learned 3x3 residual `steps` times (1 + steps network passes)."""

    phases = ("main",)
    autoencoder_families = ("vae",)

    def __init__(self, cfg, image_shape, num_classes=0, autoencoder=None):
        super().__init__()
        assert autoencoder is not None, "build_model passes the first stage's run"
        self.num_classes, self.autoencoder = 0, autoencoder
        self.refine = nn.Conv2d(image_shape[0], image_shape[0], 3, padding=1)

    def parameters_for(self, phase):
        return self.refine.parameters()

    def loss(self, batch, phase="main"):
        return {"loss": (batch.images + 0.1 * self.refine(batch.images) - batch.images).pow(2).mean()}

    def network_evaluations(self, steps=2):
        return 1 + steps

    @torch.no_grad()
    def sample(self, n, *, labels=None, generator=None, steps=2):
        x = self.autoencoder.sample(n, generator=generator)
        for _ in range(steps):
            x = (x + 0.1 * self.refine(x)).clamp(-1, 1)
        return x


REFINER = Family("refiner", "test-only second stage", Refiner, RefinerConfig, RefinerSampler,
                 {"tiny": {"train": {"steps": 10, "batch_size": 16, "warmup_steps": 1, "log_every": 2,
                                     "sample_every": 0, "ckpt_every": 100, "n_grid": 4}}})


@pytest.fixture
def two_stage(monkeypatch):
    monkeypatch.setitem(FAMILIES, "refiner", REFINER)
    monkeypatch.setitem(C.ENTRIES, "vae+refiner", (C.Stage("vae", share=0.5),
                                                   C.Stage("refiner", share=0.5, autoencoder_from=0)))


# ----------------------------------------------------------------------------------------


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_rendering_a_report_leaves_the_callers_matplotlib_backend_alone(finished, tmp_path):
    """A notebook that calls compare() keeps its inline figures: the report draws without pyplot."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        C.report_from_runs([finished[0] / "runs" / "vae" / "vae"], out=tmp_path, protocol=PROTOCOL)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)


def test_a_compare_writes_every_report_file(finished):
    out, doc = finished
    for name in REPORT_FILES + ("samples-vae.png", "samples-gan.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("samples.png", "speed.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert [e["name"] for e in doc["entries"]] == ["vae", "gan"]
    assert {p.parent.name for p in (out / "runs").glob("*/*/checkpoint.pt")} == {"vae", "gan"}
    md = (out / "report.md").read_text()
    assert "| vae | vae |" in md and "| gan | gan |" in md and "![" in md
    assert "None shown" in md, "no published number matches a digits protocol: the report says so"


def test_index_html_parses_and_embeds_every_image(finished):
    out, _ = finished
    parser = Images()
    parser.feed((out / "index.html").read_text())
    assert len(parser.sources) == 4
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,") or (out / src).is_file(), src[:60]


def test_results_json_carries_protocol_machine_and_costs(finished):
    out, _ = finished
    doc = json.loads((out / "results.json").read_text())
    assert doc["protocol"]["n"] == 120 and doc["protocol"]["metrics"] == ["fd", "kid", "pr", "is", "acc", "bpd"]
    assert doc["protocol"]["reference"] == "digits/train" and doc["command"] == "test"
    for key in ("cpu", "cpu_count", "torch_threads", "gpu", "torch", "python"):
        assert key in doc["machine"]
    assert doc["budget"]["kind"] == "steps" and doc["budget"]["value"] == 10
    for e in doc["entries"]:
        for name, m in e["eval"]["metrics"].items():
            assert "protocol" in m and "metric" in m["protocol"], name
        assert e["eval"]["metrics"]["fd"]["protocol"]["n_generated"] == 120
        (stage,) = e["stages"]
        assert stage["step"] == 10 and stage["images_seen"] == 10 * stage["batch_size"] == e["images_seen"]
        assert stage["train_s"] > 0 and stage["train_img_per_s"] > 0 and e["eval"]["cost"]["sample_img_per_s"] > 0
    vae = doc["entries"][0]["eval"]["metrics"]
    assert "bound" in vae["bpd"]["protocol"]["metric"] and "bpd" not in doc["entries"][1]["eval"]["metrics"]
    assert vae["bpd"]["protocol"]["n_reference"] == 50 and "first n=50 images" in doc["protocol"]["bits_per_dim"]


def test_the_table_matches_genzoo_eval_of_the_same_run(finished, capsys):
    out, doc = finished
    knobs = [f"sampler.{k}" for k in C.ENTRIES["gan"][-1].sampler + C.ENTRIES["gan"][-1].guidance]
    assert main(["eval", str(out / "runs" / "gan" / "gan"), "--n", "120", "--n-ref", "300", "--device", "cpu",
                 "--no-progress", *(["--set", *knobs] if knobs else [])]) == 0
    direct = json.loads(capsys.readouterr().out)["metrics"]
    ours = doc["entries"][1]["eval"]["metrics"]
    for k in ("fd", "kid", "precision", "recall", "class_score"):
        assert ours[k]["value"] == pytest.approx(direct[k]["value"], rel=1e-9), k


def test_resume_of_a_finished_compare_retrains_and_reevaluates_nothing(finished, monkeypatch):
    out, doc = finished
    def mtimes_of_runs():
        return {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file() and p.name != C.SESSIONS}

    mtimes = mtimes_of_runs()

    def forbidden(*a, **k):
        raise AssertionError("a finished comparison was recomputed")

    monkeypatch.setattr(trainer, "train", forbidden)
    monkeypatch.setattr(harness, "evaluate_run", forbidden)
    monkeypatch.setattr(harness, "generate", forbidden)
    again = run_compare(out, ["vae", "gan"], resume=True)
    assert mtimes_of_runs() == mtimes, "no run file was written, none added"
    assert all(e["eval_cached"] for e in again["entries"]) and again["sessions"][-1]["train_s"] == 0
    assert [s["command"] for s in again["sessions"]] == ["test", "test"], "both sessions are listed"
    for a, b in zip(doc["entries"], again["entries"]):
        assert a["eval"]["metrics"]["fd"] == b["eval"]["metrics"]["fd"]


def test_an_existing_comparison_is_never_overwritten_nor_reused_with_another_budget(finished):
    out, _ = finished
    with pytest.raises(ConfigError, match="--resume"):
        run_compare(out, ["vae", "gan"])
    with pytest.raises(ConfigError, match="train.steps: 10 -> 12"):
        run_compare(out, ["vae", "gan"], steps=12, resume=True)


def test_an_interrupted_stage_is_continued_not_restarted(tmp_path):
    entry = C.stage_configs("vae", C.ENTRIES["vae"], dataset="digits", preset="tiny", budget=C.Budget("steps", 10),
                            overrides=[], runs_dir=tmp_path / "runs")
    trainer.train(entry.configs[0], entry.dirs[0], stop_after=4, progress=False)  # as if Ctrl-C at step 4
    assert C.run_status(entry.dirs[0])[0] == "partial"
    doc = run_compare(tmp_path, ["vae"], resume=True, protocol=FD_ONLY)
    rows = (entry.dirs[0] / ckpt.METRICS).read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows if '"event"' in r] == [4, 10], "one session to 4, then 4 -> 10"
    assert doc["entries"][0]["stages"][0]["step"] == 10


def test_unknown_families_are_clear_errors_and_every_entry_is_registered(tmp_path):
    with pytest.raises(ConfigError, match="unknown family 'vea'.*vae"):
        run_compare(tmp_path, ["vea"])
    with pytest.raises(ConfigError, match="vae is named twice"):
        run_compare(tmp_path, ["vae", "vae"])
    assert not (tmp_path / "runs").exists()
    assert all(s.family in FAMILIES for stages in C.ENTRIES.values() for s in stages)
    chosen = [n for n, _ in C.select_entries()]
    assert chosen[:len(C.ENTRIES)] == list(C.ENTRIES) and set(FAMILIES) <= set(chosen), "every family is compared"


def test_cli_unknown_family_is_one_line(capsys, tmp_path):
    assert main(["compare", "--dataset", "digits", "--families", "vae,nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown family 'nope'" in err


def test_a_two_stage_entry_wires_its_stages_and_counts_both(two_stage, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["compare", "--dataset", "digits", "--families", "vae+refiner", "--preset", "tiny", "--steps", "20",
                 "--out", str(out), "--eval-n", "60", "--n-ref", "300", "--grid-n", "10", "--sampler-steps", "1,3",
                 "--metrics", "fd",
                 "--device", "cpu", "--no-progress"])
    assert code == 0 and "index.html" in capsys.readouterr().out
    first, second = out / "runs" / "vae+refiner" / "vae", out / "runs" / "vae+refiner" / "refiner"
    cfg = json.loads((second / ckpt.CONFIG).read_text())
    assert cfg["model"]["autoencoder"] == str(first.resolve())
    assert cfg["train"]["steps"] == 10 and json.loads((first / ckpt.CONFIG).read_text())["train"]["steps"] == 10
    doc = json.loads((out / "results.json").read_text())
    (e,) = doc["entries"]
    assert e["two_stage"] and [s["family"] for s in e["stages"]] == ["vae", "refiner"]
    assert e["train_s"] == pytest.approx(sum(s["train_s"] for s in e["stages"]))
    assert e["images_seen"] == 10 * 32 + 10 * 16
    assert e["eval"]["cost"]["network_evaluations_per_sample"] == 3
    assert [(s["steps"], s["cost"]["network_evaluations_per_sample"]) for s in e["sweep"]] == [(1, 2), (3, 4)]
    assert "count both stages" in (out / "report.md").read_text()
    # the first stage's reconstructions bound the entry's quality; the report shows them
    recon = e["first_stage"]["metrics"]
    assert recon["fd"]["value"] >= 0 and 0 < recon["mse"]["value"] < 1 and recon["psnr"]["value"] > 0
    assert "First stages" in (out / "report.md").read_text()

    # `genzoo report` on the last stage alone finds its first stage through model.autoencoder
    assert main(["report", str(second), "--out", str(tmp_path / "again"), "--eval-n", "60", "--n-ref", "300",
                 "--grid-n", "10", "--metrics", "fd", "--device", "cpu", "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert [s["family"] for s in again["entries"][0]["stages"]] == ["vae", "refiner"]
    assert again["entries"][0]["eval"]["metrics"]["fd"] == e["eval"]["metrics"]["fd"]
    assert again["entries"][0]["eval_cached"], "the same protocol reuses the cached evaluation"
    for name in REPORT_FILES:
        assert (tmp_path / "again" / name).is_file()


def test_published_numbers_stand_beside_ours_only_under_their_protocol():
    from genzoo.evaluation.report import anchors_for

    def entry(dataset, n, split="train", cond=False):
        fid = {"value": 5.0, "protocol": {"metric": "FID", "n_generated": n, "reference": f"{dataset}/{split}"}}
        return {"families": ["ddpm"], "dataset": dataset, "stages": [{"class_cond": cond}],
                "eval": {"metrics": {"fid": fid}}}

    assert [a["value"] for a in anchors_for(entry("cifar10", 50000))] == [3.17]
    assert anchors_for(entry("cifar10", 10000)) == [], "FID-10k is not FID-50k"
    assert anchors_for(entry("cifar10", 50000, split="test")) == []
    assert anchors_for(entry("cifar10", 50000, cond=True)) == []
    assert anchors_for(entry("mnist", 50000)) == []


def test_overrides_apply_to_every_stage_or_to_one_family(tmp_path):
    def resolve(*items):
        return [C.stage_configs(n, C.ENTRIES[n], dataset="digits", preset="tiny", budget=C.Budget("minutes", 3),
                                overrides=list(items), runs_dir=tmp_path).configs[0] for n in ("vae", "gan")]

    vae, gan = resolve("model.class_cond=true", "gan:train.lr=1e-4", "train.threads=1")
    assert vae.model.class_cond and gan.model.class_cond and vae.train.threads == gan.train.threads == 1
    assert gan.train.lr == 1e-4 and vae.train.lr != 1e-4
    assert vae.train.minutes == gan.train.minutes == 3 and vae.train.steps == 0
    with pytest.raises(ConfigError, match="unknown family 'gna'"):
        resolve("gna:train.lr=1e-4")
    with pytest.raises(ConfigError, match="entry vae, stage vae: unknown key 'model.z_channels'"):
        resolve("model.z_channels=3")


def test_entries_must_train_on_the_same_images_and_fit_the_protocol(tmp_path):
    with pytest.raises(ConfigError, match="different image shapes.*vae/vae 1x16x16, gan/gan 1x8x8"):
        run_compare(tmp_path, ["vae", "gan"], overrides=["vae:data.image_size=16"])
    with pytest.raises(ConfigError, match="classifier takes.*--metrics fid,kid,pr,bpd"):
        run_compare(tmp_path, ["vae", "gan"], overrides=["data.image_size=16"])
    assert not (tmp_path / "runs").exists(), "checked before anything is trained"


def test_the_real_vqvae_entry_trains_its_prior_on_its_own_vqvae(tmp_path):
    doc = run_compare(tmp_path, ["vqvae"], steps=4, overrides=["data.image_size=0"],
                      protocol=C.Protocol(n=20, n_ref=300, grid_n=10, metrics=("fd",), device="cpu"))
    (e,) = doc["entries"]
    assert [s["family"] for s in e["stages"]] == ["vqvae", "transformer"] and [s["step"] for s in e["stages"]] == [2, 2]
    prior = json.loads((tmp_path / "runs" / "vqvae" / "transformer" / ckpt.CONFIG).read_text())
    assert prior["model"]["autoencoder"] == str((tmp_path / "runs" / "vqvae" / "vqvae").resolve())
    assert e["eval"]["metrics"]["fd"]["value"] > 0


def test_a_stage_can_map_the_comparison_preset_to_its_own():
    # the VQ-VAE entry's prior stage trains the transformer's `prior` preset when the comparison says quick
    entry = C.stage_configs("vqvae", C.ENTRIES["vqvae"], dataset="mnist", preset="quick", budget=C.Budget("steps", 10),
                            overrides=[], runs_dir=Path("/nonexistent"))
    vq, prior = entry.configs
    assert (vq.model.channels, prior.model.d_model) == (32, 128)  # vqvae quick, transformer prior


def test_the_unguided_row_undoes_guidance_that_the_runs_own_sampler_sets(tmp_path):
    from genzoo.registry import resolve_config

    run = {"family": "transformer", "run": str(tmp_path)}  # today's preset sets no guidance; the saved run did
    saved = resolve_config("transformer", dataset="mnist", preset="short", overrides=["sampler.cfg_scale=3"])
    (tmp_path / ckpt.CONFIG).write_text(saved.to_json())
    assert C.unguided_knobs(run, ("cfg_scale=3",)) == ["cfg_scale=1.0"]
    saved = resolve_config("transformer", dataset="mnist", preset="short")
    (tmp_path / ckpt.CONFIG).write_text(saved.to_json())
    assert C.unguided_knobs(run, ("cfg_scale=3",)) == []  # nothing to undo: the cached evaluation's key stays the same


@pytest.mark.parametrize("dataset", ["mnist", "digits"])
def test_the_quick_comparison_runs_dit_and_transformer_short_and_the_standard_one_their_own(dataset):
    def config(name, preset):
        (cfg,) = C.stage_configs(name, C.ENTRIES[name], dataset=dataset, preset=preset,
                                 budget=C.Budget("minutes", 2.5), overrides=[], runs_dir=Path("/nonexistent")).configs
        return cfg

    dit, ar = config("dit", "quick"), config("transformer", "quick")
    assert (dit.model.patch, ar.model.patch, ar.model.local_ratio, ar.train.batch_size) == (7, 4, 1, 8)
    assert (config("dit", "standard").model.patch, config("transformer", "standard").model.patch) == (2, 1)
    # 7 x 7 patches of an 8 x 8 digit: padded to whole patches, the denoiser returns the image's shape
    model = FAMILIES["dit"].model(dit.model, (1, 8, 8) if dataset == "digits" else (1, 28, 28), 10)
    x = torch.randn(2, *model.image_shape)
    assert model.net(x, torch.tensor([1, 2]), torch.tensor([3, 4])).shape == x.shape


# ----------------------------------------------------------------------------------------
# issue 20: one conditioning, the budget used, the requested class, a curve for every entry


def test_every_entry_is_class_conditional_by_default_and_reads_its_requested_class(finished):
    out, doc = finished
    assert doc["conditioning"] == "class-conditional"
    for e in doc["entries"]:
        assert e["class_cond"] and all(s["class_cond"] for s in e["stages"])
        acc = e["eval"]["metrics"]["label_accuracy"]
        assert 0 <= acc["value"] <= 1 and len(acc["per_class"]) == 10
    md = (out / "report.md").read_text()
    assert "every entry is class-conditional" in md and "requested class ↑" in md


def test_every_entry_draws_an_in_loop_curve_off_its_budget_and_shows_the_budget_used(finished):
    out, doc = finished
    for e in doc["entries"]:
        (stage,) = e["stages"]
        assert [p["step"] for p in stage["in_loop_fd"]] == [3, 5, 8, 10], "4 points over the 10 steps"
        assert stage["config"]["train"]["eval_n"] == C.IN_LOOP_N[0] and stage["in_loop_eval_s"] > 0
        assert e["budget_used"] == stage["budget_used"] == 1.0  # a steps budget: steps / train.steps
    assert "| budget used |" in (out / "report.md").read_text()


def test_unconditional_comparison_and_no_mixing_of_the_two(tmp_path, capsys):
    out = tmp_path / "report"
    args = ["compare", "--dataset", "digits", "--families", "vae,pixelcnn", "--preset", "tiny", "--steps", "4", "--out",
            str(out), "--eval-n", "60", "--n-ref", "300", "--grid-n", "10", "--device", "cpu", "--no-progress"]
    assert main(args + ["--unconditional"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["conditioning"] == "unconditional" and not doc["entries"][0]["class_cond"]
    assert any(g.startswith("cfg_scale=") for g in C.ENTRIES["pixelcnn"][-1].guidance)
    assert [e["guidance"] for e in doc["entries"]] == [list(C.ENTRIES["vae"][-1].guidance), []], \
        "the VAE's temperature stays; cfg_scale needs labels to guide by"
    assert "label_accuracy" not in doc["entries"][0]["eval"]["metrics"]
    assert "every entry is unconditional" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2, "a class-conditional --resume into an unconditional report"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unconditional comparison and this one is class-conditional" in err
    assert main(args + ["--resume", "--unconditional"]) == 0, "the same conditioning continues"


@pytest.mark.real_data
def test_a_text_comparison_shares_one_text_encoder_and_shows_prompt_grids(tmp_path, capsys):
    """--text: one clip run, trained first and outside the budgets, read by every entry; the table says what the
    samples show of their prompts; the grid is one prompt per row, as `genzoo sample --prompts` draws it."""
    require(importers.mnist_source(), importers.MNIST_INSTALL)
    out = tmp_path / "report"
    args = ["compare", "--dataset", "mnist", "--families", "ddpm", "--preset", "tiny", "--steps", "4", "--out",
            str(out), "--eval-n", "40", "--n-ref", "300", "--grid-n", "20", "--metrics", "fd,acc", "--device", "cpu",
            "--no-progress", "--set", "train.threads=1"]
    assert main(args + ["--text"]) == 0
    doc = json.loads((out / "results.json").read_text())
    encoder = out / "runs" / C.TEXT_ENCODER_DIR / "clip"
    assert doc["conditioning"] == "text-conditional"
    te = doc["text_encoder"]
    assert te["run"] == str(encoder) and te["step"] == 20, "the clip preset's own steps, not --steps"
    assert 0 <= te["scores"]["metrics"]["zero_shot_accuracy"] <= 1
    (e,) = doc["entries"]
    cfg = e["stages"][-1]["config"]
    assert cfg["model"]["text_encoder"] == str(encoder.resolve()) and cfg["data"]["captions"]
    assert e["conditioning"] == "text-conditional" and e["stages"][-1]["step"] == 4
    m = e["eval"]["metrics"]
    for key in ("fd", "label_accuracy", "thickness_accuracy", "slant_accuracy", "clip_score"):
        assert key in m, key
    held_out = text.heldout_prompts("mnist", 40)
    assert m["fd"]["protocol"]["prompt_set"] == "heldout" and repr(held_out.texts[0]) in m["clip_score"]["protocol"][
        "prompts"], "scored on the captions of held-out test images"
    assert e["stages"][-1]["in_loop_fd"], "the in-loop curve draws from the evaluation prompts"
    rows = text.grid_prompts("mnist", 10).texts
    assert e["grid_prompts"] == rows
    md = (out / "report.md").read_text()
    for phrase in ("every entry reads captions", "Text encoder: the `clip` run", "requested thickness ↑",
                   "CLIP score (zoo's) ↑", '"a thin, left-leaning zero"', "ddpm (text-cond.)"):
        assert phrase in md, phrase
    (grid,) = (out / "runs" / "ddpm" / "ddpm").glob("grid-*.npz")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(rows) + "\n")
    knobs = [f"sampler.{k}" for k in C.ENTRIES["ddpm"][-1].sampler + C.ENTRIES["ddpm"][-1].guidance]
    assert main(["sample", str(out / "runs" / "ddpm" / "ddpm"), "--prompts", str(prompts), "--n", "20", "--seed", "0",
                 "--out", str(tmp_path / "s.npz"), "--set", *knobs]) == 0
    with np.load(grid) as g, np.load(tmp_path / "s.npz") as f:
        assert np.array_equal(g["images"], f["images"]) and int(g["nrow"]) == 2, "rows of 2: 20 samples, 10 prompts"
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2, "a class-conditional --resume into a text report"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a text-conditional comparison" in err and "with --text" in err
    assert main(args + ["--text", "--resume"]) == 0, "the same conditioning continues, reusing everything"
    capsys.readouterr()
    assert main(args + ["--text", "--families", "ddpm,gan", "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gan cannot read text" in err


def test_a_set_that_contradicts_the_conditioning_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="model.class_cond=false contradicts this class-conditional comparison"):
        run_compare(tmp_path, ["vae"], overrides=["model.class_cond=false"])
    with pytest.raises(ConfigError, match="contradicts this unconditional comparison"):
        run_compare(tmp_path, ["gan"], overrides=["gan:model.class_cond=true"], conditional=False)


def test_the_two_stage_entries_condition_only_their_generating_stage():
    for name in ("vqvae", "ldm"):
        budget = C.Budget("minutes", 2.5)
        in_loop = tuple(C.in_loop_overrides(budget, C.Protocol(n=1000)))
        entry = C.stage_configs(name, C.ENTRIES[name], dataset="mnist", preset="quick", budget=budget,
                                overrides=[], runs_dir=Path("/nonexistent"), in_loop=in_loop)
        first, last = entry.configs
        assert not first.model.class_cond and last.model.class_cond, name
        assert first.train.eval_every == first.train.eval_points == 0, "an autoencoder's samples are not the entry's"
        assert (last.train.eval_points, last.train.eval_n, last.train.eval_every) == (4, 100, 0), name


def test_protocol_sampler_and_guidance_with_the_unguided_row_kept(tmp_path, monkeypatch):
    """A diffusion entry is evaluated with its protocol sampler and recommended guidance (both recorded in
    the protocol); the unguided evaluation stays in results.json, and a NAME:STEPS sweep item scores DDIM-50."""
    monkeypatch.setitem(C.ENTRIES, "ddpm", (C.Stage("ddpm", sampler=("name=dpm++2m", "steps=4"),
                                                    guidance=("cfg_scale=2",)),))
    doc = run_compare(tmp_path, ["ddpm"], steps=4, protocol=C.Protocol(n=30, n_ref=300, n_bpd=10, grid_n=10,
                                                                        metrics=("fd", "bpd"), sampler_steps=("ddim:6",),
                                                                        device="cpu"))
    (e,) = doc["entries"]
    knobs = e["eval"]["metrics"]["fd"]["protocol"]["sampler"]
    assert (knobs["name"], knobs["steps"], knobs["cfg_scale"]) == ("dpm++2m", 4, 2.0)
    assert e["unguided"]["metrics"]["fd"]["protocol"]["sampler"]["cfg_scale"] == 1.0
    assert "bpd" in e["eval"]["metrics"] and "bpd" not in e["unguided"]["metrics"], "bits/dim ignores the sampler"
    assert e["eval"]["cost"]["network_evaluations_per_sample"] == 2 * e["unguided"]["cost"][
        "network_evaluations_per_sample"] == 2 * 4, "guided: two passes per step"
    ((sweep),) = e["sweep"]
    assert (sweep["name"], sweep["steps"]) == ("ddim", 6)
    assert sweep["metrics"]["fd"]["protocol"]["sampler"]["name"] == "ddim"
    run_cfg = json.loads((tmp_path / "runs" / "ddpm" / "ddpm" / ckpt.CONFIG).read_text())
    assert run_cfg["sampler"]["name"] == "dpm++2m", "the in-loop FD samples with the protocol sampler too"
    assert "`sampler.cfg_scale=2` (unguided:" in (tmp_path / "report.md").read_text()
    header, (row,) = results_table(doc)
    fd = e["unguided"]["metrics"]["fd"]["value"]
    assert row[header.index("guidance (unguided)")] == f"cfg_scale=2 (unguided {fmt(fd)})", "the table shows both"


def test_the_grid_is_the_first_evaluation_samples_not_drawn_again(tmp_path, monkeypatch):
    """A class-conditional entry's grid is the first grid_n of its evaluation samples: one sampling pass for the
    reported row (and one for the unguided row), none for the grid; a rerun reads both from the cache."""
    from genzoo.evaluation import harness

    drawn = []
    real = harness.generate

    def counting(model, n, **kw):
        out = real(model, n, **kw)
        drawn.append((n, out[0]))
        return out

    monkeypatch.setattr(harness, "generate", counting)
    monkeypatch.setitem(C.ENTRIES, "ddpm", (C.Stage("ddpm", sampler=("name=dpm++2m", "steps=3"),
                                                    guidance=("cfg_scale=2",)),))
    protocol = C.Protocol(n=30, n_ref=300, n_unguided=20, grid_n=10, metrics=("fd", "acc"), device="cpu")
    run_compare(tmp_path, ["ddpm"], steps=4, protocol=protocol)
    sizes = [n for n, _ in drawn]  # the in-loop FD's draws during training first
    assert sizes[-2:] == [30, 20] and 10 not in sizes, "the evaluation, the unguided row; no grid of its own"
    (grid,) = (tmp_path / "runs" / "ddpm" / "ddpm").glob("grid-*.npz")
    with np.load(grid) as g:
        assert np.array_equal(g["images"], drawn[-2][1][:10].numpy()) and int(g["nrow"]) == 10
    drawn.clear()
    run_compare(tmp_path, ["ddpm"], steps=4, protocol=protocol, resume=True)
    assert drawn == [], "evaluation and grid come from the cache"


def test_the_bits_per_dim_column_says_exact_bound_or_estimate():
    from genzoo.evaluation.report import bpd_text

    def entry(kind):
        return {"eval": {"metrics": {"bpd": {"value": 1.5, "protocol": {"metric": f"bits/dim ({kind})"}}}}}
    assert [bpd_text(entry(FAMILIES[f].model.likelihood)) for f in ("pixelcnn", "vae", "ddpm", "flow")] == [
        "1.5 (exact)", "1.5 (bound)", "1.5 (bound)", "1.5 (estimate, ODE)"]
    both = entry(FAMILIES["ddpm"].model.likelihood)  # the ODE estimate offered beside the bound
    ode = FAMILIES["ddpm"].model.ode_likelihood
    both["eval"]["metrics"]["bpd_ode"] = {"value": 1.25, "protocol": {"metric": f"bits/dim ({ode})"}}
    assert bpd_text(both) == "1.5 (bound); 1.25 (estimate, ODE)"
