"""Exponential moving average of the weights, used for sampling and evaluation."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA:
    """theta_ema <- d * theta_ema + (1 - d) * theta, with the warm-up d_t = min(decay, (1 + t) / (10 + t)).

    The warm-up (as in TensorFlow's ExponentialMovingAverage with num_updates) lets the average
    follow the fast early changes, so early sample grids are not noise from the initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        ema_p = [p for p in self.module.parameters() if p.dtype.is_floating_point]
        src_p = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
        torch._foreach_lerp_(ema_p, src_p, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
