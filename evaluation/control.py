"""How closely samples follow their control images (ControlNet, models/controlnet.py) and their image prompts
(IP-Adapter, models/ip_adapter.py), with a protocol per measure.

    edge_f1(samples, controls)        edges: F1 of the sample's edge pixels against the control's, per image,
                                      averaged; a pixel matches only the same pixel (the BSDS benchmark's tolerance,
                                      0.75% of the diagonal, is 0.3 px at 28 x 28)
    low_res_mse(samples, controls)    low-res: mean squared error of the sample's 4 x 4 block means against the
                                      control's, on [0, 1] intensities
    masked_mse(samples, controls)     masked: mean squared error on the kept (upper) half, on [0, 1] intensities

    prompt_ranks(clip, samples, gallery)
                                      image prompts: the rank of each sample's prompt (gallery[i]) among all the
                                      gallery's images by the cosine of the zoo CLIP's image embeddings, 1 = the
                                      most similar; `image_prompt_fidelity` reports the share in the top 5

Samples and controls are in [-1, 1]: (N, C, H, W) samples, controls as `models.controlnet.control_image` makes
them. The same measures on the base model's samples for the same labels are the chance level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genzoo.models import controlnet

TOLERANCE = 0  # pixels: an edge pixel counts as matched if the other map has one within this distance

PROTOCOLS = {
    "edges": f"edge F1 within {TOLERANCE} px (edges: the ink's 1-px outline, models.controlnet.edges), per image, mean",
    "low-res": "MSE of 4x4 block means against the control's, [0, 1] intensities",
    "masked": "MSE on the kept upper half against the control, [0, 1] intensities",
}


def edge_f1(samples: torch.Tensor, controls: torch.Tensor) -> float:
    pred, target = controlnet.edges(samples) > 0, controls[:, :1] > 0  # (N, 1, H, W) bool
    near = lambda m: F.max_pool2d(m.float(), 2 * TOLERANCE + 1, 1, TOLERANCE) > 0  # noqa: E731
    precision = (pred & near(target)).flatten(1).sum(1) / pred.flatten(1).sum(1).clamp(min=1)
    recall = (target & near(pred)).flatten(1).sum(1) / target.flatten(1).sum(1).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return float(f1.mean())


def low_res_mse(samples: torch.Tensor, controls: torch.Tensor) -> float:
    x = (controlnet.low_res(samples) + 1) / 2
    return float(((x - (controls + 1) / 2) ** 2).mean())


def masked_mse(samples: torch.Tensor, controls: torch.Tensor) -> float:
    half = samples.shape[-2] // 2
    return float((((samples[..., :half, :] - controls[..., :half, :]) / 2) ** 2).mean())


MEASURES = {"edges": edge_f1, "low-res": low_res_mse, "masked": masked_mse}


def fidelity(kind: str, samples: torch.Tensor, controls: torch.Tensor) -> dict:
    """{"value", "protocol"} of how closely `samples` follow `controls` of `kind`."""
    return {"value": MEASURES[kind](samples.float(), controls.float()), "protocol": PROTOCOLS[kind]}


# ----------------------------------------------------------------------------------------
# image prompts

TOP_K = 5


def prompt_ranks(clip, samples: torch.Tensor, gallery: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(n,) the rank of gallery[i] among the gallery (N >= n images) by cosine similarity to samples[i] under the CLIP
    run's image embedding (1 = its own prompt is the nearest); ties count against the prompt."""
    embed = lambda x: torch.cat([clip.embed_images(x[i:i + batch_size].float())  # noqa: E731
                                 for i in range(0, len(x), batch_size)])
    with torch.no_grad():
        s, g = embed(samples), embed(gallery)  # (n, E), (N, E), unit
    sim = s @ g.T  # (n, N)
    own = sim[torch.arange(len(s)), torch.arange(len(s))]  # (n,)
    return (sim >= own[:, None]).sum(1)


def image_prompt_fidelity(clip, samples: torch.Tensor, gallery: torch.Tensor) -> dict:
    """{"value": the share of samples whose prompt ranks in the top 5, "median_rank", "protocol"}."""
    ranks = prompt_ranks(clip, samples, gallery)
    return {"value": float((ranks <= TOP_K).float().mean()), "top1": float((ranks == 1).float().mean()),
            "median_rank": float(ranks.float().median()),
            "protocol": f"rank of each sample's image prompt among {len(gallery)} gallery images by the cosine of the "
                        f"zoo CLIP's image embeddings; share in the top {TOP_K} (chance {TOP_K / len(gallery):.1%})"}
