"""Predictors of the predictor-corrector sampler (Song et al. 2021, Sec. 4.2 and App. E/G).

A predictor takes one step of the reverse-time SDE from time t to t_next < t:
    step(x, t, t_next, generator) -> (x, x_mean)
where x_mean is the step without its noise. Predictors are built once per sampling run.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from .utils import batch_broadcast, randn_like

Tensor = torch.Tensor


class Predictor:
    """Base class: holds the SDE, its reverse and the score function.

    `chain_based` predictors step down the SDE's discrete chain (level i(t) to i - 1; or, with
    levels=False, the kernel's step from t to t_next); the others integrate the reverse SDE from t
    to t_next.
    """

    chain_based = False

    def __init__(self, sde, score_fn: Callable, probability_flow: bool = False, levels: bool = True):
        self.sde = sde
        self.score_fn = score_fn
        self.rsde = sde.reverse(score_fn, probability_flow)
        # Chain-based predictors: step down the SDE's N levels (uniform grid), or, with
        # levels=False, along the kernel between consecutive times of any grid.
        self.levels = levels

    def step(self, x: Tensor, t: Tensor, t_next: Tensor, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        raise NotImplementedError

    def final_step(self, x: Tensor, t: Tensor, t_next: Tensor, denoise, generator=None) -> Tensor:
        """The last step (to t = 0): noisy (denoise=False), its noise-free mean ("mean", the
        official denoising), or a noise-free step along the probability flow ("pf")."""
        if denoise == "pf":
            return self.probability_flow_step(x, t, t_next)
        x_next, x_mean = self.step(x, t, t_next, generator)
        return x_mean if denoise == "mean" else x_next

    def probability_flow_step(self, x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        """Noise-free last step along the probability flow (see `reverse_sde_final_step`)."""
        return reverse_sde_final_step(self.sde, self.score_fn, x, t, t_next, "pf")


class EulerMaruyamaPredictor(Predictor):
    """x_next = x + [f - g^2 s] dt + g sqrt(|dt|) z with dt = t_next - t < 0 (eq. 6 discretised)."""

    def step(self, x, t, t_next, generator=None):
        dt = batch_broadcast(t_next - t, x)
        drift, diffusion = self.rsde.sde(x, t)
        x_mean = x + drift * dt
        return x_mean + batch_broadcast(diffusion, x) * torch.sqrt(-dt) * randn_like(x, generator), x_mean

    def final_step(self, x, t, t_next, denoise, generator=None):
        return reverse_sde_final_step(self.sde, self.score_fn, x, t, t_next, denoise, generator)


class ReverseDiffusionPredictor(Predictor):
    """Reverse of the chain step into level i(t): x_{i-1} = x_i - [f_i - G_i^2 s] + G_i z (eq. 46)."""

    chain_based = True

    def step(self, x, t, t_next, generator=None):
        f, G = self.rsde.discretize(x, t, t_next=None if self.levels else t_next)
        x_mean = x - f
        return x_mean + batch_broadcast(G, x) * randn_like(x, generator), x_mean

    def probability_flow_step(self, x, t, t_next):
        """The chain step of the probability-flow ODE: x - [f_i - 1/2 G_i^2 s]."""
        pf = self.sde.reverse(self.score_fn, probability_flow=True)
        f, _ = pf.discretize(x, t, t_next=None if self.levels else t_next)
        return x - f


class AncestralSamplingPredictor(Predictor):
    """Ancestral sampling down the SDE's chain (Ho et al. 2020 Alg. 2; Song et al. 2021 eq. 47).

    VP: x_{i-1} = (x_i + beta_i s) / sqrt(1 - beta_i) + sqrt(beta_i) z, DDPM's update with
    s = -eps / sqrt(1 - alpha_bar_i). The mean and noise come from `SDE.ancestral_step`.
    """

    chain_based = True

    def __init__(self, sde, score_fn, probability_flow=False, levels=True, variance=None):
        if probability_flow:
            raise ValueError("the ancestral predictor has no probability-flow form; use 'reverse_diffusion' or method='ddim'")
        super().__init__(sde, score_fn, levels=levels)
        self.variance = variance  # None: the SDE's `ancestral_variance`

    def step(self, x, t, t_next, generator=None):
        x_mean, std = self.sde.ancestral_step(x, t, self.score_fn(x, t), None if self.levels else t_next,
                                              variance=self.variance)
        return x_mean + batch_broadcast(std, x) * randn_like(x, generator), x_mean

    def probability_flow_step(self, x, t, t_next):
        return ReverseDiffusionPredictor.probability_flow_step(self, x, t, t_next)


class NonePredictor(Predictor):
    """No predictor step (corrector-only sampling, e.g. annealed Langevin dynamics)."""

    def step(self, x, t, t_next, generator=None):
        return x, x

    def final_step(self, x, t, t_next, denoise, generator=None):
        return x


def reverse_sde_final_step(sde, score_fn, x: Tensor, t: Tensor, t_next: Tensor, denoise,
                           generator: Optional[torch.Generator] = None) -> Tensor:
    """The last step of a continuous-time sampler, from t = eps to t_next = 0.

    With (alpha, std) the kernel at t and s the score there:
      * denoise="pf": one Euler step of the probability-flow ODE written for y = x / alpha in the
        variable std^2 / alpha^2, from std(eps) to zero noise: x_0 = (x + 1/2 std^2 s) / alpha. For
        a direction of data variance v it scales the deviation by 1 - r / 2, r = std^2 / (v alpha^2
        + std^2), where the exact flow scales it by sqrt(1 - r): right to second order in r. It
        removes all the noise, for VE the sigma_min blur of the t = 0 kernel too.
      * denoise="mean": Tweedie's E[x_0 | x_eps] = (x + std^2 s) / alpha, the official denoising;
        it scales that deviation by 1 - r, leaving variance v^2 / (v + std^2 / alpha^2).
      * denoise=False: an Euler-Maruyama step of the reverse SDE to t = 0, noise included.
    """
    if denoise in ("pf", "mean"):
        alpha, std = sde.marginal_coeffs(t)
        weight = (0.5 if denoise == "pf" else 1.0) * std.square()
        return (x + batch_broadcast(weight, x) * score_fn(x, t)) / batch_broadcast(alpha, x)
    dt = batch_broadcast(t_next - t, x)
    drift, diffusion = sde.reverse(score_fn).sde(x, t)
    return x + drift * dt + batch_broadcast(diffusion, x) * torch.sqrt(-dt) * randn_like(x, generator)


PREDICTORS = {
    "euler_maruyama": EulerMaruyamaPredictor,
    "reverse_diffusion": ReverseDiffusionPredictor,
    "ancestral_sampling": AncestralSamplingPredictor,
    "none": NonePredictor,
}
