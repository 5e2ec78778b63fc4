"""The comparison report: one results document rendered as index.html, report.md, results.json and PNGs.

    doc = results_document(entries, ...)   # plain JSON: every number with its protocol, the machine, the command
    render(doc, grids, "reports/mnist")    # writes the files below from `doc` and the sample grids

    index.html                   self-contained: every image embedded as a base64 data: URI
    report.md                    the same content, referencing the PNGs next to it
    results.json                 `doc`
    samples.png                  the entries' sample grids side by side (fixed seed, same class order)
    samples-<entry>.png          one grid per entry
    quality_vs_time.png          in-loop FD against training seconds (metrics.jsonl), final score as a star
    quality_vs_sampling_cost.png quality against network evaluations per sample (and `steps` sweeps)
    speed.png                    training and sampling images/s

The HTML and the Markdown are rendered from one list of blocks, so they cannot drift apart.
Published numbers (ANCHORS, from docs/anchors.md) appear beside ours only when the protocol matches.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import platform
import re
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from genzoo.models.diffusion import ode

# Published reference numbers (docs/anchors.md), each with the protocol it was measured under and the
# condition our result must meet to stand beside it. "secondary" = from a secondary copy of the paper's table.
FID_50K = {"min_n": 50000, "ref_split": "train", "conditional": False}  # FID-50k vs train, unconditional
TEST_BPD = {"min_n": 10000}  # bits/dim over a whole 10k test set
ANCHORS: list[dict] = [
    {"family": "ddpm", "dataset": "cifar10", "metric": "fid", "value": 3.17, "source": "Ho et al. 2020 (DDPM)",
     "protocol": "FID-50k vs train, unconditional, T=1000 ancestral, EMA; 35.7M params, 800k steps",
     "match": FID_50K},
    {"family": "ddpm", "dataset": "cifar10", "metric": "bpd", "value": 3.75, "source": "Ho et al. 2020 (DDPM)",
     "protocol": "test bits/dim, a bound (<= 3.75), L_simple model", "match": TEST_BPD},
    {"family": "gan", "dataset": "cifar10", "metric": "fid", "value": 42.7,
     "source": "DCGAN, PyTorch reimplementation", "protocol": "FID-50k vs train, unconditional", "match": FID_50K},
    {"family": "gan", "dataset": "cifar10", "metric": "fid", "value": 14.32,
     "source": "SNGAN (ResNet), same reimplementation set", "protocol": "FID-50k vs train, unconditional",
     "match": FID_50K},
    {"family": "pixelcnn", "dataset": "cifar10", "metric": "bpd", "value": 3.03,
     "source": "Gated PixelCNN (secondary)", "protocol": "test bits/dim, exact", "match": TEST_BPD},
    {"family": "transformer", "dataset": "cifar10", "metric": "bpd", "value": 2.90,
     "source": "Image Transformer (secondary)", "protocol": "test bits/dim, exact", "match": TEST_BPD},
    {"family": "vqvae", "dataset": "cifar10", "metric": "bpd", "value": 4.67,
     "source": "van den Oord et al. 2017 (secondary)", "protocol": "test bits/dim", "match": TEST_BPD},
    {"family": "dit", "dataset": "cifar10", "metric": "fid", "value": 10.0, "source": "DiT on CIFAR-10, a user report",
     "protocol": "FID-50k (approximately)", "match": FID_50K},
    {"family": "vae", "dataset": "binarized-mnist", "metric": "nll-nats", "value": 86.76,
     "source": "VAE, 1 stochastic layer (Burda et al. 2016)", "protocol": "binarized MNIST test NLL in nats",
     "match": None},  # never matches: genzoo's MNIST is 8-bit, its bits/dim are not binarized nats
]

COST_PROTOCOL = {
    "train_s": "training seconds of the run (the trainer's elapsed time: the loop and its checkpoints; data loading, "
               "sample grids and in-loop FD excluded), summed over an entry's stages",
    "budget_used": "training seconds / the stage's train.minutes (or steps / train.steps); an entry's is its stages' "
                   "weighted by their shares",
    "in_loop_eval_s": "seconds the trainer spent off the training clock: its sample grids and in-loop FD "
                      "(the points of the quality-against-time curve), summed over stages",
    "images_seen": "optimizer steps x batch size (the trainer's count), summed over stages",
    "train_img_per_s": "median of the logged intervals in metrics.jsonl (steps x batch size / seconds), each "
                       "training session's first interval (warm-up) left out where it logged more than one",
    "sample_img_per_s": "images/s of the evaluation's sampling pass (protocol n, its batch size and device)",
    "network_evaluations_per_sample": "network passes per sample, from the family's network_evaluations(**knobs)",
    "parameters": "parameters of the sampling model (a second stage includes its frozen autoencoder)",
}


# ----------------------------------------------------------------------------------------
# the document


def machine_info(device: str = "cpu") -> dict:
    """What the numbers were measured on."""
    import genzoo

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cuda = torch.cuda.is_available()
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()) if os.name == "posix" else None,
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "eval_device": device,
            "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
            "python": platform.python_version(), "platform": platform.platform(), "genzoo": genzoo.__version__}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def primary_metric(entry: dict) -> dict | None:
    """The entry's main quality number: FD in the domain classifier's space if measured, else FID."""
    m = entry["eval"]["metrics"]
    return m.get("fd") or m.get("fid")


def anchors_for(entry: dict) -> list[dict]:
    """Published numbers whose protocol our result of `entry` matches (none at MNIST scale)."""
    out = []
    metrics = entry["eval"]["metrics"]
    conditional = any(s["class_cond"] for s in entry["stages"][-1:])
    for a in ANCHORS:
        ours = metrics.get(a["metric"])
        same = (a["family"], a["dataset"]) == (entry["families"][-1], entry["dataset"])
        if a["match"] is None or ours is None or not same:
            continue
        p = ours["protocol"]
        n = p.get("n_generated") if a["metric"] != "bpd" else p.get("n_reference")
        if (n or 0) < a["match"]["min_n"]:
            continue
        if "ref_split" in a["match"] and p.get("reference") != f"{entry['dataset']}/{a['match']['ref_split']}":
            continue
        if "conditional" in a["match"] and conditional != a["match"]["conditional"]:
            continue
        out.append({**a, "ours": ours["value"]})
    return out


def results_document(entries: list[dict], *, protocol, budget, preset: str | None,
                     dataset: str, command: str, sessions: list[dict], conditioning: str | None = None,
                     text_encoder: dict | None = None) -> dict:
    """The report's content as JSON: entries (with the harness's per-metric protocols), protocol, machine, and
    the shared text encoder of a text comparison (its stage record and scores)."""
    metrics = list(protocol.metrics_for(dataset))
    for e in entries:
        e["anchors"] = anchors_for(e)
    return {
        "genzoo_report": 1, "dataset": dataset, "preset": preset, "conditioning": conditioning,
        "text_encoder": text_encoder,
        "created": now(), "command": command,
        "budget": None if budget is None else {**asdict(budget), "description": budget.describe()},
        "protocol": {**asdict(protocol), "metrics": metrics, "device": protocol.resolved_device(), "weights": "ema",
                     "reference": f"{dataset}/{protocol.ref_split}", "bits_per_dim": f"first n={min(protocol.n_bpd, protocol.n)} images of "
                     f"{dataset}/test through the model's log_likelihood, exact, a bound or an ODE estimate as the "
                     f"family declares; for a model that offers it beside its bound (ddpm, dit), also the "
                     f"probability-flow ODE estimate {ode.LIKELIHOOD_LABEL.removeprefix('estimate ')}"},
        "cost_protocol": COST_PROTOCOL, "machine": machine_info(protocol.resolved_device()),
        "sessions": sessions, "entries": entries, "anchors": ANCHORS,
    }


# ----------------------------------------------------------------------------------------
# formatting


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 1000):
        return f"{int(x):,}"
    if x == 0 or not math.isfinite(x):
        return str(x)
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 else f"{x:.2e}"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def sampler_text(e: dict) -> str:
    """An entry's protocol sampler and guidance as `--set` items, with the unguided FD where it was kept."""
    text = " ".join(f"`sampler.{x}`" for x in e.get("sampler", []) + e.get("guidance", []))
    unguided = e.get("unguided") and primary_metric({"eval": e["unguided"]})
    return text + (f" (unguided: {fmt(unguided['value'])}{unguided_n(e)})" if unguided else "")


