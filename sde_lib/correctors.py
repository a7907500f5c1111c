"""Correctors of the predictor-corrector sampler: Langevin MCMC at a fixed time (Song et al. 2021, Alg. 4-5).

A corrector runs `n_steps` of Langevin dynamics targeting p_t:
    x <- x + step * s(x, t) + sqrt(2 step) z
    correct(x, t, generator) -> (x, x_mean)
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .utils import batch_broadcast, check_choice, randn_like

Tensor = torch.Tensor

STEP_SIZE_RULES = ("batch", "per_example")


class Corrector:
    def __init__(self, sde, score_fn: Callable, snr: float, n_steps: int):
        self.sde, self.score_fn, self.snr, self.n_steps = sde, score_fn, float(snr), int(n_steps)

    def step_size(self, x: Tensor, t: Tensor, score: Tensor, noise: Tensor) -> Tensor:
        raise NotImplementedError

    def correct(self, x: Tensor, t: Tensor, generator: Optional[torch.Generator] = None):
        x_mean = x
        for _ in range(self.n_steps):
            score = self.score_fn(x, t)
            noise = randn_like(x, generator)
            step = batch_broadcast(self.step_size(x, t, score, noise), x)
            x_mean = x + step * score
            x = x_mean + torch.sqrt(2.0 * step) * noise
        return x, x_mean


def _norms(v: Tensor) -> Tensor:
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=-1)


class LangevinCorrector(Corrector):
    """Langevin corrector with the signal-to-noise step rule (Song et al. 2021, Alg. 4).

    step = 2 alpha_i (snr ||z|| / ||s||)^2, alpha_i = 1 - beta_i for VP (1 for VE).

    Args:
      step_size_rule: "batch" (official): the norms are averaged over the batch, so one
        example's step depends on the others in its batch. "per_example": each example uses
        its own norms, so results do not depend on batch composition; the ratio ||z|| / ||s|| of
        a single example is only a stable estimate of the typical noise-to-score scale in high
        dimension (images), so use it there, not for 2-D data.
    """

    def __init__(self, sde, score_fn, snr: float = 0.16, n_steps: int = 1, step_size_rule: str = "batch"):
        super().__init__(sde, score_fn, snr, n_steps)
        check_choice("step_size_rule", step_size_rule, STEP_SIZE_RULES)
        self.per_example = step_size_rule == "per_example"

    def step_size(self, x, t, score, noise):
        score_norm, noise_norm = _norms(score), _norms(noise)
        if not self.per_example:
            score_norm, noise_norm = score_norm.mean().expand_as(score_norm), noise_norm.mean().expand_as(noise_norm)
        alpha = self.sde.langevin_scale(t).to(x.dtype)
        return 2.0 * alpha * (self.snr * noise_norm / score_norm).square()


class AnnealedLangevinCorrector(Corrector):
    """Annealed Langevin dynamics step rule (Song & Ermon 2019; Song et al. 2021, Alg. 5).

    step = 2 alpha_i (snr std(t))^2: proportional to the noise level, as in NCSN.
    """

    def __init__(self, sde, score_fn, snr: float = 0.16, n_steps: int = 1):
        super().__init__(sde, score_fn, snr, n_steps)

    def step_size(self, x, t, score, noise):
        std = self.sde.marginal_std(t)
        return (2.0 * self.sde.langevin_scale(t) * (self.snr * std).square()).to(x.dtype)


class NoneCorrector(Corrector):
    """No corrector: costs no score evaluation."""

    def __init__(self, sde, score_fn, snr: float = 0.0, n_steps: int = 0):
        super().__init__(sde, score_fn, snr, 0)

    def correct(self, x, t, generator=None):
        return x, x


CORRECTORS = {"langevin": LangevinCorrector, "ald": AnnealedLangevinCorrector, "none": NoneCorrector}
