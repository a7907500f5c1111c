"""Predictors of the predictor-corrector sampler (Song et al. 2021, Sec. 4.2 and App. E/G).

A predictor takes one step of the reverse-time SDE from time t to t_next < t:
    step(x, t, t_next, generator) -> (x, x_mean)
where x_mean is the step without its noise. Predictors are built once per sampling run.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch

from .utils import batch_broadcast, randn_like

Tensor = torch.Tensor


class Predictor:
    """Base class: holds the SDE, its reverse and the score function.

    `chain_based` predictors step down the SDE's discrete chain (level i(t) to i - 1) and ignore
    `t_next`; the others integrate the reverse SDE from t to t_next.
    """

    chain_based = False

    def __init__(self, sde, score_fn: Callable, probability_flow: bool = False):
        self.sde = sde
        self.score_fn = score_fn
        self.rsde = sde.reverse(score_fn, probability_flow)

    def step(self, x: Tensor, t: Tensor, t_next: Tensor, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        raise NotImplementedError

    def final_step(self, x: Tensor, t: Tensor, t_next: Tensor, denoise, generator=None) -> Tensor:
        """The last step (to t = 0): noisy (denoise=False), its noise-free mean ("mean", the
        official denoising), or a step of the probability-flow ODE ("pf")."""
        if denoise == "pf":
            return self.probability_flow_step(x, t, t_next)
        x_next, x_mean = self.step(x, t, t_next, generator)
        return x_mean if denoise == "mean" else x_next

    def probability_flow_step(self, x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        """Euler step of the probability-flow ODE (eq. 13) from t to t_next."""
        return reverse_sde_final_step(self.sde, self.score_fn, x, t, t_next, "pf")


class EulerMaruyamaPredictor(Predictor):
    """x_next = x + [f - g^2 s] dt + g sqrt(|dt|) z with dt = t_next - t < 0 (eq. 6 discretised)."""

    def step(self, x, t, t_next, generator=None):
        dt = batch_broadcast(t_next - t, x)
        drift, diffusion = self.rsde.sde(x, t)
        x_mean = x + drift * dt
        return x_mean + batch_broadcast(diffusion, x) * torch.sqrt(-dt) * randn_like(x, generator), x_mean


class ReverseDiffusionPredictor(Predictor):
    """Reverse of the chain step into level i(t): x_{i-1} = x_i - [f_i - G_i^2 s] + G_i z (eq. 46)."""

    chain_based = True

    def step(self, x, t, t_next, generator=None):
        f, G = self.rsde.discretize(x, t)
        x_mean = x - f
        return x_mean + batch_broadcast(G, x) * randn_like(x, generator), x_mean

    def probability_flow_step(self, x, t, t_next):
        """The chain step of the probability-flow ODE: x - [f_i - 1/2 G_i^2 s]."""
        f, _ = self.sde.reverse(self.score_fn, probability_flow=True).discretize(x, t)
        return x - f


class AncestralSamplingPredictor(Predictor):
    """Ancestral sampling down the SDE's chain (Ho et al. 2020 Alg. 2; Song et al. 2021 eq. 47).

    VP: x_{i-1} = (x_i + beta_i s) / sqrt(1 - beta_i) + sqrt(beta_i) z, DDPM's update with
    s = -eps / sqrt(1 - alpha_bar_i). The mean and noise come from `SDE.ancestral_step`.
    """

    chain_based = True

    def __init__(self, sde, score_fn, probability_flow=False):
        if probability_flow:
            raise ValueError("the ancestral predictor has no probability-flow form; use 'reverse_diffusion' or method='ddim'")
        super().__init__(sde, score_fn)

    def step(self, x, t, t_next, generator=None):
        x_mean, std = self.sde.ancestral_step(x, t, self.score_fn(x, t))
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
    """A last step from t to t_next (= 0) of a continuous-time sampler.

    denoise="pf": Euler step of the probability-flow ODE, x + [f - 1/2 g^2 s] dt. For a direction
      of data variance v it maps the noise std(t)^2 away to second order in std^2 / v (about
      x + 1/2 std^2 s, half of Tweedie's step), so it neither adds noise nor over-sharpens.
    denoise="mean": the reverse-SDE Euler step without its noise, x + [f - g^2 s] dt, about
      Tweedie's E[x_0 | x_t]: the official denoising, which shrinks that variance to
      v^2 / (v + std^2).
    denoise=False: the full Euler-Maruyama step, noise included.
    """
    dt = batch_broadcast(t_next - t, x)
    if denoise == "pf":
        drift, _ = sde.reverse(score_fn, probability_flow=True).sde(x, t)
        return x + drift * dt
    drift, diffusion = sde.reverse(score_fn).sde(x, t)
    x_mean = x + drift * dt
    if denoise == "mean":
        return x_mean
    return x_mean + batch_broadcast(diffusion, x) * torch.sqrt(-dt) * randn_like(x, generator)


PREDICTORS = {
    "euler_maruyama": EulerMaruyamaPredictor,
    "reverse_diffusion": ReverseDiffusionPredictor,
    "ancestral_sampling": AncestralSamplingPredictor,
    "none": NonePredictor,
}