def unguided_n(e: dict) -> str:
    """", n=250" where the unguided row drew fewer samples than the reported one (its FD then reads higher)."""
    u, g = primary_metric({"eval": e["unguided"]}), primary_metric(e)
    n_u, n_g = (m and m["protocol"].get("n_generated") for m in (u, g))
    return f", n={n_u}" if n_u and n_g and n_u != n_g else ""


def guidance_text(e: dict) -> str:
    """The entry's guidance, and the FD and requested-class accuracy of its unguided evaluation."""
    if not e.get("guidance"):
        return "–"
    u = e.get("unguided") or {"metrics": {}}
    main, acc = primary_metric({"eval": u}), u["metrics"].get("label_accuracy")
    return " ".join(e["guidance"]) + (f" (unguided {fmt(main['value'])}" + (
        f" / {percent(acc['value'])}" if acc else "") + unguided_n(e) + ")" if main else "")


def stages_text(e: dict) -> str:
    if not e["two_stage"]:
        return e["families"][0]
    return " → ".join(f"{s['family']} ({s['share']:.0%})" for s in e["stages"])


def bpd_text(e: dict) -> str:
    b = e["eval"]["metrics"].get("bpd")
    if b is None:
        return "–"
    metric = b["protocol"]["metric"]  # "bits/dim (<the family's likelihood>)": exact, a bound, or an ODE estimate
    kind = next((k for k in ("exact", "bound", "estimate") if k in metric), "bound")
    text = f"{fmt(b['value'])} ({kind}{', ODE' if 'ODE' in metric else ''})"
    o = e["eval"]["metrics"].get("bpd_ode")  # the ODE estimate offered beside a bound (ddpm, dit)
    return text if o is None else f"{text}; {fmt(o['value'])} (estimate, ODE)"


