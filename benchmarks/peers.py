"""Our `ddpm` U-Net side by side with two peers at matched size: training and DDIM sampling images/s, peak memory.

    pip install -e '.[peers]'
    python benchmarks/peers.py --size quick --batch 32 --sample-batch 16 --repeats 3 --threads 1

Peers (optional benchmark dependencies, never runtime ones):
  lucidrains  `denoising_diffusion_pytorch.Unet` + `GaussianDiffusion` (its own training loss and `ddim_sample`)
  diffusers   `UNet2DModel` + `DDIMScheduler` (training: `scheduler.add_noise` + MSE, as in diffusers' training
              example; sampling: `DDIMPipeline`, progress bar off, output_type="pt")

All three get the same data shape (1x28x28: every network here accepts it, so nothing is padded to 32), the same
schedule as our preset (T = 1000; cosine for `quick`, linear for `standard`), unconditional eps-prediction with
the plain MSE loss (whatever objective the preset trains with), clipping of x0 at sampling, AdamW. How each
peer is configured to match ours (see also benchmarks/README.md):

  ours        models/unet.py, the DDPM U-Net: per level `blocks` residual blocks in the encoder, `blocks + 1` in
              the decoder, self-attention (one head, full width) at the resolutions in `attn_res`, strided-conv
              down / nearest+conv up, middle res-attn-res; sinusoidal(channels) -> MLP -> 4*channels time
              embedding added in every block; GroupNorm.
  diffusers   the same architecture family (it is the DDPM port): block_out_channels = channels * ch_mult,
              layers_per_block = blocks (its decoder also gets blocks + 1), Attn{Down,Up}Block2D exactly at the
              levels whose resolution is in attn_res, attention_head_dim=None (one head of full width), the same
              positional time embedding of width 4*channels, strided-conv downsampling, dropout as the preset.
              GroupNorm uses one group count for the whole net (16 for `quick`, where the 16-wide level cannot
              take 32; ours picks min(32, width) per layer). Parameter count: identical to ours.
  lucidrains  its architecture is fixed in ways that do not map one to one: 2 residual blocks per level in
              both encoder and decoder (not configurable), each level runs at the width of the previous one and
              changes width in its downsampling (pixel-unshuffle + 1x1 conv), a 7x7 stem and a final res block,
              RMSNorm, scale-shift time conditioning, and an attention layer at every level: full attention
              (4 heads x 32, its default; einsum, not SDPA, with its default flash_attn=False) where ours has
              attention (full_attn per level from attn_res), linear attention elsewhere (it cannot be switched
              off); the middle block is res-attn-res like ours. dim_mults = ch_mult; sinusoidal(dim) -> MLP ->
              4*dim time embedding like ours; dropout as the preset; `dim` is the multiple of 4 whose parameter
              count is closest to ours (16 for quick: +5%; 72 for standard: -3%).

The *_compiled variants time sampling only (compiled training is measured through the trainer, with
benchmarks/train_speed.py and train.compile=true) and get no memory figures (compilation's own memory would count); their first sampling call, compilation included,
is reported as first_sample_call_s_with_compile.

Each sampler's network calls per sample are counted (a forward pre-hook), not assumed: 20 and 50 for all three.
The models alternate over --repeats rounds (the order rotates every round) and the JSON reports medians and
ratios ours / peer: for images/s > 1 means ours is faster, for memory < 1 means ours uses less. On CPU it also
reports images per second of process CPU time, which leaves out the time spent waiting for a core when other
jobs share the machine (with --threads 1 the two agree on an idle machine). Memory is measured in a fresh
subprocess per (model, phase), so that the models do not share an allocator high-water mark: on CUDA the growth
of torch.cuda.max_memory_allocated(); on CPU the growth of the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs after malloc_trim; ru_maxrss where that is not available) over its RSS after building
the model, optimizer and data. It counts everything malloc touched (activations, grads, AdamW state, buffers of
the kernels), not only tensors. Train: two steps (AdamW's state appears in the first); sample: one 20-step DDIM
call of --sample-batch images.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import torch

PEERS = ("lucidrains", "diffusers")
MODELS = ("ours", *PEERS)  # the default set; on request (--models) also these variants:
#   ours_cl             ours in channels_last, as the trainer runs on CUDA
#   ours_compiled       ours sampling with sampler.compile=true (the network under torch.compile); sampling only
#   diffusers_compiled  diffusers' UNet forward under torch.compile, the same treatment; sampling only
SIZES = ("quick", "standard")  # the ddpm presets whose network is benchmarked
IMAGE = (1, 28, 28)


def require_peers():
    missing = []
    for mod, dist in (("denoising_diffusion_pytorch", "denoising-diffusion-pytorch"), ("diffusers", "diffusers")):
        try:
            __import__(mod)
        except ImportError as e:
            missing.append(f"{dist} ({e})")
    if missing:
        sys.exit("benchmarks/peers.py compares against optional peer packages that are not installed:\n  "
                 + "\n  ".join(missing) + "\ninstall them with:  pip install -e '.[peers]'")


def nparams(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def ours_config(size: str):
    """The preset's network and schedule; unconditional eps-prediction with the plain loss, as the peers are
    configured (the preset's own objective / conditioning choices are not what this compares)."""
    from genzoo.models.ddpm import PRESETS, DDPMConfig
    return DDPMConfig(**{**PRESETS[size]["model"], "objective": "eps", "min_snr_gamma": 0.0, "class_cond": False})


# -- the three models, each wrapped as: net, params, train_step(), sample(n, steps) ----------------------------------

def build_ours(size, device, batch, memory_format=torch.contiguous_format, compile=False, **_):
    from genzoo.contract import Batch
    from genzoo.models.ddpm import DDPM
    cfg = ours_config(size)
    model = DDPM(cfg, IMAGE).to(device, memory_format=memory_format)
    x = (torch.rand(batch, *IMAGE, device=device) * 2 - 1).contiguous(memory_format=memory_format)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        model.loss(Batch(x, None))["loss"].backward()
        opt.step()

    def sample(n, steps, compile=compile):
        model.eval()
        return model.sample(n, name="ddim", steps=steps, compile=compile)  # eta = 0, clip_x0 = True

    if compile:  # sampling only (as sampler.compile=true): the compiled forward bypasses the counting hook
        return SimpleNamespace(net=model.net, train_step=None, sample=sample,
                               sample_eager=functools.partial(sample, compile=False))
    return SimpleNamespace(net=model.net, train_step=train_step, sample=sample)


def lucidrains_unet(size, dim):
    from denoising_diffusion_pytorch import Unet
    cfg = ours_config(size)  # full attention where ours has attention; linear attention at the other levels
    return Unet(dim=dim, dim_mults=tuple(cfg.ch_mult), channels=IMAGE[0], full_attn=tuple(lucidrains_full_attn(size)),
                dropout=cfg.dropout)


@functools.lru_cache
def lucidrains_dim(size) -> int:
    """The width (multiple of 4) whose parameter count is closest to ours: its block structure differs (see top)."""
    cfg = ours_config(size)
    from genzoo.models.unet import UNet
    target = nparams(UNet(cfg, IMAGE[0], IMAGE[1]))  # a DDPMConfig holds the U-Net's keys
    dims = range(max(4, cfg.channels // 2) // 4 * 4, 2 * cfg.channels + 1, 4)
    return min(dims, key=lambda d: abs(nparams(lucidrains_unet(size, d)) - target))


def build_lucidrains(size, device, batch, dim=None):
    import denoising_diffusion_pytorch.denoising_diffusion_pytorch as ddp
    from denoising_diffusion_pytorch import GaussianDiffusion
    ddp.tqdm = lambda it, **kw: it  # its sampling loops wrap the steps in a tqdm bar: keep stderr quiet
    cfg = ours_config(size)
    dim = dim or lucidrains_dim(size)
    net = lucidrains_unet(size, dim)
    diffusion = GaussianDiffusion(net, image_size=IMAGE[1], timesteps=cfg.T, sampling_timesteps=cfg.T,
                                  objective="pred_noise", beta_schedule=cfg.schedule).to(device)
    x = torch.rand(batch, *IMAGE, device=device)  # it takes images in [0, 1] (auto_normalize)
    opt = torch.optim.AdamW(diffusion.parameters(), lr=1e-4)

    def train_step():
        diffusion.train()
        opt.zero_grad(set_to_none=True)
        diffusion(x).backward()
        opt.step()

    def sample(n, steps):
        diffusion.eval()
        diffusion.sampling_timesteps, diffusion.is_ddim_sampling = steps, steps < cfg.T  # DDIM, eta = 0
        return diffusion.sample(batch_size=n)

    return SimpleNamespace(net=net, train_step=train_step, sample=sample)


def lucidrains_full_attn(size):
    cfg = ours_config(size)
    return [IMAGE[1] // 2 ** i in cfg.attn_res for i in range(len(cfg.ch_mult))]


def diffusers_unet(size):
    from diffusers import UNet2DModel
    cfg = ours_config(size)
    res = [IMAGE[1] // 2 ** i for i in range(len(cfg.ch_mult))]
    down = tuple("AttnDownBlock2D" if r in cfg.attn_res else "DownBlock2D" for r in res)
    up = tuple("AttnUpBlock2D" if r in cfg.attn_res else "UpBlock2D" for r in reversed(res))
    groups = 32 if cfg.channels % 32 == 0 else cfg.channels  # one count for the whole net; ours: min(32, width)
    return UNet2DModel(sample_size=IMAGE[1], in_channels=IMAGE[0], out_channels=IMAGE[0],
                       block_out_channels=tuple(cfg.channels * m for m in cfg.ch_mult), layers_per_block=cfg.blocks,
                       down_block_types=down, up_block_types=up, attention_head_dim=None, norm_num_groups=groups,
                       dropout=cfg.dropout, time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0)


def build_diffusers(size, device, batch, compile=False, **_):
    import torch.nn.functional as F
    from diffusers import DDIMPipeline, DDIMScheduler
    cfg = ours_config(size)
    net = diffusers_unet(size).to(device)
    sched = DDIMScheduler(num_train_timesteps=cfg.T, prediction_type="epsilon", clip_sample=True,
                          beta_schedule={"cosine": "squaredcos_cap_v2", "linear": "linear"}[cfg.schedule],
                          **({"beta_start": 1e-4, "beta_end": 0.02} if cfg.schedule == "linear" else {}))
    pipe = DDIMPipeline(unet=net, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    x = torch.rand(batch, *IMAGE, device=device) * 2 - 1
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def train_step():
        net.train()
        opt.zero_grad(set_to_none=True)
        noise = torch.randn_like(x)
        t = torch.randint(0, cfg.T, (x.shape[0],), device=device)
        x_t = pipe.scheduler.add_noise(x, noise, t)
        F.mse_loss(net(x_t, t, return_dict=False)[0], noise).backward()
        opt.step()

    def sample(n, steps):
        net.eval()
        return pipe(batch_size=n, num_inference_steps=steps, eta=0.0, output_type="pt", return_dict=False)[0]

    if compile:  # the same treatment as ours_compiled: its UNet's forward under torch.compile, for sampling only
        compiled = torch.compile(net.forward)

        def sample_compiled(n, steps):
            net.forward = compiled  # an instance attribute, so that net.__call__ runs the compiled forward
            try:
                return sample(n, steps)
            finally:
                del net.forward

        return SimpleNamespace(net=net, train_step=None, sample=sample_compiled, sample_eager=sample)
    return SimpleNamespace(net=net, train_step=train_step, sample=sample)


BUILD = {"ours": build_ours, "ours_cl": functools.partial(build_ours, memory_format=torch.channels_last),
         "ours_compiled": functools.partial(build_ours, compile=True),
         "lucidrains": build_lucidrains, "diffusers": build_diffusers,
         "diffusers_compiled": functools.partial(build_diffusers, compile=True)}
COMPILED = ("ours_compiled", "diffusers_compiled")  # sampling only; no training and no memory figures


def with_autocast(m: SimpleNamespace, device: str, amp: str) -> SimpleNamespace:
    """--amp bf16: every model's training step and sampler under the same torch.autocast (bf16 matmuls and
    convolutions, fp32 elsewhere), the same for ours and the peers."""
    if amp == "none":
        return m
    def wrap(fn):
        def run(*args):
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                return fn(*args)
        return run
    return SimpleNamespace(net=m.net, train_step=m.train_step and wrap(m.train_step), sample=wrap(m.sample),
                           sample_eager=wrap(getattr(m, "sample_eager", m.sample)))


# -- measurement ---------------------------------------------------------------------------------------------------

def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds). With one thread on a shared CPU the CPU time leaves out the time the
    process waited for a core, so it is less sensitive to other jobs (not to their cache / memory traffic)."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def count_calls(net: torch.nn.Module, fn) -> int:
    calls = [0]
    h = net.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        fn()
    finally:
        h.remove()
    return calls[0]


def _status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def memory_child(a):
    """One (model, phase) in this fresh process: peak memory growth in MiB (see the module docstring)."""
    torch.manual_seed(0)
    kw = {"dim": a.lucidrains_dim} if a.model == "lucidrains" else {}  # no width search in here: its garbage
    m = with_autocast(BUILD[a.model](a.size, a.device, a.batch, **kw), a.device, a.amp)  # would be reused below
    if a.phase == "train":
        run = lambda: [m.train_step() for _ in range(2)]  # noqa: E731  (AdamW state appears at step 1)
    else:
        run = lambda: m.sample(a.sample_batch, 20)  # noqa: E731
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        mib, how = (torch.cuda.max_memory_allocated() - base) / 2**20, "torch.cuda.max_memory_allocated growth"
    else:
        gc.collect()
        try:  # hand freed heap pages back to the OS, so that the run cannot reuse them unseen
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            base = _status_kb("VmRSS")
            run()
            mib, how = (_status_kb("VmHWM") - base) / 1024, "peak RSS (VmHWM) growth after malloc_trim"
        except OSError:
            import resource
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            run()
            mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
            how = "ru_maxrss growth (a lower bound if importing peaked higher)"
    print(json.dumps({"mib": mib, "how": how}))


def measure_memory(a, model, phase) -> dict:
    cmd = [sys.executable, __file__, "--_memory-child", "--model", model, "--phase", phase, "--size", a.size,
           "--batch", str(a.batch), "--sample-batch", str(a.sample_batch), "--threads", str(a.threads),
           "--device", a.device, "--amp", a.amp, "--lucidrains-dim", str(lucidrains_dim(a.size))]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"memory subprocess for {model}/{phase} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=SIZES, default="quick", help="the ddpm preset whose network is matched")
    p.add_argument("--batch", type=int, default=32, help="training batch")
    p.add_argument("--sample-batch", type=int, default=0, help="images per sampling call (default: --batch)")
    p.add_argument("--train-steps", type=int, default=5, help="timed training steps per model per round")
    p.add_argument("--sample-steps", default="20,50", help="DDIM steps to time")
    p.add_argument("--repeats", type=int, default=3, help="0: only parameter counts, call counts and memory")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(BUILD)}")
    p.add_argument("--amp", choices=("none", "bf16"), default="none",
                   help="bf16: every model under the same torch.autocast (default: fp32 throughout)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-model memory subprocesses")
    p.add_argument("--_memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--lucidrains-dim", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    a.sample_batch = a.sample_batch or a.batch
    require_peers()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a._memory_child:
        return memory_child(a)
    models = a.models.split(",")
    unknown = [m for m in models if m not in BUILD]
    if unknown:
        sys.exit(f"unknown --models {', '.join(unknown)}; choose from: {', '.join(BUILD)}")
    steps_list = [int(s) for s in a.sample_steps.split(",")]
    compile_s = {}  # the compiled variants' first sampling call (compilation included), seconds

    torch.manual_seed(0)
    built = {name: with_autocast(BUILD[name](a.size, a.device, a.batch), a.device, a.amp) for name in models}
    params = {name: nparams(m.net) for name, m in built.items()}
    # every sampler must call its network once per step: checked, not assumed
    # (a compiled variant is counted through its eager path: the same sampler code, the network not compiled)
    calls = {name: {str(s): count_calls(m.net, lambda: getattr(m, "sample_eager", m.sample)(1, s))
                    for s in steps_list} for name, m in built.items()}
    for name, m in built.items():  # warm-up: AdamW state, allocator, first-call overheads, compilation
        t0 = time.perf_counter()
        for _ in range(2 if m.train_step else 0):
            m.train_step()
        m.sample(a.sample_batch, 2)
        if name in COMPILED:
            compile_s[name] = time.perf_counter() - t0

    train = {name: [] for name in models}
    sample = {str(s): {name: [] for name in models} for s in steps_list}
    train_cpu = {name: [] for name in models}  # images per CPU second (see timed)
    sample_cpu = {str(s): {name: [] for name in models} for s in steps_list}
    t_start = time.time()
    for r in range(a.repeats):
        order = models[r % len(models):] + models[:r % len(models)]  # rotate so no model always runs first
        for name in order:
            m = built[name]
            if m.train_step:
                wall, cpu = timed(lambda: [m.train_step() for _ in range(a.train_steps)], a.device)
                train[name].append(a.train_steps * a.batch / wall)
                train_cpu[name].append(a.train_steps * a.batch / cpu)
            for s in steps_list:
                wall, cpu = timed(lambda: m.sample(a.sample_batch, s), a.device)
                sample[str(s)][name].append(a.sample_batch / wall)
                sample_cpu[str(s)][name].append(a.sample_batch / cpu)
        print(f"round {r + 1}/{a.repeats} done ({time.time() - t_start:.0f} s)", file=sys.stderr, flush=True)
    del built

    memory = {}
    if not a.no_memory:
        for phase in ("train", "sample"):
            memory[phase] = {name: measure_memory(a, name, phase) for name in models if name not in COMPILED}

    med = lambda d: {n: statistics.median(v) for n, v in d.items() if v}  # noqa: E731  (--repeats 0: memory only)
    peers = [n for n in models if not n.startswith("ours")]

    def ratios(values: dict) -> dict:  # every variant of ours against every peer: "ours/diffusers", ...
        return {f"{o}/{n}": values[o] / values[n] for o in values if o.startswith("ours") for n in peers if n in values}

    train_med = med(train)
    sample_med = {s: med(v) for s, v in sample.items()}
    result = {
        "benchmark": "peers", "size": a.size, "image": list(IMAGE), "batch": a.batch, "sample_batch": a.sample_batch,
        "train_steps_per_round": a.train_steps, "repeats": a.repeats, "device": a.device, "amp": a.amp,
        "device_name": torch.cuda.get_device_name() if a.device.startswith("cuda") else cpu_name(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(), "versions": peer_versions(),
        "params": params, "params_ratio": ratios(params),
        "network_calls_per_sample": calls,
        "first_sample_call_s_with_compile": compile_s,
        "configs": {n: build_config(n, a.size) for n in models},
        "train_img_per_s": train_med, "train_runs": train, "train_ratio": ratios(train_med),
        "sample_img_per_s": sample_med, "sample_runs": sample,
        "sample_ratio": {s: ratios(v) for s, v in sample_med.items()},
        **({} if a.device.startswith("cuda") else {
            "train_img_per_cpu_s": med(train_cpu), "train_cpu_ratio": ratios(med(train_cpu)),
            "sample_img_per_cpu_s": {s: med(v) for s, v in sample_cpu.items()},
            "sample_cpu_ratio": {s: ratios(med(v)) for s, v in sample_cpu.items()}}),
        "memory_mib": {ph: {n: v["mib"] for n, v in d.items()} for ph, d in memory.items()},
        "memory_ratio": {ph: ratios({n: v["mib"] for n, v in d.items()}) for ph, d in memory.items()},
        "memory_how": next((v["how"] for d in memory.values() for v in d.values()), None),
        "note": "ratios are ours / peer: > 1 = ours faster for img/s, < 1 = ours smaller for memory",
    }
    print(json.dumps(result, indent=2))


def build_config(name, size):
    name = name.removesuffix("_compiled")
    if name.startswith("ours"):
        c = ours_config(size)
        return {"channels": c.channels, "ch_mult": list(c.ch_mult), "blocks": c.blocks, "attn_res": list(c.attn_res),
                "heads": c.heads, "dropout": c.dropout, "schedule": c.schedule, "T": c.T}
    if name == "lucidrains":
        return {"dim": lucidrains_dim(size), "dim_mults": list(ours_config(size).ch_mult),
                "blocks_per_level": "2 encoder + 2 decoder (fixed)", "full_attn": lucidrains_full_attn(size),
                "attention": "4 heads x 32 (default); linear attention at the other levels"}
    net = diffusers_unet(size)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in net.config.items()
            if k in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types",
                     "attention_head_dim", "norm_num_groups", "dropout")}


def peer_versions() -> dict:
    from importlib.metadata import version
    return {d: version(d) for d in ("denoising-diffusion-pytorch", "diffusers")}


if __name__ == "__main__":
    main()
