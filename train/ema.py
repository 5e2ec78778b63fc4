"""Exponential moving average of the weights, used for sampling and evaluation."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA:
    """theta_ema <- d * theta_ema + (1 - d) * theta, with the warm-up d_t = min(decay, (1 + t) / (10 + t)).

    The warm-up (as in TensorFlow's ExponentialMovingAverage with num_updates) lets the average
    follow the fast early changes, so early sample grids are not noise from the initialisation.
    Frozen parameters (a latent model's autoencoder) are not averaged: they equal the copy made here.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        trainable = [p.requires_grad and p.dtype.is_floating_point for p in model.parameters()]
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs = None  # (ema params, model params, ema buffers, model buffers), built at the first update
        self._trainable = trainable

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if self._pairs is None or self._pairs[0] is not model:  # one multi-tensor kernel each, no Python loop
            keep = self._trainable
            self._pairs = (model,
                           [p for p, k in zip(self.module.parameters(), keep) if k],
                           [p.detach() for p, k in zip(model.parameters(), keep) if k],
                           list(self.module.buffers()), list(model.buffers()))
        _, ema_p, src_p, ema_b, src_b = self._pairs
        if ema_p:
            torch._foreach_lerp_(ema_p, src_p, 1.0 - self.decay_at(step))
        if ema_b:
            torch._foreach_copy_(ema_b, src_b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