def percent(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def stage_budget_used(s: dict) -> float | None:
    """A stage's training seconds over its minutes budget (or steps over its steps budget)."""
    if "budget_used" in s:
        return s["budget_used"]
    b = s["budget"]  # a report written before the field: the same definition from its records
    return s["train_s"] / (b["minutes"] * 60) if b["minutes"] else s["step"] / b["steps"] if b["steps"] else None


def budget_used(e: dict) -> float | None:
    used = [stage_budget_used(s) for s in e["stages"]]
    return None if None in used else sum(u * s["share"] for u, s in zip(used, e["stages"]))


def results_table(doc: dict) -> tuple[list[str], list[list[str]]]:
    entries = doc["entries"]
    has = {k: any(k in e["eval"]["metrics"] for e in entries) for k in ("fd", "fid", "label_accuracy")}
    names = {k: next((e["eval"]["metrics"][k]["protocol"]["metric"] for e in entries if k in e["eval"]["metrics"]),
                     k.upper()) for k in ("fd", "fid", "kid")}
    guided = any(e.get("guidance") for e in entries)
    # a text comparison: what the samples show of their prompts (evaluation.text.adherence)
    asked = [k for k in dict.fromkeys(k for e in entries for k in e["eval"]["metrics"])
             if k.endswith("_accuracy") and k != "label_accuracy" or k == "clip_score"]
    header = ["entry", "stages"] + [f"{names[k]} ↓" for k in ("fd", "fid") if has[k]] + (
        ["requested class ↑"] if has["label_accuracy"] else []) + [
        "CLIP score (zoo's) ↑" if k == "clip_score" else f"requested {k.removesuffix('_accuracy')} ↑"
        for k in asked] + (["guidance (unguided)"] if guided else []) + [
        f"{names['kid']} ↓", "precision", "recall", "bits/dim ↓", "class score", "parameters", "train min",
        "budget used", "images seen", "train img/s", "sample img/s", "NFE/sample"]
    rows = []
    for e in entries:
        m, c = e["eval"]["metrics"], e["eval"]["cost"]
        get = lambda k: fmt(m[k]["value"]) if k in m else "–"  # noqa: E731
        rates = [s["train_img_per_s"] for s in e["stages"]]
        train_rate = fmt(rates[0], 3) if len(rates) == 1 else " + ".join(
            f"{fmt(r, 3)} ({s['family']})" for r, s in zip(rates, e["stages"]))
        accuracy = [percent(m["label_accuracy"]["value"] if "label_accuracy" in m else None)]
        text = [fmt(m[k]["value"], 3) if k == "clip_score" else percent(m[k]["value"]) if k in m else "–"
                for k in asked]
        rows.append([e["name"], stages_text(e)] + [get(k) for k in ("fd", "fid") if has[k]] + (
            accuracy if has["label_accuracy"] else []) + text + ([guidance_text(e)] if guided else []) + [
            get("kid"), get("precision"), get("recall"), bpd_text(e), get("class_score"), fmt(c["parameters"]),
            fmt(e["train_s"] / 60, 3), percent(budget_used(e)), fmt(e["images_seen"]), train_rate,
            fmt(c["sample_img_per_s"], 3), fmt(c["network_evaluations_per_sample"])])
    return header, rows


def stage_table(doc: dict) -> tuple[list[str], list[list[str]]]:
    header = ["entry", "stage", "budget", "budget used", "steps", "stopped by", "train s", "in-loop eval s",
              "images seen", "train img/s", "threads", "run"]
    rows = []
    for e in doc["entries"]:
        for s in e["stages"]:
            b = s["budget"]
            budget = f"{b['minutes']:g} min" if b["minutes"] else f"{b['steps']} steps"
            cond = (" (text-cond.)" if s["config"]["model"].get("text_encoder") else
                    " (class-cond.)" if s["class_cond"] else "")
            rows.append([e["name"], s["family"] + cond, budget,
                         percent(stage_budget_used(s)), fmt(s["step"]), s["stop"] or "–", fmt(s["train_s"], 4),
                         fmt(s.get("in_loop_eval_s"), 3), fmt(s["images_seen"]),
                         fmt(s["train_img_per_s"], 3), str(s["config"]["train"]["threads"] or "auto"),
                         f"`{s['run']}`"])
    return header, rows


def first_stage_table(entries: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["entry", "first stage", "reconstruction FD / FID ↓", "MSE ↓", "PSNR dB ↑", "entry's samples FD / FID"]
    rows = []
    for e in entries:
        m = e["first_stage"]["metrics"]
        recon = m.get("fd") or m.get("fid")
        own = primary_metric(e)
        rows.append([e["name"], e["first_stage"]["family"], fmt(recon["value"]) if recon else "–",
                     fmt(m["mse"]["value"]), fmt(m["psnr"]["value"], 3), fmt(own["value"]) if own else "–"])
    return header, rows


# ----------------------------------------------------------------------------------------
# plots (matplotlib's object API: no pyplot, no backend switch)


def _subplots(*args, figsize, dpi, **kw):
    """A figure and its axes without pyplot: rendering a report never switches the caller's matplotlib backend
    (a notebook keeps showing its inline figures) and leaves no figure open."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(*args, **kw)


def plot_samples(doc: dict, grids: dict, path: Path) -> None:
    """Each entry's grid in one figure, in the table's order."""
    from torchvision.utils import make_grid

    names = [e["name"] for e in doc["entries"]]
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols) if names else 1
    fig, axes = _subplots(rows, cols, figsize=(3.2 * cols, 4.0 * rows), dpi=150, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, e) in enumerate(zip(axes.flat, doc["entries"])):
        images, nrow = grids[e["name"]]
        g = make_grid(images, nrow=nrow, padding=2, pad_value=255).permute(1, 2, 0).numpy()
        ax.imshow(g, interpolation="nearest")
        prompts = e.get("grid_prompts")
        if prompts:  # a text entry: one prompt per row, named left of the figure's first column
            h = images.shape[-2] + 2
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([1 + h * (r + 0.5) for r in range(len(prompts))] if k % cols == 0 else [],
                          prompts if k % cols == 0 else [], fontsize=5)
            for spine in ax.spines.values():
                spine.set_visible(False)
        main = primary_metric(e)
        score = f"{main['protocol']['metric'].split('-')[0]} {fmt(main['value'])}" if main else ""
        cond = ", text" if prompts else ", class-cond." if e["stages"][-1]["class_cond"] else ""
        ax.set_title(f"{e['name']}{cond}\n{score}", fontsize=9)
    fig.suptitle(f"{doc['dataset']}: samples, EMA weights, seed {doc['protocol']['seed']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def _plain_log_labels(axis) -> None:
    """Tick labels of a log axis as plain numbers (1,400 rather than 1.4 x 10^3)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    label = FuncFormatter(lambda v, _: fmt(v, 3))
    lo, hi = axis.get_view_interval()
    axis.set_major_formatter(label)
    axis.set_minor_formatter(label if lo > 0 and hi / lo < 10 else NullFormatter())  # minor labels within a decade


def plot_quality_vs_time(doc: dict, path: Path) -> None:
    fig, ax = _subplots(figsize=(6, 4), dpi=120)
    drawn = False
    for i, e in enumerate(doc["entries"]):
        color = f"C{i % 10}"
        offset = sum(s["train_s"] for s in e["stages"][:-1])  # a second stage starts after the first
        pts = e["stages"][-1]["in_loop_fd"]
        if pts:
            ax.plot([offset + p["elapsed_s"] for p in pts], [p["fd"] for p in pts], marker="o", ms=3, color=color,
                    label=f"{e['name']} in-loop FD-{pts[0]['extractor']} (n={pts[0]['n']})")
            drawn = True
        main = primary_metric(e)
        if main:
            ax.plot([e["train_s"]], [main["value"]], marker="*", ms=12, color=color, linestyle="none",
                    label=f"{e['name']} final {main['protocol']['metric']} (n={main['protocol']['n_generated']})")
            drawn = True
    if drawn:
        ax.set_yscale("log")
        _plain_log_labels(ax.yaxis)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no quality measurements", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(left=0)
    ax.set_xlabel("training seconds (all stages)")
    ax.set_ylabel("Fréchet distance ↓")
    ax.grid(alpha=0.3)
    ax.set_title("quality against training time", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def plot_quality_vs_sampling_cost(doc: dict, path: Path) -> None:
    fig, ax = _subplots(figsize=(6, 4), dpi=120)
    drawn = False
    for i, e in enumerate(doc["entries"]):
        color = f"C{i % 10}"
        key = "fd" if "fd" in e["eval"]["metrics"] else "fid"
        pts = [(s["cost"]["network_evaluations_per_sample"], s["metrics"][key]["value"]) for s in e["sweep"]
               if key in s["metrics"] and s["cost"]["network_evaluations_per_sample"]]
        main, nfe = primary_metric(e), e["eval"]["cost"]["network_evaluations_per_sample"]
        if pts:
            pts = sorted(set(pts + ([(nfe, main["value"])] if main and nfe else [])))
            ax.plot(*zip(*pts), marker="o", ms=4, color=color, label=f"{e['name']} (sampler steps sweep)")
        if main and nfe:
            ax.plot([nfe], [main["value"]], marker="*", ms=12, color=color, linestyle="none",
                    label=f"{e['name']} ({nfe} NFE)")
            drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_labels(ax.xaxis)
        _plain_log_labels(ax.yaxis)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no family reports network evaluations", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("network evaluations per sample")
    ax.set_ylabel("Fréchet distance ↓")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("quality against sampling cost", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def plot_speed(doc: dict, path: Path) -> None:
    train = [(f"{e['name']}/{s['family']}" if e["two_stage"] else e["name"], s["train_img_per_s"] or 0, i)
             for i, e in enumerate(doc["entries"]) for s in e["stages"]]
    sample = [(e["name"], e["eval"]["cost"]["sample_img_per_s"] or 0, i) for i, e in enumerate(doc["entries"])]
    fig, (a, b) = _subplots(1, 2, figsize=(9, 0.5 * max(len(train), 3) + 1.5), dpi=120)
    for ax, data, title in ((a, train, "training images/s"), (b, sample, "sampling images/s")):
        labels, values, colors = zip(*data) if data else ((), (), ())
        ax.barh(range(len(values)), values, color=[f"C{i % 10}" for i in colors])  # one colour per entry
        ax.set_yticks(range(len(values)), labels, fontsize=8)
        ax.invert_yaxis()
        for y, v in enumerate(values):
            ax.text(v, y, f" {fmt(v, 3)}", va="center", fontsize=7)
        if values and min(values) > 0 and max(values) / min(values) > 30:  # bars from a power of ten below the least
            ax.set_xscale("log")
            ax.set_xlim(left=10 ** math.floor(math.log10(min(values))), right=max(values) * 3)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"speed on {doc['machine']['gpu'] or doc['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


# ----------------------------------------------------------------------------------------
# blocks -> Markdown and HTML


def blocks(doc: dict) -> list[tuple]:
    """The report as ("h1"|"h2"|"p"|"ul"|"table"|"img", ...) blocks; text may hold `code` spans."""
    mc, p = doc["machine"], doc["protocol"]
    out: list[tuple] = [("h1", f"genzoo comparison on {doc['dataset']}")]
    cmd = f"`{doc['command']}`" if doc["command"] else "a script"
    out.append(("p", f"Generated {doc['created']} by {cmd}."))
    threads = f"{mc['cpu_count']} CPUs, torch threads {mc['torch_threads']}"
    load = f", load average {mc['load_average'][0]:.2f} at report time" if mc["load_average"] else ""
    out.append(("p", f"Machine: {mc['cpu']} ({threads}{load}); GPU: {mc['gpu'] or 'none'}; evaluation device "
                     f"{mc['eval_device']}; torch {mc['torch']}, Python {mc['python']}, genzoo {mc['genzoo']}."))
    budget = doc["budget"]["description"] if doc["budget"] else "as each run was trained (re-rendered from runs)"
    preset = f"preset `{doc['preset']}`, " if doc["preset"] else ""
    out.append(("p", f"Budget: {preset}{budget}. The table's \"budget used\" is each entry's training seconds over "
                     f"its budget; sample grids and in-loop FD run off the training clock."))
    if doc.get("conditioning") == "class-conditional":
        out.append(("p", "Conditioning: every entry is class-conditional (the generating stage of a two-stage "
                         "entry; its autoencoder is not) and samples with labels cycling through the classes. "
                         "\"Requested class\" is the share of samples the domain classifier reads as the class "
                         "they were drawn for."))
    elif doc.get("conditioning") == "unconditional":
        out.append(("p", "Conditioning: every entry is unconditional (`--unconditional`)."))
    elif doc.get("conditioning") == "text-conditional":
        out.append(("p", "Conditioning: every entry reads captions (`--text`): its generating stage attends to the "
                         "token embeddings of one shared, frozen text encoder, and samples from the evaluation "
                         "prompts, each naming a class and a bin of the two first attributes (\"a thick, "
                         "right-leaning seven\"). \"Requested class\" is the share of samples the domain "
                         "classifier reads as the class their prompt names; each \"requested\" attribute the share "
                         "in which `genzoo.datasets.attributes` (the functions that wrote the training captions) "
                         "measures the requested bin (chance 1/3); the CLIP score is 100 × the mean cosine of "
                         "image and prompt under the same text encoder's CLIP, the zoo's own, not comparable with "
                         "published CLIP scores."))
    te = doc.get("text_encoder")
    if te:
        sc = te["scores"]["metrics"]
        out.append(("p", f"Text encoder: the `{te['family']}` run `{te['run']}`, {fmt(te['step'])} steps at its "
                         f"preset's own settings, {te['train_s']:.0f} s of training, shared by every entry and "
                         f"counted in none of their budgets (a frozen, separately trained encoder, as Imagen's). "
                         f"On the first {sc['n']} test images: zero-shot accuracy "
                         f"{percent(sc['zero_shot_accuracy'])} from prompts alone, "
                         + ", ".join(f"{k.removesuffix('_accuracy')} {percent(v)}" for k, v in sc.items()
                                     if k.endswith("_accuracy") and k != "zero_shot_accuracy")
                         + f", text-to-image recall@5 {percent(sc['recall@5'])}."))
    samplers = [f"{e['name']} {sampler_text(e)}" for e in doc["entries"] if e.get("sampler") or e.get("guidance")]
    if samplers:
        out.append(("p", "Protocol samplers (recorded in each metric's protocol): " + "; ".join(samplers) + "; the "
                         "others sample as their preset does."))
    metrics = ", ".join(p["metrics"])
    out.append(("p", f"Protocol, the same for every entry: {p['n']} samples from the EMA weights, seed {p['seed']} "
                     f"(labels cycle through the classes for class-conditional models), metrics {metrics} against "
                     f"{p['reference']} (n = {p['n_ref']}, cached features). FD-<classifier>, KID, precision/recall "
                     f"and class score use the project's domain classifier when the dataset has one: they are not "
                     f"FID and not comparable with the literature. Bits/dim: {p['bits_per_dim']}."))
    two = [e for e in doc["entries"] if e["two_stage"]]
    if two:
        out.append(("p", "Two-stage entries count both stages in their budget, training time and images seen: "
                         + "; ".join(f"{e['name']} = {stages_text(e)}" for e in two) + "."))
    s = doc["sessions"][-1]
    cached = [e["name"] for e in doc["entries"] if e["eval_cached"]]
    reused = f" (cached evaluations reused: {', '.join(cached)})" if cached else ""
    earlier = f"; the {len(doc['sessions'])} sessions that built it are listed under Sessions" if len(
        doc["sessions"]) > 1 else ""
    in_loop = sum(e.get("in_loop_eval_s") or 0.0 for e in doc["entries"])
    out.append(("p", f"This command: {s['train_s']:.0f} s training (of which {in_loop:.0f} s of in-loop FD and "
                     f"grids, over all sessions, off the training clock), {s['eval_s']:.0f} s evaluation, "
                     f"{s['total_s']:.0f} s in all{reused}{earlier}."))

    out.append(("h2", "Results"))
    out.append(("table", *results_table(doc)))
    firsts = [e for e in doc["entries"] if e.get("first_stage")]
    if firsts:
        out.append(("h2", "First stages: the autoencoders' reconstructions"))
        out.append(("p", f"A latent model's samples are decoded by its first stage, so the first stage's "
                         f"reconstructions of the first {p['n']} test images bound its quality: the same metric "
                         f"as the table (against the same reference), mean squared error and PSNR on [0, 1] pixels."))
        out.append(("table", *first_stage_table(firsts)))
    out.append(("h2", "Samples"))
    prompted = next((e["grid_prompts"] for e in doc["entries"] if e.get("grid_prompts")), None)
    if prompted:
        out.append(("p", f"{p['grid_n']} samples of each entry (seed {p['seed']}, EMA weights), one prompt per "
                         f"row, top to bottom: " + "; ".join(f"\"{t}\"" for t in prompted) + ". The columns of "
                         f"a row are different noise: what `genzoo sample RUN --prompts FILE --n {p['grid_n']} "
                         f"--seed {p['seed']}` draws with these prompts in FILE, one per line."))
    else:
        out.append(("p", f"The first {p['grid_n']} of each entry's {p['n']} evaluation samples (seed {p['seed']}, "
                         f"EMA weights, the table's sampler and guidance), kept from the evaluation rather than "
                         f"drawn again. Class-conditional grids show one class per column, in label order."))
    out.append(("img", "samples.png", "samples of every entry side by side"))
    out.append(("h2", "Quality against training time"))
    out.append(("p", "Lines: the in-loop FD the trainer logged (metrics.jsonl; its own n, so biased differently "
                     "from the final score). Stars: the final score of the table. A second stage's curve starts "
                     "after its first stage's training time."))
    out.append(("img", "quality_vs_time.png", "quality against training time"))
    out.append(("h2", "Quality against sampling cost"))
    swept = [e["name"] for e in doc["entries"] if e["sweep"]]
    out.append(("p", "Each entry at its sampler's network evaluations per sample. "
                     + (f"Sweeps over sampler.steps {p['sampler_steps']}: {', '.join(swept)}." if swept else
                        "No steps sweep in this report (`--sampler-steps` evaluates families with a steps knob).")))
    out.append(("img", "quality_vs_sampling_cost.png", "quality against sampling cost"))
    out.append(("h2", "Speed"))
    out.append(("img", "speed.png", "training and sampling images per second"))
    out.append(("h2", "Stages"))
    out.append(("table", *stage_table(doc)))
    out.append(("h2", "Published reference numbers"))
    matched = [(e["name"], a) for e in doc["entries"] for a in e["anchors"]]
    if matched:
        out.append(("table", ["entry", "metric", "ours", "published", "published protocol", "source"],
                    [[n, a["metric"], fmt(a["ours"]), fmt(a["value"]), a["protocol"], a["source"]]
                     for n, a in matched]))
    else:
        protos = sorted({a["dataset"] + " " + a["metric"] for a in ANCHORS})
        out.append(("p", f"None shown: no published number in docs/anchors.md was measured with this protocol "
                         f"({doc['dataset']}, {metrics}, n = {p['n']}). The references are "
                         f"{', '.join(protos)}; putting them beside these numbers would compare different things."))
    out.append(("h2", "Sessions"))
    out.append(("table", ["finished (UTC)", "command", "training s", "evaluation s", "total s"],
                [[x["created"], f"`{x['command']}`", fmt(x["train_s"], 4), fmt(x["eval_s"], 4), fmt(x["total_s"], 4)]
                 for x in doc["sessions"]]))
    out.append(("h2", "Cost definitions"))
    out.append(("ul", [f"{k}: {v}" for k, v in doc["cost_protocol"].items()]))
    return out


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(bs: list[tuple]) -> str:
    lines = []
    for b in bs:
        kind = b[0]
        if kind == "h1":
            lines += [f"# {b[1]}", ""]
        elif kind == "h2":
            lines += [f"## {b[1]}", ""]
        elif kind == "p":
            lines += [b[1], ""]
        elif kind == "ul":
            lines += [f"- {x}" for x in b[1]] + [""]
        elif kind == "table":
            header, rows = b[1], b[2]
            lines.append("| " + " | ".join(map(_md_cell, header)) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{b[2]}]({b[1]})", ""]
    return "\n".join(lines)


def _html_text(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text), quote=False))


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
code{background:#f3f3f3;padding:0 3px}"""


def to_html(bs: list[tuple], out_dir: Path) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(next(b[1] for b in bs if b[0] == 'h1'))}</title>",
             f"<style>{STYLE}</style></head><body>"]
    for b in bs:
        kind = b[0]
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{_html_text(b[1])}</{kind}>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_html_text(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_html_text(h)}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{_html_text(c)}</td>" for c in r) + "</tr>" for r in b[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((out_dir / b[1]).read_bytes()).decode()
            parts.append(f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}"></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(doc: dict, grids: dict, out_dir: str | Path) -> list[Path]:
    """Write the PNGs, report.md, index.html and results.json of `doc` into out_dir; returns the paths."""
    from genzoo.evaluation.grid import save_grid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for e in doc["entries"]:
        images, nrow = grids[e["name"]]
        scale = 2 if images.shape[-1] <= 32 else 1
        e["grid_png"] = f"samples-{slug(e['name'])}.png"
        written.append(save_grid(images.float() / 127.5 - 1, out / e["grid_png"], nrow=nrow, scale=scale))
    for name, plot in (("samples.png", lambda p: plot_samples(doc, grids, p)),
                       ("quality_vs_time.png", lambda p: plot_quality_vs_time(doc, p)),
                       ("quality_vs_sampling_cost.png", lambda p: plot_quality_vs_sampling_cost(doc, p)),
                       ("speed.png", lambda p: plot_speed(doc, p))):
        plot(out / name)
        written.append(out / name)
    bs = blocks(doc)
    for name, text in (("report.md", to_markdown(bs)), ("index.html", to_html(bs, out)),
                       ("results.json", json.dumps(doc, indent=2) + "\n")):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
        written.append(out / name)
    return written
