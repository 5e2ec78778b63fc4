"""`genzoo compare`: every family through the same data, the same budget and the same evaluation.

    genzoo compare --dataset mnist --families vae,gan --preset quick --minutes-per-family 2 --out reports/mnist
    genzoo compare ... --out reports/mnist --resume        # after Ctrl-C: finished runs are kept as they are
    genzoo report runs/vae-mnist runs/gan-mnist --out reports/mine

An *entry* of the comparison is a recipe of one or more training stages (`ENTRIES`). A later stage
can take an earlier stage's finished run as its frozen autoencoder (`model.autoencoder=RUN_DIR`,
see `genzoo.runs.build_model`): VQ-VAE + its learned prior, or LDM on the zoo's VAE. The entry's
budget (`--minutes-per-family` or `--steps`) is split between its stages by `share`, so a two-stage
entry spends the same total as a one-stage one, and the report says so.

One conditioning for every entry: by default each entry's generating (last) stage is class-conditional and
sampled with labels cycling through the classes (first stages, the autoencoders, stay unconditional);
`--unconditional` makes every entry unconditional; `--text` conditions every entry that can read text (ddpm,
ldm, dit, flow) on captions through one shared, frozen text encoder: a `clip` run trained first at its preset's
own steps (outside the entries' budgets, as Imagen's text encoder was trained apart), sampled from the harness's
evaluation prompts, its grid one prompt per row. A report holds one conditioning, never two.

Each entry is sampled for the evaluation with its protocol sampler (`Stage.sampler`, e.g. DPM-Solver++ at
fewer steps for the diffusion families) and its recommended guidance (`Stage.guidance`; the unguided row is
kept in results.json). The trainer logs in-loop FD at a few points of each last stage (`in_loop_overrides`),
off the training clock, for the curve of quality against training time.

A report directory holds
    runs/<entry>/<stage family>/   ordinary training runs (checkpoint.pt, metrics.jsonl, ...)
        eval-<key>.json            the cached evaluation of that run under one protocol (key = its hash)
        grid-<key>.npz             the cached sample grid (uint8) under that protocol
    index.html, report.md, results.json, *.png   written by genzoo.evaluation.report

A run is *finished* when its checkpoint reached its budget (step == LR horizon, or the elapsed
training time reached train.minutes). `--resume` reuses finished runs, continues interrupted ones with
the trainer's exact resume, and reuses cached evaluations, so an interrupted comparison costs only
what is left.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from genzoo.config import RunConfig, diff
from genzoo.errors import CheckpointError, ConfigError
from genzoo.registry import COMPONENTS, FAMILIES, load_config_json, resolve_config
from genzoo.train import checkpoint as ckpt

log = logging.getLogger("genzoo.compare")


@dataclass(frozen=True)
class Stage:
    family: str
    share: float = 1.0  # fraction of the entry's budget (--minutes-per-family / --steps) this stage gets
    autoencoder_from: int | None = None  # index of an earlier stage whose finished run is model.autoencoder
    overrides: tuple[str, ...] = ()  # the recipe's own `--set` items for this stage (before the user's)
    presets: tuple[tuple[str, str], ...] = ()  # (compare preset, this stage's preset), e.g. quick -> prior
    # the last stage's evaluation sampler, `sampler.KEY=VALUE` items without the prefix: the run's sampler too
    # (its in-loop FD and grids), and the one recorded in each metric's protocol
    sampler: tuple[str, ...] = ()
    # the recommended guidance of the reported row (e.g. "cfg_scale=2"); the unguided row stays in results.json
    guidance: tuple[str, ...] = ()
    # the evaluation's sampling batch on a CPU when the protocol leaves it to the entry (0: EVAL_BATCH): a
    # convolutional network samples faster in small batches there, a cached autoregressive one in large ones
    # (benchmarks/results/eval_batch_cpu.jsonl)
    eval_batch: int = 0

    def preset(self, preset: str) -> str:
        """The stage's own preset for the comparison's `--preset` (the same name unless mapped)."""
        return dict(self.presets).get(preset, preset)


# The protocol sampler of the diffusion families: DPM-Solver++(2M) at fewer steps than DDIM-50, whose FD it
# should match (docs/compare.md says how that is measured: `--sampler-steps ddim:50`).
DIFFUSION_SAMPLER = ("name=dpm++2m", "steps=20")
# the ldm's 7x7 latents need fewer: at 10 steps its FD is within the spread of 20 and of DDIM-50, at twice the
# speed of 20 (benchmarks/results/protocol_steps_cpu.jsonl); pixel ddpm at 12 loses 15% FD, so it keeps 20
LDM_SAMPLER = ("name=dpm++2m", "steps=10")
# The U-Net entries read time and class as adaGN's scale and shift after each block's norm: added before it (the
# ddpm and flow presets' block), most of the class is normalised away at these widths (layers.ResBlock; measured
# in benchmarks/results/adagn_cpu.jsonl, docs/diffusion.md). The ldm presets have it already.
ADAGN = ("model.scale_shift=true",)

# The comparison's entries, in report order; every family they name is registered in genzoo.registry.FAMILIES.
# Each stage's comparison settings live here: `overrides` (the entry's own preset changes, applied after the
# preset), `sampler` and `guidance`. Each entry's guidance was picked from a sweep of its family's knob on a
# 2.5-minute README run (benchmarks/guidance.py; the table and the rule are in docs/compare.md): the best FD,
# stronger where that drew the requested digit too rarely, none where no value helped.
ENTRIES: dict[str, tuple[Stage, ...]] = {
    "vae": (Stage("vae", guidance=("temperature=0.5",)),),  # z ~ N(0, 0.5^2 I)
    "gan": (Stage("gan", guidance=("truncation=0.5",)),),  # class-conditional: a projection discriminator
    "pixelcnn": (Stage("pixelcnn", guidance=("cfg_scale=2",)),),
    # the quick comparison runs the `short` preset, one network position per 4x4 patch (T = 49, a local head within
    # it): at minutes of CPU the pixel-by-pixel model (T = 784) sees too few images to draw digits; cfg 3 nearly
    # doubles its requested digit, 4 and 5 add nothing (benchmarks/results/transformer_patch_cpu.jsonl)
    "transformer": (Stage("transformer", presets=(("quick", "short"),), guidance=("cfg_scale=3",), eval_batch=100),),
    "vqvae": (Stage("vqvae", share=0.5), Stage("transformer", share=0.5, autoencoder_from=0,  # + prior (a class token)
                                               presets=(("quick", "prior"),), guidance=("cfg_scale=2",))),
    "ddpm": (Stage("ddpm", overrides=ADAGN, sampler=DIFFUSION_SAMPLER, guidance=("cfg_scale=2",), eval_batch=50),),
    "ldm": (Stage("vae", share=0.4, overrides=("model.latent_channels=4",)),  # a spatial 4x7x7 latent
            Stage("ldm", share=0.6, autoencoder_from=0, sampler=LDM_SAMPLER,
                  guidance=("cfg_scale=3",))),  # diffusion in the VAE's latents
    # the quick comparison runs the `short` preset, 7x7 patches (16 tokens): at minutes of CPU the quick preset's
    # 4x4 patches (49 tokens) train half the steps and drew blobs (benchmarks/results/dit_patch_cpu.jsonl)
    "dit": (Stage("dit", presets=(("quick", "short"),), sampler=DIFFUSION_SAMPLER, guidance=("cfg_scale=3",),
                  eval_batch=50),),
    "flow": (Stage("flow", overrides=ADAGN, guidance=("cfg_scale=2",), eval_batch=50),),
}
EVAL_BATCH = 500  # the sampling batch of an entry without its own, and of every entry on a GPU

SESSIONS = "sessions.jsonl"  # in REPORT_DIR/runs: one line per completed compare command (time split, command)

# config keys that may differ between a finished run and the comparison reusing it (hardware, logging)
REUSABLE_CHANGES = {"data.root", "data.download", "train.device", "train.threads", "train.compile",
                    "train.log_every", "train.sample_every", "train.ckpt_every", "train.eval_every", "train.eval_n",
                    "train.eval_points", "train.n_grid"}  # and every sampler.* key: the evaluation sets the sampler explicitly

CONDITIONING = {True: "class-conditional", False: "unconditional"}
TEXT = "text-conditional"
TEXT_ENCODER = "clip"  # the component a text comparison trains first and every entry's last stage reads (frozen)
TEXT_ENCODER_DIR = "text-encoder"  # its run: REPORT_DIR/runs/text-encoder/clip


def reads_text(family: str) -> bool:
    """Whether a family's model takes `model.text_encoder` (a finished clip run)."""
    return "text_encoder" in {f.name for f in fields(FAMILIES[family].config)}


