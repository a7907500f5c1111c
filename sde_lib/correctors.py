"""Correctors of the predictor-corrector sampler: Langevin MCMC at a fixed time (Song et al. 2021, Alg. 4-5).

A corrector runs `n_steps` of overdamped Langevin dynamics targeting p_t,
    correct(x, t, generator) -> (x, x_mean),
with one of two updates of the same cost (one score evaluation and one fresh draw z_k per step):
  * "euler_maruyama" (the official one, the unadjusted Langevin algorithm):
        x <- x + step s(x, t) + sqrt(2 step) z_k.
    Its stationary law is biased at O(step): for a Gaussian target of variance v it is
    v / (1 - step / (2 v)), too spread.
  * "leimkuhler_matthews" (default; Leimkuhler & Matthews 2013, eq. 8, the high-friction limit of
    BAOAB): x <- x + step s(x, t) + sqrt(step / 2) (z_{k-1} + z_k), each draw used by two
    consecutive steps. Its stationary variance for a Gaussian target is v exactly (the update is
    x' = a x + b (z_{k-1} + z_k) with a = 1 - step / v, b^2 = step / 2, whose stationary
    variance b^2 (1 + (1 + a) / (1 - a)) = 2 b^2 / (1 - a) is v), and its bias in general is
    O(step^2). With exact scores on the 3x8x8 mixture (VP, reverse diffusion + Langevin, N = 1000)
    it takes the error of the components' spreads from +6.9 to +4.1 nats (docs/sampling.md).
The carried draw z_{k-1} lives in the corrector object, which a sampler builds once per run: its
first step draws z_{-1} fresh, and the draw carries over from one time of the grid to the next.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .utils import batch_broadcast, check_choice, randn_like

Tensor = torch.Tensor

STEP_SIZE_RULES = ("batch", "per_example")
UPDATES = ("leimkuhler_matthews", "euler_maruyama")


class Corrector:
    """Base class: `n_steps` Langevin updates per call with the step size of `step_size`.

    Args:
      update: "leimkuhler_matthews" (default) or "euler_maruyama" (official); see module docstring.
    """

    def __init__(self, sde, score_fn: Callable, snr: float, n_steps: int, update: str = "leimkuhler_matthews"):
        self.sde, self.score_fn, self.snr, self.n_steps = sde, score_fn, float(snr), int(n_steps)
        check_choice("update", update, UPDATES)
        self.update = update
        self._carried_noise: Optional[Tensor] = None  # z_{k-1} of the Leimkuhler-Matthews update

    def step_size(self, x: Tensor, t: Tensor, score: Tensor, noise: Tensor) -> Tensor:
        raise NotImplementedError

    def correct(self, x: Tensor, t: Tensor, generator: Optional[torch.Generator] = None):
        x_mean = x
        for _ in range(self.n_steps):
            score = self.score_fn(x, t)
            noise = randn_like(x, generator)
            step = batch_broadcast(self.step_size(x, t, score, noise), x)
            x_mean = x + step * score
            if self.update == "euler_maruyama":
                x = x_mean + torch.sqrt(2.0 * step) * noise
                continue
            carried = self._carried_noise
            if carried is None or carried.shape != x.shape:
                carried = randn_like(x, generator)
            x = x_mean + torch.sqrt(0.5 * step) * (carried + noise)
            self._carried_noise = noise
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

    def __init__(self, sde, score_fn, snr: float = 0.16, n_steps: int = 1, step_size_rule: str = "batch",
                 update: str = "leimkuhler_matthews"):
        super().__init__(sde, score_fn, snr, n_steps, update)
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

    def __init__(self, sde, score_fn, snr: float = 0.16, n_steps: int = 1, update: str = "leimkuhler_matthews"):
        super().__init__(sde, score_fn, snr, n_steps, update)

    def step_size(self, x, t, score, noise):
        std = self.sde.marginal_std(t)
        return (2.0 * self.sde.langevin_scale(t) * (self.snr * std).square()).to(x.dtype)


class NoneCorrector(Corrector):
    """No corrector: costs no score evaluation."""

    def __init__(self, sde, score_fn, snr: float = 0.0, n_steps: int = 0, update: str = "leimkuhler_matthews"):
        super().__init__(sde, score_fn, snr, 0, update)

    def correct(self, x, t, generator=None):
        return x, x


CORRECTORS = {"langevin": LangevinCorrector, "ald": AnnealedLangevinCorrector, "none": NoneCorrector}
