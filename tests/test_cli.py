"""The command line: the contract users and later issues rely on. Errors are one line, exit 2."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from genzoo.cli import main
from genzoo.train import checkpoint as ckpt


def genzoo(*args, env=None, **kw):
    """Run `python -m genzoo ARGS` in a fresh process; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "genzoo", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, **kw)


def one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genzoo: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_list_names_families_datasets_and_presets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("vae", "quick", "mnist", "fashion-mnist", "cifar10", "digits", "synthetic"):
        assert word in out


@pytest.mark.parametrize("args, words", [
    (["train", "vea", "--dataset", "synthetic"], ["unknown family 'vea'", "vae"]),
    (["train", "vae", "--dataset", "mnsit"], ["unknown dataset 'mnsit'", "fashion-mnist"]),
    (["train", "vae", "--dataset", "synthetic", "--set", "model.chanels=3"], ["unknown key", "channels"]),
    (["train", "vae", "--dataset", "synthetic", "--set", "train.lr=fast"], ["expected float"]),
    (["train", "vae", "--preset", "huge"], ["unknown preset", "quick"]),
])
def test_bad_names_and_overrides_exit_2_with_one_line(capsys, tmp_path, args, words):
    code = main(args + ["--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("genzoo: error:")
    for w in words:
        assert w in err
    assert not (tmp_path / "run" / ckpt.CHECKPOINT).exists()


def test_missing_data_without_opt_in_says_what_to_run(capsys, tmp_path):
    code = main(["train", "vae", "--dataset", "cifar10", "--root", str(tmp_path), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "--download" in err and "GENZOO_DOWNLOAD=1" in err


def test_train_then_sample_npz_and_png(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "vae", "--dataset", "synthetic", "--preset", "tiny", "--out", str(run), "--no-progress",
                 "--set", "model.class_cond=true", "--set", "train.steps=12"]) == 0
    saved = (run / ckpt.CONFIG).read_text()
    assert '"class_cond": true' in saved and '"steps": 12' in saved, "a repeated --set adds to the earlier ones"
    assert main(["sample", str(run), "--n", "20", "--seed", "1", "--out", str(tmp_path / "s.npz")]) == 0
    with np.load(tmp_path / "s.npz") as f:
        assert f["images"].shape == (20, 1, 28, 28) and f["images"].dtype == np.uint8
        assert f["labels"].tolist() == [i % 10 for i in range(20)]
    assert main(["sample", str(run), "--n", "20", "--seed", "1", "--out", str(tmp_path / "again.npz")]) == 0
    with np.load(tmp_path / "s.npz") as a, np.load(tmp_path / "again.npz") as b:
        assert np.array_equal(a["images"], b["images"]), "sampling is deterministic for a seed"
    assert main(["sample", str(run), "--n", "30", "--out", str(tmp_path / "grid.png"),
                 "--set", "sampler.temperature=0.5"]) == 0
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    code = main(["sample", str(run), "--set", "model.channels=3"])
    assert code == 2 and "sampler.*" in capsys.readouterr().err


def test_sample_from_something_that_is_not_a_run(tmp_path):
    one_line_error(genzoo("sample", str(tmp_path)), "not a genzoo run")
    (tmp_path / ckpt.CONFIG).write_text("{not json")
    one_line_error(genzoo("sample", str(tmp_path)), "not valid JSON")


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "vae", "--dataset", "synthetic", "--preset", "tiny", "--out", str(run),
                 "--no-progress"]) == 0
    (run / ckpt.CHECKPOINT).write_bytes(b"this is not a checkpoint")
    one_line_error(genzoo("sample", str(run)), "corrupt")
    one_line_error(genzoo("train", "vae", "--dataset", "synthetic", "--preset", "tiny", "--out", str(run),
                          "--resume"), "corrupt")
    assert (run / ckpt.CHECKPOINT).read_bytes() == b"this is not a checkpoint"


def test_a_checkpoint_that_does_not_match_its_config_is_refused(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "vae", "--dataset", "synthetic", "--preset", "tiny", "--out", str(run),
                 "--no-progress"]) == 0
    config = (run / ckpt.CONFIG).read_text()
    (run / ckpt.CONFIG).write_text(config.replace('"z_dim": 4', '"z_dim": 8'))
    one_line_error(genzoo("sample", str(run)), "does not match the model built from config.json")


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "genzoo", "train", "vae", "--dataset", "synthetic", "--preset", "tiny",
           "--steps", "100000", "--out", str(run), "--no-progress", "--set", "train.log_every=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / ckpt.METRICS).is_file():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    step = ckpt.load_checkpoint(run / ckpt.CHECKPOINT)["step"]
    assert 0 < step < 100000
    resumed = genzoo("train", "vae", "--dataset", "synthetic", "--preset", "tiny", "--steps", str(step + 3),
                     "--out", str(run), "--no-progress", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert ckpt.load_checkpoint(run / ckpt.CHECKPOINT)["step"] == step + 3


def test_python_dash_m_and_the_console_script_agree():
    result = genzoo("list")
    assert result.returncode == 0 and "vae" in result.stdout
    script = Path(sys.executable).parent / "genzoo"
    if script.exists():
        assert subprocess.run([str(script), "list"], capture_output=True, text=True).stdout == result.stdout