def conditioning_of(cfg: RunConfig) -> str:
    """A generating run's conditioning: text-conditional, class-conditional or unconditional."""
    if getattr(cfg.model, "text_encoder", ""):
        return TEXT
    return CONDITIONING[bool(getattr(cfg.model, "class_cond", False))]


@dataclass(frozen=True)
class Budget:
    """Per-entry budget: minutes of training (split by stage share), optimizer steps, or each preset's own."""

    kind: str = "preset"  # "minutes" | "steps" | "preset"
    value: float = 0.0

    def overrides(self, share: float) -> list[str]:
        if self.kind == "minutes":
            return [f"train.minutes={self.value * share:.6g}", "train.steps=0"]
        if self.kind == "steps":
            return [f"train.steps={max(1, round(self.value * share))}"]
        return []

    def describe(self) -> str:
        return {"minutes": f"{self.value:g} training minutes per entry (wall clock, split between stages)",
                "steps": f"{self.value:g} optimizer steps per entry (split between stages)",
                "preset": "each preset's own number of steps (not an equal budget)"}[self.kind]


@dataclass(frozen=True)
class Protocol:
    """The evaluation protocol, the same for every entry (the arguments of harness.evaluate_run)."""

    n: int = 2000  # generated samples per entry
    # test images for bits/dim: a mean over images, unbiased at any n (unlike FD), whose bound and ODE estimates
    # cost tens of network passes per image, so fewer images than samples
    n_bpd: int = 100
    # the unguided row of a guided entry (kept in results.json beside the reported one): its own n, for
    # requested-class accuracy and FD (which reads higher at a smaller n: compare it only at equal n)
    n_unguided: int = 250
    # () = fd,kid,pr,is,acc,bpd where a domain classifier exists, else fid,kid,pr,bpd
    metrics: tuple[str, ...] = ()
    n_ref: int = 10000
    ref_split: str = "train"
    seed: int = 0
    grid_n: int = 100  # images in each entry's sample grid (same seed; labels cycle through the classes)
    # extra evaluations at these sampler.steps (or "NAME:STEPS", e.g. "ddim:50"), for families with that knob
    sampler_steps: tuple[int | str, ...] = ()
    batch_size: int = 0  # sampling batch; 0: each entry's Stage.eval_batch on a CPU, else EVAL_BATCH
    prompt_set: str = "heldout"  # a text entry's evaluation prompts (evaluation.text.evaluation_prompts)
    device: str = "auto"
    fid_weights: str | None = None
    download: bool = False

    def resolved_device(self) -> str:
        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device

    def metrics_for(self, dataset: str) -> tuple[str, ...]:
        from genzoo.evaluation.classifier import EXTRACTORS

        if self.metrics:
            return tuple(self.metrics)
        # bits/dim: each model's own likelihood (exact, bound, or flow's ODE estimate); the ODE estimate beside a
        # bound (`bpd_ode`) only on request: at its 20 steps it is not converged (docs/flow.md), converged it
        # costs 4x, and it was a sixth of the comparison's evaluation
        likelihoods = ("bpd",)
        return ("fd", "kid", "pr", "is", "acc", *likelihoods) if dataset in EXTRACTORS else ("fid", "kid", "pr",
                                                                                               *likelihoods)

    def key(self) -> dict:
        """What an evaluation's result depends on (device and batch size change which random numbers each sample
        gets, not the distribution sampled; they are left out, as are the report-only fields)."""
        d = asdict(self)
        for k in ("batch_size", "device", "download", "fid_weights", "grid_n", "sampler_steps", "prompt_set"):
            d.pop(k)
        return d  # prompt_set: in the key of a text run's evaluations only (`_cache_key`)


