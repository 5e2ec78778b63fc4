"""The evaluation harness: protocol records, cached references, scoring runs and sample files.

Fast: scikit-learn's real 8x8 digits and the project's committed digits classifier.
"""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_config
from genzoo.cli import main
from genzoo.errors import ConfigError
from genzoo.evaluation import harness
from genzoo.train import checkpoint as ckpt
from genzoo.train.trainer import train


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENZOO_CACHE", str(tmp_path / "cache"))


def digits(split="test", n=297):
    return harness.reference_images("digits", split, n)


def test_fd_of_real_images_is_near_the_floor_and_noise_is_far():
    real = harness.evaluate_images(digits(), dataset="digits", metrics="fd,kid,pr,is")
    noise = harness.evaluate_images(torch.randint(0, 256, (297, 1, 8, 8), dtype=torch.uint8), dataset="digits",
                                    metrics="fd,kid,pr,is")
    assert noise["fd"]["value"] > 20 * real["fd"]["value"]
    assert noise["kid"]["value"] > 20 * abs(real["kid"]["value"])
    assert real["precision"]["value"] > 0.7 and real["recall"]["value"] > 0.7
    assert real["class_score"]["value"] > 8 and sum(real["class_histogram"]["value"]) == 297


def test_every_result_records_its_protocol():
    out = harness.evaluate_images(digits(), dataset="digits", metrics="fd,kid", seed=3)
    for name in ("fd", "kid"):
        p = out[name]["protocol"]
        for key in ("metric", "extractor", "weights_sha256", "resize", "n_generated", "n_reference", "reference",
                    "seed", "comparable_to_literature"):
            assert key in p
        assert p["reference"] == "digits/train" and p["n_generated"] == 297 and p["seed"] == 3
        assert p["comparable_to_literature"] is False and len(p["weights_sha256"]) == 64
    assert out["fd"]["protocol"]["metric"].startswith("FD-")


def test_reference_features_are_cached_per_protocol(tmp_path, monkeypatch):
    ex = harness.domain_extractor("digits")
    first = harness.reference_features(ex, "digits", "train", 500)
    files = list((tmp_path / "cache" / "reference").glob("*.npz"))
    assert len(files) == 1 and "digits" in files[0].name and "n500" in files[0].name

    def no_recompute(*a, **k):
        raise AssertionError("a cached reference must not be recomputed")

    monkeypatch.setattr(type(ex), "features", no_recompute)
    again = harness.reference_features(ex, "digits", "train", 500)
    np.testing.assert_array_equal(first["mu"], again["mu"])


def test_bad_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="shape"):
        harness.evaluate_images(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), dataset="digits", metrics="fd")
    with pytest.raises(ConfigError, match="uint8"):
        harness.evaluate_images(torch.zeros(4, 1, 8, 8), dataset="digits", metrics="fd")
    with pytest.raises(ConfigError, match="unknown metric"):
        harness.parse_metrics("fd,fidd")
    with pytest.raises(ConfigError, match="classifier"):
        harness.evaluate_images(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), dataset="synthetic", metrics="fd")


def test_evaluate_run_is_deterministic_and_reports_cost(tmp_path):
    cfg = tiny_config("vae", "train.steps=10", "model.ch_mult=1,2", dataset="digits")
    train(cfg, tmp_path / "run", progress=False)
    a = harness.evaluate_run(tmp_path / "run", n=120, metrics="fd,is,bpd", n_ref=300)
    b = harness.evaluate_run(tmp_path / "run", n=120, metrics="fd,is,bpd", n_ref=300)
    assert a["metrics"]["fd"]["value"] == b["metrics"]["fd"]["value"]
    assert a["metrics"]["bpd"]["protocol"]["metric"] == "bits/dim (bound (ELBO))"
    assert a["metrics"]["fd"]["protocol"]["weights"] == "ema" and a["metrics"]["fd"]["protocol"]["step"] == 10
    cost = a["cost"]
    assert cost["parameters"] > 0 and cost["sample_img_per_s"] > 0 and cost["network_evaluations_per_sample"] == 1
    assert cost["train_img_per_s"] > 0 and cost["images_seen"] == 10 * cfg.train.batch_size


