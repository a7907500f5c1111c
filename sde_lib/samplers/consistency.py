"""Consistency sampling (Song et al. 2023, "Consistency Models", Alg. 1): one step, or several
with fresh noise in between, of a consistency model read as a score (`consistency.ConsistencyFunction.as_score`)."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..consistency import noise_level
from ..grids import SCHEDULES, time_points
from ..progress import progress_bar
from ..utils import batch_broadcast, check_choice, randn_like
from .base import SamplingMethod

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class ConsistencySampling(SamplingMethod):
    """Multistep consistency sampling over N score evaluations (N = 1: one step).

    With f(x, t) = (x + std^2 s) / alpha the model's trajectory end (exact for a consistency model
    given as `ConsistencyFunction.as_score()`), times tau_1 = T > ... > tau_N > eps (the first N of
    the N + 1 times of `schedule` from T to eps) and sigma = std / alpha:
        y = f(x_T, T);  for k = 2..N:  x = alpha_k (y + sqrt(sigma_k^2 - sigma_min^2) z),  y = f(x, tau_k)
    and y is returned. f already ends at sigma_min = sigma(eps), so there is no final step:
    `denoise` changes nothing.
    """

    schedule: str = "edm"

    default_denoise: ClassVar = False

    def validate(self) -> None:
        check_choice("schedule", self.schedule, SCHEDULES)

    def run(self, sde, score_fn, x: Tensor, *, eps, denoise, N, generator, progress):
        times = time_points(sde, eps, N + 1, self.schedule, x.device)[:N]
        sigma_min = noise_level(sde, torch.full((1,), eps, dtype=torch.float64, device=x.device))
        B = x.shape[0]
        y = x
        with progress_bar(progress, N, "consistency") as bar:
            for k in range(N):
                t = times[k].to(x.dtype).expand(B)
                alpha, std = sde.marginal_coeffs(t)
                if k > 0:
                    spread = torch.sqrt(noise_level(sde, t).square() - sigma_min.square())
                    x = batch_broadcast(alpha, y) * (y + batch_broadcast(spread, y) * randn_like(y, generator))
                y = (x + batch_broadcast(std.square(), x) * score_fn(x, t)) / batch_broadcast(alpha, x)
                bar.update(1)
        return y