@dataclass
class Entry:
    name: str
    stages: tuple[Stage, ...]
    configs: list[RunConfig] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------------------
# which entries


def select_entries(families: list[str] | None = None, text: bool = False) -> list[tuple[str, tuple[Stage, ...]]]:
    """The entries to run, in report order: those named in `families`, or every entry with `families=None`
    (with `text`, every entry whose generating family reads text). A registered family that no entry names yet
    runs as a one-stage entry of its own."""
    table = dict(ENTRIES)
    for name in FAMILIES:
        table.setdefault(name, (Stage(name),))
    if text:
        readers = {name: stages for name, stages in table.items() if reads_text(stages[-1].family)}
        if families is None:
            return list(readers.items())
        others = [name for name in families if name in table and name not in readers]
        if others:
            raise ConfigError(f"--text: {', '.join(others)} cannot read text; the entries that can: "
                              f"{', '.join(readers)}")
    if families is None:
        return list(table.items())
    chosen = []
    for name in families:
        if name not in table:
            raise ConfigError(f"unknown family {name!r} for compare; choose from: {', '.join(table)}")
        if name in [c[0] for c in chosen]:
            raise ConfigError(f"{name} is named twice in --families")
        chosen.append((name, table[name]))
    if not chosen:
        raise ConfigError("--families names no family")
    return chosen


def scoped(overrides: list[str], family: str) -> list[str]:
    """The `--set` items for `family`: unscoped `key=value` apply to every stage, `FAMILY:key=value` to one family."""
    out = []
    for item in overrides:
        key = item.partition("=")[0]
        if ":" in key:
            target, _, rest = item.partition(":")
            if target.strip() not in FAMILIES and target.strip() != TEXT_ENCODER:
                raise ConfigError(f"--set {item}: unknown family {target!r}; choose from: {', '.join(FAMILIES)} "
                                  f"(or {TEXT_ENCODER}, the text encoder of --text)")
            if target.strip() == family:
                out.append(rest)
        else:
            out.append(item)
    return out


IN_LOOP_N = (50, 500)  # the in-loop FD's n: a tenth of the protocol's, within these bounds


