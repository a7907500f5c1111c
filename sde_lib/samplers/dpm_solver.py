"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling", Alg. 2).

A multistep exponential integrator of the probability-flow ODE in lambda = log(alpha / std),
written for the data prediction x0 = (x + std^2 s) / alpha (Tweedie), so it works for any kernel
N(alpha(t) x_0, std(t)^2 I) here: VP, sub-VP, VE.
"""
from __future__ import annotations

import dataclasses

import torch

from ..grids import SCHEDULES, steps, time_points
from ..predictors import reverse_sde_final_step
from ..utils import batch_broadcast, check_choice
from .base import SamplingMethod

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class DPMSolverPP(SamplingMethod):
    """DPM-Solver++(2M) (order=2) or DPM-Solver++(1) = DDIM (order=1) over N score evaluations.

    With lambda_i = log(alpha_i / std_i), h_i = lambda_i - lambda_{i-1} and D the data prediction,
        x_i = (std_i / std_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i,
        D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},   r_i = h_{i-1} / h_i
    (first step, and order=1: D_i = x0_{i-1}). N - 1 steps over the N times of `schedule` from T to
    eps, then the final step to zero noise (`denoise`, see `predictors.reverse_sde_final_step`);
    with denoise=False, N steps ending at eps.
    """

    order: int = 2
    schedule: str = "logsnr"

    def validate(self) -> None:
        if isinstance(self.order, bool) or self.order not in (1, 2):
            raise ValueError(f"order={self.order!r} is not one of [1, 2]")
        check_choice("schedule", self.schedule, SCHEDULES)

    def run(self, sde, score_fn, x: Tensor, *, eps, denoise, N, generator, progress):
        grid = time_points(sde, eps, N + (denoise is False), self.schedule, x.device)
        x0_prev, h_prev = None, None
        for t, t_next in steps(grid, x, progress, "DPM-Solver++"):
            alpha, std = sde.marginal_coeffs(t)
            alpha_next, std_next = sde.marginal_coeffs(t_next)
            h = (torch.log(alpha_next / std_next) - torch.log(alpha / std))
            x0 = (x + batch_broadcast(std.square(), x) * score_fn(x, t)) / batch_broadcast(alpha, x)
            if self.order == 2 and x0_prev is not None:
                r = h_prev / h
                d = batch_broadcast(1 + 0.5 / r, x) * x0 - batch_broadcast(0.5 / r, x) * x0_prev
            else:
                d = x0
            x = batch_broadcast(std_next / std, x) * x - batch_broadcast(alpha_next * torch.expm1(-h), x) * d
            x0_prev, h_prev = x0, h
        if denoise:
            t = grid[-1].to(x.dtype).expand(x.shape[0])
            x = reverse_sde_final_step(sde, score_fn, x, t, torch.zeros_like(t), denoise, generator)
        return x
