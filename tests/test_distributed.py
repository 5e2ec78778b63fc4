"""Multi-process training on PyTorch's own engine: torchrun + DDP (gloo on CPU)."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from conftest import tiny_config
from genzoo.train import checkpoint as ckpt

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes_train_and_stay_in_sync(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "genzoo", "train", "vae", "--dataset", "synthetic", "--preset", "tiny", "--steps", "20",
           "--out", str(run), "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    end = [line for line in (run / ckpt.METRICS).read_text().splitlines() if '"event": "end"' in line]
    assert len(end) == 1 and '"ranks": 2' in end[0] and '"ranks_in_sync": true' in end[0]
    assert ckpt.load_checkpoint(run / ckpt.CHECKPOINT)["step"] == 20


def _worker(rank, world, port, data_root, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), GENZOO_DATA=data_root)
    from toy_family import register

    from genzoo.train.distributed import init_distributed, shutdown_distributed
    from genzoo.train.trainer import train

    register()
    dist = init_distributed("cpu")
    try:
        train(tiny_config("toy", "train.grad_accum=2"), out, dist=dist, progress=False)
    finally:
        shutdown_distributed()


def test_two_ranks_match_one_process_on_the_same_global_batch(tmp_path):
    """DDP over 2 ranks x 2 accumulation micro-batches == 1 process with the whole global batch."""
    from toy_family import register

    from genzoo.train.trainer import train

    register()
    mp.spawn(_worker, args=(2, free_port(), os.environ["GENZOO_DATA"], str(tmp_path / "ddp")), nprocs=2)
    train(tiny_config("toy"), tmp_path / "single", progress=False)
    a = ckpt.load_checkpoint(tmp_path / "ddp" / ckpt.CHECKPOINT)["model"]
    b = ckpt.load_checkpoint(tmp_path / "single" / ckpt.CHECKPOINT)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a[k], tiny) for k, tiny in _initial_toy().items()), "training must move weights"


def _initial_toy():
    from toy_family import TOY

    torch.manual_seed(0)
    cfg = tiny_config("toy")
    return TOY.model(cfg.model, image_shape=(1, 28, 28)).state_dict()