def in_loop_overrides(budget: Budget, protocol: "Protocol") -> list[str]:
    """In-loop FD for the curve of quality against training time, sized to the budget: one point per training
    minute (4 to 10 points, spread over the fitted horizon), of a tenth of the protocol's n (50 to 500). It
    runs off the training clock, and its seconds are reported apart. The trainer's own sample grid is drawn
    once, at the end, and small: the report draws each entry's grid itself."""
    points = min(10, max(4, round(budget.value))) if budget.kind == "minutes" else 4
    n = min(IN_LOOP_N[1], max(IN_LOOP_N[0], protocol.n // 10))
    return ["train.eval_every=0", f"train.eval_points={points}", f"train.eval_n={n}", "train.sample_every=0",
            "train.n_grid=10"]


def stage_configs(name: str, stages: tuple[Stage, ...], *, dataset: str, preset: str, budget: Budget,
                  overrides: list[str], runs_dir: Path, conditional: bool = True,
                  in_loop: tuple[str, ...] = (), text_encoder: Path | None = None) -> Entry:
    """The resolved config and run directory of each stage of an entry: the last stage conditional as asked
    (earlier stages, autoencoders, unconditional), with the in-loop FD items and its protocol sampler. With a
    `text_encoder` run, the last stage reads captions through it instead of class labels."""
    entry = Entry(name, stages)
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        cond = conditional and last and text_encoder is None
        own = [f"model.class_cond={str(cond).lower()}"] + (
            list(in_loop) + [f"sampler.{s}" for s in stage.sampler] if last else ["train.eval_every=0"])
        if last and text_encoder is not None:
            own += [f"model.text_encoder={Path(text_encoder).resolve()}", "data.captions=true"]
        extra = list(stage.overrides) + own + scoped(overrides, stage.family) + budget.overrides(stage.share)
        if stage.autoencoder_from is not None:
            if not 0 <= stage.autoencoder_from < i:
                raise ConfigError(f"entry {name}: stage {i} takes its autoencoder from stage {stage.autoencoder_from}, "
                                  f"which is not an earlier stage")
            extra.append(f"model.autoencoder={entry.dirs[stage.autoencoder_from].resolve()}")
        try:
            cfg = resolve_config(stage.family, dataset=dataset, preset=stage.preset(preset), overrides=extra)
        except ConfigError as e:
            raise ConfigError(f"entry {name}, stage {stage.family}: {e}") from None
        if cfg.model.class_cond != cond:
            kind = TEXT if text_encoder is not None else CONDITIONING[conditional]
            raise ConfigError(f"entry {name}, stage {stage.family}: --set model.class_cond={str(not cond).lower()} "
                              f"contradicts this {kind} comparison (the last stage is "
                              f"{'class-' if cond else 'not class-'}conditional); leave model.class_cond "
                              f"to the comparison (--unconditional and --text choose the other tables)")
        entry.configs.append(cfg)
        entry.dirs.append(runs_dir / name / stage.family)
    return entry


# ----------------------------------------------------------------------------------------
# training


def check_comparable(entries: list[Entry], protocol: Protocol, dataset: str) -> None:
    """Before training anything: every stage trains on the same images, and the protocol can score them."""
    from genzoo.evaluation.classifier import EXTRACTORS
    from genzoo.evaluation.harness import InLoopFD, dataset_shape

    shapes = {f"{e.name}/{c.family}": dataset_shape(c.data.dataset, c.data) for e in entries for c in e.configs}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shapes.items())
        raise ConfigError(f"the entries would train on different image shapes ({listed}; a preset sets "
                          f"data.image_size or data.channels); make them equal, e.g. --set data.image_size=0 "
                          f"(the dataset's own size)")
    needs_classifier = dataset in EXTRACTORS and {"fd", "is", "acc", "kid", "pr"} & set(protocol.metrics_for(dataset))
    why = InLoopFD.unavailable(entries[0].configs[-1].data) if needs_classifier and entries else None
    if why:
        metrics = ",".join(protocol.metrics_for(dataset))
        raise ConfigError(f"--metrics {metrics} use the {dataset} classifier, but {why}; train at the dataset's "
                          f"size (--set data.image_size=0) or use --metrics fid,kid,pr,bpd")


@functools.lru_cache(maxsize=64)
def _checkpoint_info(path: str, mtime_ns: int, size: int) -> tuple:
    """Step, LR horizon and elapsed time of a checkpoint file (loaded once per version of the file)."""
    state = ckpt.load_checkpoint(Path(path))
    return tuple((k, state[k]) for k in ("step", "horizon", "elapsed_s"))


def run_status(run_dir: Path, cfg: RunConfig | None = None) -> tuple[str, dict | None]:
    """("new" | "partial" | "finished", checkpoint state without weights). Finished = the checkpoint reached its
    budget: its step is the LR horizon, or its elapsed training time reached train.minutes."""
    path = Path(run_dir) / ckpt.CHECKPOINT
    if not path.is_file():
        return "new", None
    stat = path.stat()
    info = dict(_checkpoint_info(str(path.resolve()), stat.st_mtime_ns, stat.st_size))
    if cfg is None:
        cfg = load_config_json((Path(run_dir) / ckpt.CONFIG).read_text())
    minutes = cfg.train.minutes
    done = info["step"] >= info["horizon"] or (minutes > 0 and info["elapsed_s"] >= minutes * 60)
    return ("finished" if done else "partial"), info


def check_reusable(run_dir: Path, cfg: RunConfig) -> None:
    """A run is reused only if it was trained with this comparison's config (budget included)."""
    saved = load_config_json((run_dir / ckpt.CONFIG).read_text())
    changed = [d for d in diff(saved, cfg) if d.split(":")[0] not in REUSABLE_CHANGES
               and not d.startswith("sampler.")]
    if changed:
        raise ConfigError(f"{run_dir} was trained with a different config than this comparison asks for "
                          f"({'; '.join(changed)[:300]}); use the same flags as before, or another --out")


def train_entry(entry: Entry, *, resume: bool, progress: bool) -> list[dict]:
    """Train (or reuse / continue) each stage in order; returns per-stage session records."""
    from genzoo.train.trainer import train

    records = []
    for i, (stage, cfg, run_dir) in enumerate(zip(entry.stages, entry.configs, entry.dirs)):
        status, info = run_status(run_dir, cfg)
        where = f"{entry.name}: stage {i + 1}/{len(entry.stages)} {stage.family}"
        if status != "new":
            if not resume:
                raise ConfigError(f"{run_dir} already holds a run; pass --resume to reuse finished runs and continue "
                                  f"interrupted ones, or choose another --out")
            check_reusable(run_dir, cfg)
        if status == "finished":
            log.info("%s: reusing the finished run in %s (step %d)", where, run_dir, info["step"])
            records.append({"trained": False, "session_s": 0.0})
            continue
        budget = (f"{cfg.train.minutes:g} min" if cfg.train.minutes else f"{cfg.train.steps} steps")
        log.info("%s: %s (%s) in %s", where, "continuing from step %d" % info["step"] if info else "training",
                 budget, run_dir)
        t0 = time.time()
        summary = train(cfg, run_dir, resume=status == "partial", progress=progress)
        records.append({"trained": True, "session_s": time.time() - t0})
        log.info("%s: %d steps, %.0f s of training (%s)", where, summary["step"], summary["train_s"], summary["stop"])
    return records


def stage_record(stage: Stage, cfg: RunConfig, run_dir: Path) -> dict:
    """What a finished stage cost: steps, training seconds, images seen and training images/s."""
    from genzoo.evaluation.runlog import read_metrics, training_cost

    status, info = run_status(run_dir, cfg)
    if status != "finished":
        raise CheckpointError(f"{run_dir} is not finished ({status}); continue it with `genzoo compare ... --resume` "
                              f"or `genzoo train {cfg.family} --out {run_dir} --resume`")
    cost = training_cost(run_dir)
    rows = read_metrics(run_dir)
    ends = [r for r in rows if r.get("event") == "end"]
    train_s = cost["train_s"] if cost["train_s"] is not None else info["elapsed_s"]
    return {"family": stage.family, "run": str(run_dir), "share": stage.share,
            "autoencoder_from": stage.autoencoder_from,
            "budget": {"steps": cfg.train.steps, "minutes": cfg.train.minutes},
            "budget_used": (train_s / (cfg.train.minutes * 60) if cfg.train.minutes else
                            info["step"] / cfg.train.steps if cfg.train.steps else None),
            "in_loop_eval_s": cost["in_loop_eval_s"],
            "step": info["step"], "stop": ends[-1]["stop"] if ends else None,
            "batch_size": cfg.train.batch_size, "class_cond": bool(getattr(cfg.model, "class_cond", False)),
            "train_s": train_s,
            "images_seen": (cost["images_seen"] if cost["images_seen"] is not None
                            else info["step"] * cfg.train.batch_size),
            "train_img_per_s": cost["train_img_per_s"],
            "in_loop_fd": [{"step": r["step"], "elapsed_s": r["elapsed_s"], "fd": r["fd"],
                            "extractor": r["fd_extractor"], "n": r["eval_n"]} for r in rows if "fd" in r],
            "config": cfg.to_dict()}


# ----------------------------------------------------------------------------------------
# evaluation, cached per run and protocol


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_key(run_dir: Path, protocol: Protocol, dataset: str, extra: dict) -> tuple[str, dict]:
    """The evaluation's identity: the protocol, the run's config and the checkpoint's step and time."""
    _, info = run_status(run_dir)
    text = getattr(load_config_json((run_dir / ckpt.CONFIG).read_text()).model, "text_encoder", "")
    key = {"protocol": protocol.key(), "metrics": list(protocol.metrics_for(dataset)), **extra,
           **({"prompt_set": protocol.prompt_set} if text else {}),
           "config_sha256": _file_sha(run_dir / ckpt.CONFIG), "step": info["step"],
           "elapsed_s": round(info["elapsed_s"], 3)}
    key = json.loads(json.dumps(key))  # as it reads back from the cache file (tuples -> lists)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16], key


def _cached(kind: str, run_dir: Path, protocol: Protocol, dataset: str, extra: dict, compute) -> tuple[dict, bool]:
    """compute() once per run and protocol, kept as run_dir/<kind>-<key>.json; returns (result, from_cache)."""
    digest, key = _cache_key(run_dir, protocol, dataset, extra)
    path = run_dir / f"{kind}-{digest}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["result"], True
    result = compute()
    ckpt.atomic_write_text(path, json.dumps({"key": key, "result": result}, indent=2) + "\n")
    return result, False


def evaluate_cached(run_dir: Path, protocol: Protocol, dataset: str, *, sampler_overrides=(), metrics=None,
                    keep_grid: bool = False, progress: bool = False) -> tuple[dict, bool]:
    """harness.evaluate_run under `protocol`, cached as run_dir/eval-<key>.json; returns (result, from_cache).
    `keep_grid`: the first `protocol.grid_n` evaluation samples are also the run's sample grid under these sampler
    overrides (`grid_cached` then reads them instead of sampling again); not for text runs, whose grid has its
    own prompts."""
    from genzoo.evaluation.harness import evaluate_run

    metrics = tuple(metrics or protocol.metrics_for(dataset))

    def keep(images: torch.Tensor, labels: torch.Tensor | None):  # labels cycle through the K classes
        if keep_grid and protocol.grid_n <= len(images):
            K = 0 if labels is None else int(labels.max()) + 1
            save_grid_npz(run_dir, protocol, dataset, sampler_overrides, images[:protocol.grid_n],
                          nrow=K if K and protocol.grid_n >= K else 10)

    def compute():
        t0 = time.time()
        result = evaluate_run(run_dir, n=protocol.n, metrics=metrics, seed=protocol.seed, n_ref=protocol.n_ref,
                              ref_split=protocol.ref_split, sampler_overrides=list(sampler_overrides),
                              n_bpd=min(protocol.n_bpd, protocol.n),
                              batch_size=protocol.batch_size, device=protocol.resolved_device(),
                              fid_weights=protocol.fid_weights, download=protocol.download, progress=progress,
                              prompt_set=protocol.prompt_set, on_samples=keep)
        result["eval_s"] = time.time() - t0
        return result

    return _cached("eval", run_dir, protocol, dataset,
                   {"sampler": list(sampler_overrides), "eval_metrics": metrics}, compute)


def reconstruction_cached(run_dir: Path, protocol: Protocol, dataset: str, *, progress: bool = False) -> dict:
    """harness.evaluate_reconstruction of a first-stage autoencoder (the bound on its latent model), cached."""
    from genzoo.evaluation.harness import evaluate_reconstruction

    metrics = tuple(m for m in protocol.metrics_for(dataset) if m in ("fd", "fid"))
    return _cached("recon", run_dir, protocol, dataset, {"reconstruction": list(metrics)},
                   lambda: evaluate_reconstruction(run_dir, n=protocol.n, metrics=metrics, n_ref=protocol.n_ref,
                                                   ref_split=protocol.ref_split, batch_size=protocol.batch_size,
                                                   device=protocol.resolved_device(),
                                                   fid_weights=protocol.fid_weights, download=protocol.download,
                                                   progress=progress))[0]


def _grid_path(run_dir: Path, protocol: Protocol, dataset: str, sampler_overrides) -> tuple[Path, dict]:
    extra = {"grid_n": protocol.grid_n, **({"sampler": list(sampler_overrides)} if sampler_overrides else {})}
    digest, key = _cache_key(run_dir, protocol, dataset, extra)
    return run_dir / f"grid-{digest}.npz", key


def save_grid_npz(run_dir: Path, protocol: Protocol, dataset: str, sampler_overrides, images: torch.Tensor,
                  nrow: int):
    """Keep `images` (uint8) as the run's grid under `protocol` and these sampler overrides (grid-<key>.npz)."""
    path, key = _grid_path(run_dir, protocol, dataset, sampler_overrides)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, images=images.numpy(), nrow=nrow, key=json.dumps(key))
    tmp.replace(path)


