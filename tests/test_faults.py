"""File-system faults during a run: one line, exit 2, and the last good checkpoint kept.

Faults are injected by patching the write (a full disk, a permission error); the lock is tested with
a second holder in this process and with a holder that is killed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import subprocess
import sys

import pytest
import torch

from genzoo.cli import main
from genzoo.runs import open_run
from genzoo.train import checkpoint as ckpt

TRAIN = ["train", "vae", "--dataset", "synthetic", "--preset", "tiny", "--no-progress",
         "--set", "train.threads=1", "train.ckpt_every=2", "train.log_every=1"]


def one_line_exit_2(capsys, args, *words):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("genzoo: error:"), err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fail_on_call(n: int, exc: OSError, real):
    """A stand-in for `real` that raises `exc` on its n-th call (1-based)."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(*args, **kwargs)
    return wrapped


def test_disk_full_while_saving_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    full = OSError(errno.ENOSPC, "No space left on device", str(out / "checkpoint.pt.tmp"))
    monkeypatch.setattr(torch, "save", fail_on_call(2, full, torch.save))  # step 2 saves, step 4 fails
    line = one_line_exit_2(capsys, [*TRAIN, "--steps", "6", "--out", str(out)], "No space left on device",
                           "last good checkpoint", "--resume")
    assert "Traceback" not in line
    state = ckpt.load_checkpoint(out / ckpt.CHECKPOINT)
    assert state["step"] == 2
    assert not (out / "checkpoint.pt.tmp").exists()  # no half-written file left behind
    monkeypatch.undo()
    assert main([*TRAIN, "--steps", "6", "--out", str(out), "--resume"]) == 0  # space freed: it continues
    assert ckpt.load_checkpoint(out / ckpt.CHECKPOINT)["step"] == 6


def test_permission_error_on_a_sample_grid_stops_with_one_line(tmp_path, capsys, monkeypatch):
    from genzoo.train import trainer

    out = tmp_path / "run"
    denied = PermissionError(errno.EACCES, "Permission denied", str(out / "samples" / "step_0000004.png"))
    monkeypatch.setattr(trainer, "save_grid", fail_on_call(1, denied, trainer.save_grid))
    one_line_exit_2(capsys, [*TRAIN, "--steps", "6", "--out", str(out), "--set", "train.sample_every=4"],
                    "Permission denied", "last good checkpoint")
    assert ckpt.load_checkpoint(out / ckpt.CHECKPOINT)["step"] in (2, 4)


def test_a_second_trainer_on_the_same_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--steps", "2", "--out", str(out)]) == 0
    before = sha(out / ckpt.CHECKPOINT)
    with open(out / ckpt.LOCK, "a") as holder:  # another trainer holds the run
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        one_line_exit_2(capsys, [*TRAIN, "--steps", "4", "--out", str(out), "--resume"], "in use by another")
    assert sha(out / ckpt.CHECKPOINT) == before
    assert main([*TRAIN, "--steps", "4", "--out", str(out), "--resume"]) == 0  # released: it continues


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"), str(out / ckpt.LOCK)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    assert main([*TRAIN, "--steps", "2", "--out", str(out)]) == 0


def test_a_half_written_checkpoint_is_never_read(tmp_path, capsys):
    """A sampler that reads during a save finds the previous complete checkpoint: writes go to a temp
    file that is renamed over the old one only when complete."""
    out = tmp_path / "run"
    assert main([*TRAIN, "--steps", "2", "--out", str(out)]) == 0
    (out / "checkpoint.pt.tmp").write_bytes((out / ckpt.CHECKPOINT).read_bytes()[:1000])  # a save in progress
    assert open_run(out).step == 2
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0


def test_out_that_is_a_file_or_read_only(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "a-file"
    afile.write_text("keep me")
    one_line_exit_2(capsys, [*TRAIN, "--steps", "2", "--out", str(afile)], "is a file")
    assert afile.read_text() == "keep me"
    import os

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a non-root user in a read-only folder
    one_line_exit_2(capsys, [*TRAIN, "--steps", "2", "--out", str(tmp_path / "ro" / "run")], "read-only")
    one_line_exit_2(capsys, ["sample", str(tmp_path), "--out", str(tmp_path / "x.png")], "writable")


def test_a_real_bug_prints_its_traceback_and_what_to_report(tmp_path, capsys, monkeypatch):
    from genzoo import __version__, cli

    def broken(args):
        raise ZeroDivisionError("a bug")
    monkeypatch.setitem(cli.main.__globals__, "cmd_list", broken)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    last = err.strip().splitlines()[-1]
    assert "internal error" in last and "genzoo list" in last and __version__ in last and "report" in last


@pytest.mark.parametrize("family, bad", [
    ("vae", "train.lr=-1"), ("vae", "train.lr=nan"), ("vae", "train.batch_size=0"), ("vae", "train.batch_size=-8"),
    ("vae", "model.channels=-1"), ("vae", "train.ema_decay=2"), ("vae", "model.z_dim=0"), ("vae", "model.beta=-1"),
    ("ddpm", "model.T=0"), ("ddpm", "sampler.steps=0")])
def test_the_issue_table_rows(family, bad, tmp_path, capsys):
    key = bad.split("=")[0]
    args = ["train", family, *TRAIN[2:], "--steps", "2", "--out", str(tmp_path / "r"), "--set", bad]
    line = one_line_exit_2(capsys, args, key)
    assert "must be" in line
    assert not (tmp_path / "r").exists()


def test_kill_9_at_any_moment_leaves_a_run_that_resumes(tmp_path):
    """SIGKILL (no handler runs) at three moments of a run that saves every step: each time the run
    directory holds a loadable checkpoint, and --resume carries it on to the end."""
    import os
    import random
    import signal
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "genzoo", *TRAIN, "--steps", "400", "--out", str(out),
            "--set", "train.ckpt_every=1", "train.log_every=1"]
    rng = random.Random(0)
    for kill in range(3):
        proc = subprocess.Popen(args + (["--resume"] if kill else []), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        start = ckpt.load_checkpoint(out / ckpt.CHECKPOINT)["step"] if kill else 0
        while time.time() < deadline:  # wait until this session has saved at least once, then a bit more
            if (out / ckpt.CHECKPOINT).exists() and ckpt.load_checkpoint(out / ckpt.CHECKPOINT)["step"] > start:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert ckpt.load_checkpoint(out / ckpt.CHECKPOINT)["step"] > start  # whole, and further than before
    assert main([*TRAIN, "--steps", "400", "--out", str(out), "--resume"]) == 0
    assert ckpt.load_checkpoint(out / ckpt.CHECKPOINT)["step"] == 400
