"""EDM's sampler (Karras et al. 2022, Algorithms 1 and 2), written for any SDE of this library.

Every kernel N(alpha x_0, std^2 I) is the variance-exploding one in the scaled variable
x^ = x / alpha with noise level sigma = std / alpha (Karras et al. 2022, eq. 4 with s = alpha), and
the denoiser is Tweedie's D(x^; sigma) = (x + std^2 s(x, t)) / alpha at the time t(sigma) where
the SDE's log-SNR is -ln sigma. Algorithm 2 runs on x^ unchanged.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from ..predictors import reverse_sde_final_step
from ..progress import progress_bar
from ..utils import batch_broadcast, randn_like
from .base import SamplingMethod

Tensor = torch.Tensor


def _number(name, value, low=0.0, high=math.inf, low_open=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (low < value if low_open else low <= value) or not value <= high:
        bound = f"{'>' if low_open else '>='} {low}" + ("" if high == math.inf else f" and <= {high}")
        raise ValueError(f"{name}={value!r}: expected a number {bound}")


@dataclasses.dataclass(frozen=True)
class EDMSampler(SamplingMethod):
    """Heun's second-order method on EDM's time grid with stochastic churn (Karras et al. 2022,
    Alg. 2; S_churn = 0 is the deterministic Alg. 1).

    Grid (eq. 5): sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho, i < N, from sigma_max = sigma(T) to sigma_min = sigma(eps), then
    sigma_N = 0. Step i: gamma_i = min(S_churn / N, sqrt 2 - 1) if S_tmin <= sigma_i <= S_tmax
    else 0; sigma^_i = (1 + gamma_i) sigma_i, capped at sigma(T) (the SDE has no larger level);
    x^_i = x_i + sqrt(sigma^_i^2 - sigma_i^2) S_noise n_i; an Euler step to sigma_{i+1} with
    d = (x^ - D(x^; sigma^)) / sigma^ and, unless sigma_{i+1} = 0, Heun's correction. 2N - 1
    score evaluations.

    The last step, to sigma = 0, is Euler's, which lands on D: Tweedie's mean, so the method's
    final step is denoise="mean" (Alg. 2 as written). denoise="pf" replaces it by the
    probability-flow step of `predictors.reverse_sde_final_step` from eps; denoise=False runs N
    steps of the grid sigma_0 .. sigma_N = sigma(eps) (N + 1 levels) and stops there.

    Options: S_churn, S_tmin, S_tmax, S_noise (Table 5's CIFAR-10 VP setting: 30, 0.01, 1,
    1.007), rho (7). S_tmin and S_tmax are noise levels sigma, not times; S_tmax None is no bound.
    """

    default_denoise = "mean"

    S_churn: float = 0.0
    S_tmin: float = 0.0
    S_tmax: Optional[float] = None
    S_noise: float = 1.0
    rho: float = 7.0

    def validate(self) -> None:
        _number("S_churn", self.S_churn)
        _number("S_tmin", self.S_tmin)
        if self.S_tmax is not None:
            _number("S_tmax", self.S_tmax)
        _number("S_noise", self.S_noise)
        _number("rho", self.rho, low_open=True)

    def sigmas(self, sde, eps: float, n: int) -> Tensor:
        """The n noise levels of eq. 5 from sigma(T) to sigma(eps), float64 (n,)."""
        ends = torch.tensor([sde.T, eps], dtype=torch.float64)
        alpha, std = sde.marginal_coeffs(ends)
        s_max, s_min = (std / alpha).tolist()
        if n == 1:
            return torch.tensor([s_max], dtype=torch.float64)
        i = torch.arange(n, dtype=torch.float64)
        a, b = s_max ** (1 / self.rho), s_min ** (1 / self.rho)
        return (a + i / (n - 1) * (b - a)) ** self.rho

    def run(self, sde, score_fn, x: Tensor, *, eps, denoise, N, generator, progress):
        B = x.shape[0]
        levels = self.sigmas(sde, eps, N + (denoise is False))
        s_max = levels[0].item()
        pinned = {levels[-1].item(): eps, levels[0].item(): sde.T}  # N = 1: one level, at T

        def time_of(sigma: float) -> Tensor:  # t with log-SNR -ln sigma (grid ends exactly T, eps)
            t = pinned.get(sigma)
            if t is None:
                t = sde.time_from_log_snr(torch.tensor([-math.log(sigma)], dtype=torch.float64)).item()
            return torch.full((B,), t, dtype=x.dtype, device=x.device)

        def denoiser(x_hat: Tensor, sigma: float) -> Tensor:  # D(x^; sigma), Tweedie
            t = time_of(sigma)
            alpha, std = (batch_broadcast(c, x_hat) for c in sde.marginal_coeffs(t))
            x_t = alpha * x_hat
            return (x_t + std.square() * score_fn(x_t, t)) / alpha

        alpha_T = sde.marginal_coeffs(torch.tensor([sde.T], dtype=torch.float64))[0].item()
        x = x / alpha_T  # x^_0 ~ N(0, ~sigma_max^2 I)
        grid = levels.tolist() + ([0.0] if denoise == "mean" else [])
        with progress_bar(progress, len(grid) - 1, "EDM") as bar:
            for i in range(len(grid) - 1):
                t_cur, t_next = grid[i], grid[i + 1]
                noise = randn_like(x, generator) * self.S_noise
                churn = self.S_tmin <= t_cur <= (math.inf if self.S_tmax is None else self.S_tmax)
                gamma = min(self.S_churn / N, math.sqrt(2) - 1) if churn else 0.0
                t_hat = min(t_cur + gamma * t_cur, s_max)
                x_hat = x + math.sqrt(max(t_hat**2 - t_cur**2, 0.0)) * noise
                # Euler step.
                d = (x_hat - denoiser(x_hat, t_hat)) / t_hat
                x = x_hat + (t_next - t_hat) * d
                # Apply 2nd order correction.
                if t_next != 0:
                    d_next = (x - denoiser(x, t_next)) / t_next
                    x = x_hat + (t_next - t_hat) * (0.5 * d + 0.5 * d_next)
                bar.update(1)
        if denoise == "mean":
            return x
        t_end = torch.full((B,), eps, dtype=x.dtype, device=x.device)
        x = x * sde.marginal_coeffs(t_end)[0].to(x.dtype)[0]
        if denoise == "pf":
            x = reverse_sde_final_step(sde, score_fn, x, t_end, torch.zeros_like(t_end), denoise, generator)
        return x