def grid_cached(run_dir: Path, protocol: Protocol, dataset: str, sampler_overrides=()) -> tuple[torch.Tensor, int]:
    """`protocol.grid_n` samples from seed `protocol.seed`, uint8, cached as run_dir/grid-<key>.npz, and the grid's
    row length (the number of classes when conditional): the first `grid_n` of the evaluation's samples where
    `evaluate_cached(keep_grid=True)` kept them, else sampled here (what `genzoo sample RUN --n N --seed S --set
    sampler.KEY=VALUE...` draws). A text-conditioned run draws `grid_prompts` instead: one prompt per row,
    a row's columns different noise (`genzoo sample RUN --prompts FILE`, each prompt repeated)."""
    from genzoo.config import apply_overrides
    from genzoo.evaluation.harness import generate
    from genzoo.runs import open_run

    path, key = _grid_path(run_dir, protocol, dataset, sampler_overrides)
    if path.is_file():
        with np.load(path) as f:
            if json.loads(str(f["key"])) == key:
                return torch.from_numpy(f["images"]), int(f["nrow"])
    device = protocol.resolved_device()
    run = open_run(run_dir, device=device)
    apply_overrides(run.config, [f"sampler.{s}" for s in sampler_overrides])
    clip = getattr(run.model, "text_encoder", None)
    prompts, nrow = grid_prompts(dataset, protocol.grid_n) if clip is not None else (None, 0)
    tokens = None if prompts is None else clip.tokenizer.encode_batch(prompts.texts)
    images, _, _ = generate(run.model, protocol.grid_n, seed=protocol.seed, batch_size=protocol.batch_size,
                            device=device, knobs=vars(run.config.sampler), text=tokens,
                            labels=None if prompts is None else prompts.labels)
    if prompts is None:
        K = run.model.num_classes
        nrow = K if K and protocol.grid_n >= K else 10
    save_grid_npz(run_dir, protocol, dataset, sampler_overrides, images, nrow)
    return images, nrow


