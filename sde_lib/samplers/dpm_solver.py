"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling", Alg. 2).

A multistep exponential integrator of the probability-flow ODE in lambda = log(alpha / std),
written for the data prediction x0 = (x + std^2 s) / alpha (Tweedie), so it works for any kernel
N(alpha(t) x_0, std(t)^2 I) here: VP, sub-VP, VE.
"""
from __future__ import annotations

import dataclasses

import torch

from ..grids import steps
from ..predictors import reverse_sde_final_step
from ..utils import batch_broadcast
from .multistep import MultistepSolver

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class DPMSolverPP(MultistepSolver):
    """DPM-Solver++(3M) (order=3), (2M) (order=2) or DPM-Solver++(1) = DDIM (order=1) over N score
    evaluations.

    With lambda_i = log(alpha_i / std_i), h_i = lambda_i - lambda_{i-1} and D the data prediction,
        x_i = (std_i / std_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i,
        D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},   r_i = h_{i-1} / h_i
    (first step, and order=1: D_i = x0_{i-1}). order=3 (from the third step on; the second is the
    2M step): the data prediction along lambda is the quadratic through the last three x0 and the
    exact solution x_i = (std_i / std_{i-1}) x_{i-1} + std_i int e^lambda x0(lambda) dlambda
    (DPM-Solver++ eq. 9) is integrated exactly for it (`_third_order_step`). N - 1 steps over the
    N times of `schedule` from T to eps, then the final step to zero noise (`denoise`, see
    `predictors.reverse_sde_final_step`); with denoise=False, N steps ending at eps.
    schedule="optimized": the grid that minimises this solver's error on Gaussian data of every
    scale (`grids.optimized_time_points`; found once per SDE, eps, N and options, a few seconds);
    grid_max_scale: the largest data standard deviation that grid is fitted for (its `max_scale`;
    only with schedule="optimized").
    """

    order: int = 2
    schedule: str = "logsnr"
    grid_max_scale: float = 1.0

    def validate(self) -> None:
        self.validate_grid_options()

    def run(self, sde, score_fn, x: Tensor, *, eps, denoise, N, generator, progress):
        grid = self.grid(sde, eps, N, denoise, x.device)
        return self.solve(sde, score_fn, x, grid, denoise, generator, progress)

    def solve(self, sde, score_fn, x: Tensor, grid: Tensor, denoise, generator, progress) -> Tensor:
        """The steps over `grid` (float64 times from T to eps), then the final step (`denoise`)."""
        x0_prev, h_prev = None, None
        x0_prev2, h_prev2 = None, None
        for t, t_next in steps(grid, x, progress, "DPM-Solver++"):
            alpha, std = sde.marginal_coeffs(t)
            alpha_next, std_next = sde.marginal_coeffs(t_next)
            h = (torch.log(alpha_next / std_next) - torch.log(alpha / std))
            x0 = (x + batch_broadcast(std.square(), x) * score_fn(x, t)) / batch_broadcast(alpha, x)
            if self.order == 3 and x0_prev2 is not None:
                x = _third_order_step(x, std_next / std, alpha_next, h, (x0, x0_prev, x0_prev2), (h_prev, h_prev2))
            else:
                if self.order >= 2 and x0_prev is not None:
                    r = h_prev / h
                    d = batch_broadcast(1 + 0.5 / r, x) * x0 - batch_broadcast(0.5 / r, x) * x0_prev
                else:
                    d = x0
                x = batch_broadcast(std_next / std, x) * x - batch_broadcast(alpha_next * torch.expm1(-h), x) * d
            x0_prev2, h_prev2 = x0_prev, h_prev
            x0_prev, h_prev = x0, h
        if denoise:
            t = grid[-1].to(x.dtype).expand(x.shape[0])
            x = reverse_sde_final_step(sde, score_fn, x, t, torch.zeros_like(t), denoise, generator)
        return x


def _third_order_step(x: Tensor, std_ratio: Tensor, alpha_next: Tensor, h: Tensor, x0s, hs) -> Tensor:
    """One DPM-Solver++(3M) step (DPM-Solver++ eq. 9 with a quadratic data prediction).

    x0s = (m0, m1, m2): the data predictions at lambda_0 > lambda_1 > lambda_2 (newest first),
    hs = (h0, h1) = (lambda_0 - lambda_1, lambda_1 - lambda_2), h = lambda_next - lambda_0, all (B,).
    With the Newton form m(lambda_0 + u) = m0 + u d1 + u (u + h0) d2 and I_k = int_0^h e^(u - h) u^k du,
        x_next = std_ratio x + alpha_next (I_0 m0 + I_1 d1 + (I_2 + h0 I_1) d2),
        I_0 = -expm1(-h),  I_1 = h + expm1(-h),  I_2 = h^2 - 2 I_1.
    """
    m0, m1, m2 = x0s
    h0, h1 = hs
    d1_new = (m0 - m1) / batch_broadcast(h0, x)
    d1_old = (m1 - m2) / batch_broadcast(h1, x)
    d2 = (d1_new - d1_old) / batch_broadcast(h0 + h1, x)
    phi = torch.expm1(-h)
    I0, I1 = -phi, h + phi
    I2 = h.square() - 2 * I1
    return (
        batch_broadcast(std_ratio, x) * x
        + batch_broadcast(alpha_next * I0, x) * m0
        + batch_broadcast(alpha_next * I1, x) * d1_new
        + batch_broadcast(alpha_next * (I2 + h0 * I1), x) * d2
    )