def test_training_images_per_s_leaves_out_each_sessions_warm_up_interval(tmp_path):
    from genzoo.evaluation import runlog

    rows = [{"step": 2, "img_per_s": 1.0}, {"step": 4, "img_per_s": 10.0}, {"step": 4, "fd": 9.0},
            {"step": 6, "img_per_s": 12.0}, {"event": "end", "step": 6, "train_s": 3.0, "images_seen": 48},
            {"step": 8, "img_per_s": 2.0}, {"step": 10, "img_per_s": 14.0}]  # a resumed second session, no end yet
    assert runlog.train_images_per_s(rows) == 12.0  # median of 10, 12, 14: the 1.0 and 2.0 warm-ups left out
    assert runlog.train_images_per_s(rows[:1]) == 1.0  # a session's only interval counts
    assert runlog.train_images_per_s([]) is None
    (tmp_path / ckpt.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert runlog.read_metrics(tmp_path) == rows and runlog.series(rows, "fd") == ([4], [9.0])
    assert runlog.training_cost(tmp_path) == {"train_img_per_s": 12.0, "train_s": 3.0, "images_seen": 48,
                                              "in_loop_eval_s": None}  # this end event predates eval_s
    assert runlog.training_cost(tmp_path / "nothing") == {"train_img_per_s": None, "train_s": None, "images_seen": None,
                                                          "in_loop_eval_s": None}


def test_bits_per_dim_alone_draws_no_samples(tmp_path, monkeypatch):
    cfg = tiny_config("vae", "train.steps=10", "model.ch_mult=1,2", dataset="digits")
    train(cfg, tmp_path / "run", progress=False)
    full = harness.evaluate_run(tmp_path / "run", n=120, metrics="fd,bpd", n_ref=300)

    def no_sampling(*a, **k):
        raise AssertionError("bits/dim must not sample")

    monkeypatch.setattr(harness, "generate", no_sampling)
    alone = harness.evaluate_run(tmp_path / "run", n=120, metrics="bpd")
    assert alone["metrics"]["bpd"]["value"] == full["metrics"]["bpd"]["value"] and "fd" not in alone["metrics"]


def test_in_loop_fd_is_logged_and_the_best_checkpoint_kept(tmp_path):
    cfg = tiny_config("vae", "train.steps=20", "train.eval_every=10", "train.eval_n=200", "model.ch_mult=1,2",
                      dataset="digits")
    train(cfg, tmp_path, progress=False)
    rows = [json.loads(x) for x in (tmp_path / ckpt.METRICS).read_text().splitlines()]
    fds = [r for r in rows if "fd" in r]
    assert [r["step"] for r in fds] == [10, 20] and all(r["fd"] > 0 for r in fds)
    best = ckpt.load_checkpoint(tmp_path / ckpt.BEST)
    assert best["best_fd"] == min(r["fd"] for r in fds)


def test_in_loop_fd_is_skipped_with_a_warning_where_no_classifier_exists(tmp_path, caplog):
    train(tiny_config("vae", "train.eval_every=5", "train.steps=5"), tmp_path, progress=False)
    assert "in-loop FD is off: no domain classifier for 'synthetic'" in caplog.text
    assert not any('"fd"' in x for x in (tmp_path / ckpt.METRICS).read_text().splitlines())
    with pytest.raises(ConfigError, match="not available"):
        harness.InLoopFD(tiny_config("vae").data)


def test_cli_eval_of_samples_against_a_dataset_and_against_a_reference(tmp_path, capsys):
    real = digits().numpy()
    np.savez(tmp_path / "real.npz", images=real)
    np.savez(tmp_path / "noise.npz", images=np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8))
    assert main(["eval", "--samples", str(tmp_path / "real.npz"), "--dataset", "digits", "--metrics", "fd",
                 "--out", str(tmp_path / "e.json"), "--no-progress"]) == 0
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["metrics"]["fd"]["value"] < 50
    capsys.readouterr()
    assert main(["eval", "--samples", str(tmp_path / "noise.npz"), "--reference", str(tmp_path / "real.npz"),
                 "--dataset", "digits", "--metrics", "fd,kid", "--no-progress"]) == 0
    pair = json.loads(capsys.readouterr().out)
    assert pair["metrics"]["fd"]["protocol"]["reference"] == "given images"
    assert pair["metrics"]["fd"]["value"] > 20 * saved["metrics"]["fd"]["value"]
    assert main(["eval", "--samples", str(tmp_path / "real.npz"), "--no-progress"]) == 2
    assert "--dataset" in capsys.readouterr().err


def test_cli_metric_names_match_the_harness():
    from genzoo.cli import METRIC_NAMES

    assert METRIC_NAMES == harness.METRICS


def test_requested_class_accuracy_overall_and_per_class(tmp_path, capsys):
    """Issue 20: the share of samples the domain classifier reads as the class they were drawn for."""
    test = harness.reference_images("digits", "test", 297)
    from genzoo import datasets
    data = datasets.load("digits", "test")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(harness.REFERENCE_SEED))[:297]
    truth = data.labels[perm]
    right = harness.evaluate_images(test, dataset="digits", metrics="acc", labels=truth)["label_accuracy"]
    assert right["value"] > 0.9 and len(right["per_class"]) == 10 and min(right["per_class"]) > 0.7
    wrong = harness.evaluate_images(test, dataset="digits", metrics="acc", labels=(truth + 1) % 10)["label_accuracy"]
    assert wrong["value"] < 0.1
    only_zeros = harness.evaluate_images(test[:5], dataset="digits", metrics="acc", labels=torch.zeros(5).long())
    assert only_zeros["label_accuracy"]["per_class"][1:] == [None] * 9, "a class nobody asked for has no accuracy"
    with pytest.raises(ConfigError, match="needs the requested labels"):
        harness.evaluate_images(test, dataset="digits", metrics="acc")
    np.savez(tmp_path / "s.npz", images=test.numpy(), labels=truth.numpy())  # and from `genzoo eval`
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--dataset", "digits", "--metrics", "fd,acc",
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["label_accuracy"]["value"] == right["value"]


def test_an_unconditional_run_is_scored_without_requested_classes(tmp_path):
    train(tiny_config("vae", "train.steps=2", "model.ch_mult=1,2", dataset="digits"), tmp_path, progress=False)
    out = harness.evaluate_run(tmp_path, n=40, n_ref=300, metrics="fd,acc")
    assert "fd" in out["metrics"] and "label_accuracy" not in out["metrics"]