def grid_prompts(dataset: str, n: int):
    """The prompt grid of a text entry: `evaluation.text.grid_prompts` rows (one per class, up to n), each
    repeated across its row; (prompts for the n samples, the row length)."""
    from genzoo.evaluation import text

    rows = text.grid_prompts(dataset, min(n, 10))
    cols = max(1, n // len(rows.texts))
    i = torch.arange(n) // cols % len(rows.texts)  # sample -> its row's prompt
    return text.Prompts([rows.texts[k] for k in i.tolist()], rows.labels[i],
                        {a: b[i] for a, b in rows.bins.items()}), cols


def sweep_overrides(item: int | str) -> tuple[str | None, int, list[str]]:
    """A `--sampler-steps` item, `STEPS` or `NAME:STEPS`: (sampler name or None, steps, sampler overrides)."""
    name, _, steps = str(item).rpartition(":")
    try:
        steps = int(steps)
    except ValueError:
        raise ConfigError(f"--sampler-steps takes STEPS or NAME:STEPS items (e.g. 20,ddim:50), not {item!r}") from None
    return name or None, steps, ([f"name={name}"] if name else []) + [f"steps={steps}"]


def unguided_knobs(stage: dict, guidance: tuple[str, ...]) -> list[str]:
    """The guidance knobs that the run's own sampler sets (its preset may; read from the run's saved config),
    back at their family's defaults (cfg_scale=1, temperature=1, ...): the unguided row is the model as trained."""
    own = load_config_json((Path(stage["run"]) / ckpt.CONFIG).read_text()).sampler
    defaults = FAMILIES[stage["family"]].sampler()
    keys = [item.partition("=")[0] for item in guidance]
    return [f"{k}={getattr(defaults, k)}" for k in keys if getattr(own, k) != getattr(defaults, k)]


def evaluate_entry(name: str, stages: list[dict], protocol: Protocol, *, sampler: tuple[str, ...] = (),
                   guidance: tuple[str, ...] = (), eval_batch: int = 0, progress: bool = False) -> tuple[dict, tuple]:
    """Score an entry (its last stage generates, with `sampler` and `guidance` over its run's sampler) and gather
    its cost over all stages. With guidance, the unguided evaluation is kept beside the reported one."""
    last = Path(stages[-1]["run"])
    dataset = stages[-1]["config"]["data"]["dataset"]
    if not protocol.batch_size:
        protocol = replace(protocol, batch_size=eval_batch if eval_batch and protocol.resolved_device() == "cpu"
                           else EVAL_BATCH)
    log.info("%s: evaluating %s (n=%d, %s)", name, last, protocol.n, ",".join(protocol.metrics_for(dataset)))
    t0 = time.time()
    knobs = list(sampler) + list(guidance)
    text = bool(stages[-1]["config"]["model"].get("text_encoder"))
    result, cached = evaluate_cached(last, protocol, dataset, sampler_overrides=knobs, keep_grid=not text,
                                     progress=progress)
    unguided_metrics = tuple(m for m in protocol.metrics_for(dataset) if m in ("fd", "fid", "acc"))
    unguided = evaluate_cached(last, replace(protocol, n=min(protocol.n_unguided, protocol.n)), dataset,
                               sampler_overrides=list(sampler) + unguided_knobs(stages[-1], guidance),
                               metrics=unguided_metrics,
                               progress=progress)[0] if guidance else None
    sweep = []
    if protocol.sampler_steps and "steps" in stages[-1]["config"]["sampler"]:
        primary = ("fd",) if "fd" in protocol.metrics_for(dataset) else ("fid",)
        for item in protocol.sampler_steps:
            sampler_name, steps, items = sweep_overrides(item)
            r, _ = evaluate_cached(last, protocol, dataset, sampler_overrides=knobs + items, metrics=primary,
                                   progress=progress)
            sweep.append({"steps": steps, "name": sampler_name, "metrics": r["metrics"], "cost": r["cost"]})
    grid = grid_cached(last, protocol, dataset, knobs)
    model = stages[-1]["config"]["model"]
    conditioning = TEXT if model.get("text_encoder") else CONDITIONING[bool(stages[-1]["class_cond"])]
    first_stage = None
    if len(stages) > 1 and FAMILIES.get(stages[0]["family"]) is not None and \
            FAMILIES[stages[0]["family"]].model.reconstructs:
        first_stage = reconstruction_cached(Path(stages[0]["run"]), protocol, dataset, progress=progress)
    spent = time.time() - t0
    main = result["metrics"].get("fd") or result["metrics"].get("fid")
    log.info("%s: %s%s", name, f"{main['protocol']['metric']} {main['value']:.4g}" if main else "evaluated",
             " (cached evaluation)" if cached else f" ({spent:.0f} s)")
    budgets = [s["budget_used"] for s in stages]
    entry = {"name": name, "families": [s["family"] for s in stages], "two_stage": len(stages) > 1,
             "dataset": dataset, "stages": stages, "class_cond": stages[-1]["class_cond"],
             "conditioning": conditioning,
             "grid_prompts": (grid_prompts(dataset, protocol.grid_n)[0].texts[::grid[1]] if conditioning == TEXT
                              else None),  # the prompt of each row
             "sampler": list(sampler), "guidance": list(guidance),
             "train_s": sum(s["train_s"] for s in stages), "images_seen": sum(s["images_seen"] for s in stages),
             "budget_used": (sum(b * s["share"] for b, s in zip(budgets, stages)) if None not in budgets
                             else None),  # each stage's used share of its own budget, weighted by that budget
             "in_loop_eval_s": sum(s["in_loop_eval_s"] or 0.0 for s in stages),
             "eval": result, "unguided": unguided, "eval_cached": cached, "eval_session_s": spent,
             "eval_batch": protocol.batch_size, "sweep": sweep,
             "first_stage": first_stage}
    return entry, grid


# ----------------------------------------------------------------------------------------
# the whole comparison


def compare(*, dataset: str = "mnist", families: list[str] | None = None, preset: str = "quick",
            budget: Budget = Budget(), out: str | Path = "reports/compare", resume: bool = False,
            overrides: list[str] = (), protocol: Protocol = Protocol(), progress: bool = True,
            command: str = "", conditional: bool = True, text: bool = False) -> dict:
    """Train (or reuse) every selected entry under `budget`, evaluate each under `protocol`, write the report.
    `conditional`: every entry class-conditional (the default) or every entry unconditional; `text`: every entry
    reads captions through one shared text encoder, trained first."""
    from genzoo.evaluation import report

    if text and not conditional:
        raise ConfigError("--text and --unconditional choose different tables: pass one of them")
    t_start = time.time()
    out = Path(out)
    chosen = select_entries(families, text=text)
    in_loop = tuple(in_loop_overrides(budget, protocol))
    encoder = text_encoder_entry(dataset, preset, list(overrides), out / "runs") if text else None
    entries = [stage_configs(n, st, dataset=dataset, preset=preset, budget=budget, overrides=list(overrides),
                             runs_dir=out / "runs", conditional=conditional, in_loop=in_loop,
                             text_encoder=encoder.dirs[0] if encoder else None) for n, st in chosen]
    check_comparable(entries, protocol, dataset)
    everything = ([encoder] if encoder else []) + entries
    existing = [(d, c) for e in everything for d, c in zip(e.dirs, e.configs) if (d / ckpt.CHECKPOINT).exists()]
    if existing and not resume:
        raise ConfigError(f"{out} already holds runs of a comparison ({existing[0][0]}, ...); pass --resume to reuse "
                          f"finished runs and continue interrupted ones, or choose another --out")
    kind = TEXT if text else CONDITIONING[conditional]
    check_conditioning(out, entries, kind)
    for d, c in existing:  # fail before training anything if a run to reuse does not match
        check_reusable(d, c)

    train_s = 0.0
    if encoder:
        log.info("[text encoder] %s, shared by every entry (its preset's own steps, outside their budgets)",
                 encoder.dirs[0])
        train_s += sum(r["session_s"] for r in train_entry(encoder, resume=resume, progress=progress))
    for k, entry in enumerate(entries):
        log.info("[%d/%d] %s: %s", k + 1, len(entries), entry.name,
                 " -> ".join(f"{s.family} ({s.share:.0%})" for s in entry.stages))
        train_s += sum(r["session_s"] for r in train_entry(entry, resume=resume, progress=progress))
    t_eval = time.time()
    results, grids = [], {}
    for entry in entries:
        stages = [stage_record(s, c, d) for s, c, d in zip(entry.stages, entry.configs, entry.dirs)]
        last = entry.stages[-1]
        guidance = tuple(g for g in last.guidance if conditional or not g.startswith("cfg_scale="))  # needs labels
        r, grids[entry.name] = evaluate_entry(entry.name, stages, protocol, sampler=last.sampler,
                                              guidance=guidance, eval_batch=last.eval_batch, progress=progress)
        results.append(r)
    shared = text_encoder_record(encoder, protocol) if encoder else None
    eval_s = time.time() - t_eval
    session = {"created": report.now(), "command": command, "train_s": train_s, "eval_s": eval_s,
               "total_s": time.time() - t_start}
    with open(out / "runs" / SESSIONS, "a") as f:  # every session that built this report, interrupted ones aside
        f.write(json.dumps(session) + "\n")
    sessions = [json.loads(x) for x in (out / "runs" / SESSIONS).read_text().splitlines() if x.strip()]
    doc = report.results_document(results, protocol=protocol, budget=budget, preset=preset,
                                  dataset=dataset, command=command, sessions=sessions, conditioning=kind,
                                  text_encoder=shared)
    report.render(doc, grids, out)
    log.info("report in %s (training %.0f s, evaluation %.0f s this session)", out / "index.html", train_s, eval_s)
    return doc


def text_encoder_entry(dataset: str, preset: str, overrides: list[str], runs_dir: Path) -> Entry:
    """The shared text encoder of a text comparison: a clip run at the comparison's preset and its own steps."""
    try:
        cfg = resolve_config(TEXT_ENCODER, dataset=dataset, preset=preset,
                             overrides=[item for item in scoped(overrides, TEXT_ENCODER)
                                        if not item.startswith(("model.", "sampler."))])  # the generators' own
    except ConfigError as e:
        raise ConfigError(f"the text encoder ({TEXT_ENCODER}) of --text: {e}") from None
    entry = Entry(TEXT_ENCODER_DIR, (Stage(TEXT_ENCODER),))
    entry.configs.append(cfg)
    entry.dirs.append(runs_dir / TEXT_ENCODER_DIR / TEXT_ENCODER)
    return entry


def text_encoder_record(encoder: Entry, protocol: Protocol) -> dict:
    """What the shared text encoder cost and how well it ties words to images (`genzoo eval CLIP_RUN`), cached."""
    from genzoo.evaluation.harness import evaluate_component

    run_dir, cfg = encoder.dirs[0], encoder.configs[0]
    record = stage_record(encoder.stages[0], cfg, run_dir)
    scores, _ = _cached("component", run_dir, protocol, cfg.data.dataset, {"component": TEXT_ENCODER},
                        lambda: evaluate_component(run_dir, n=protocol.n, device=protocol.resolved_device()))
    return {**record, "scores": scores}


def check_conditioning(out: Path, entries: list[Entry], wanted: str) -> None:
    """A report holds one conditioning: continuing one of another conditioning is refused in one line."""
    there = None
    if (out / "results.json").is_file():
        there = json.loads((out / "results.json").read_text()).get("conditioning", "mixed (an older report)")
    for e in entries:
        path = e.dirs[-1] / ckpt.CONFIG
        if there is None and path.is_file():
            there = conditioning_of(load_config_json(path.read_text()))
    if there is not None and there != wanted:
        flag = {TEXT: "with --text", CONDITIONING[False]: "with --unconditional"}.get(there, "without --text or "
                                                                                              "--unconditional")
        raise ConfigError(f"{out} holds a {there} comparison and this one is {wanted}: the two are never mixed "
                          f"in one table; use another --out (or run {flag} to continue it)")


def report_from_runs(run_dirs: list[str | Path], *, out: str | Path, protocol: Protocol = Protocol(),
                     progress: bool = False, command: str = "") -> dict:
    """Re-render a report from finished runs. A run whose config names a `model.autoencoder` run becomes a
    two-stage entry with that run as its first stage (so both stages count in its cost)."""
    from genzoo.evaluation import report

    t_start = time.time()
    results, grids, names = [], {}, set()
    for run_dir in map(Path, run_dirs):
        if not (run_dir / ckpt.CONFIG).is_file():
            raise CheckpointError(f"{run_dir} is not a genzoo run (no {ckpt.CONFIG}); give run directories, "
                                  f"e.g. REPORT_DIR/runs/vae/vae")
        cfg = load_config_json((run_dir / ckpt.CONFIG).read_text())
        chain = [(run_dir, cfg)]
        while getattr(chain[0][1].model, "autoencoder", ""):
            first = Path(chain[0][1].model.autoencoder)
            chain.insert(0, (first, load_config_json((first / ckpt.CONFIG).read_text())))
        stages = [stage_record(Stage(c.family, autoencoder_from=(i - 1 if i else None)), c, d)
                  for i, (d, c) in enumerate(chain)]
        total = sum(s["train_s"] for s in stages) or 1.0
        for s in stages:
            s["share"] = s["train_s"] / total  # the measured split (the recipe's is not known here)
        name = cfg.family if cfg.family not in names else f"{cfg.family} ({run_dir.name})"
        names.add(name)
        r, grids[name] = evaluate_entry(name, stages, protocol, progress=progress)
        results.append(r)
    datasets = sorted({r["dataset"] for r in results})
    if len(datasets) > 1:
        raise ConfigError(f"the runs are on different datasets ({', '.join(datasets)}); report one dataset at a time")
    conditioning = {r["conditioning"] for r in results}
    if len(conditioning) > 1:
        which = ", ".join(f"{r['name']} {r['conditioning']}" for r in results)
        raise ConfigError(f"the runs mix conditionings ({which}); report one kind at a time")
    session = {"created": report.now(), "command": command, "train_s": 0.0, "eval_s": time.time() - t_start,
               "total_s": time.time() - t_start}
    doc = report.results_document(results, protocol=protocol, budget=None, preset=None,
                                  dataset=datasets[0], command=command, sessions=[session],
                                  conditioning=conditioning.pop())
    report.render(doc, grids, Path(out))
    return doc
