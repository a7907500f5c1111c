"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models", Alg. 2/3): a multistep predictor (UniP) of the probability-flow ODE whose
result is refined by a corrector (UniC) that reuses the next step's score evaluation, so the
corrector costs no evaluation. Written for the data prediction x0 = (x + std^2 s) / alpha, as
`dpm_solver`, for any kernel N(alpha(t) x_0, std(t)^2 I).
"""
from __future__ import annotations

import dataclasses
import math

import torch

from ..grids import steps
from ..predictors import reverse_sde_final_step
from ..utils import batch_broadcast, check_choice
from .multistep import MultistepSolver

Tensor = torch.Tensor

VARIANTS = ("bh1", "bh2")


@dataclasses.dataclass(frozen=True)
class UniPC(MultistepSolver):
    """UniPC with a predictor of order `order` (1-3; UniC raises it by one) over N score evaluations.

    With lambda = log(alpha / std), a step from t_s to t (h = lambda_t - lambda_s > 0, z = -h) and
    the data predictions m_0 at t_s, m_k at the earlier times (r_k = (lambda_k - lambda_s) / h < 0),
        x_base = (std_t / std_s) x_s - alpha_t expm1(z) m_0                    (the DDIM step)
        UniP:  x_t = x_base - alpha_t B(z) sum_k a_k (m_k - m_0) / r_k,         k = 1..p-1
        UniC:  x_t^c = x_base - alpha_t B(z) (sum_k c_k (m_k - m_0) / r_k + c_p (m_t - m_0)),
    where m_t is the data prediction at the predicted x_t (it is also the next step's m_0), and
    a, c solve the order conditions sum_k r_k^(i-1) rho_k = i! phi_(i+1)(z) z / B(z), i = 1..p
    (paper eq. 11; r_p = 1 for the corrector; a = 1/2 for p = 2, c = 1/2 for p = 1, as in the
    paper's Alg. 3). phi_k are the exponential integrator's functions: phi_1(z) = expm1(z) / z,
    phi_(k+1)(z) = (phi_k(z) - 1 / k!) / z. B(z) = z ("bh1") or expm1(z) ("bh2", paper sec. 3.3).

    The first steps use the orders the history allows. N - 1 steps over the N times of `schedule`
    from T to eps, the corrector after each but the last (it would need one more evaluation), then
    the final step to zero noise (`denoise`, see `predictors.reverse_sde_final_step`); with
    denoise=False, N steps ending at eps. schedule="optimized": see `grids.optimized_time_points`;
    grid_max_scale: its `max_scale` (only with schedule="optimized").
    """

    order: int = 3
    variant: str = "bh2"
    corrector: bool = True
    schedule: str = "logsnr"
    grid_max_scale: float = 1.0

    def validate(self) -> None:
        self.validate_grid_options()
        check_choice("variant", self.variant, VARIANTS)
        if not isinstance(self.corrector, bool):
            raise ValueError(f"corrector={self.corrector!r}: expected True or False")

    def run(self, sde, score_fn, x: Tensor, *, eps, denoise, N, generator, progress):
        grid = self.grid(sde, eps, N, denoise, x.device)
        return self.solve(sde, score_fn, x, grid, denoise, generator, progress)

    def solve(self, sde, score_fn, x: Tensor, grid: Tensor, denoise, generator, progress) -> Tensor:
        """The steps over `grid` (float64 times from T to eps), then the final step (`denoise`)."""
        lam = sde.log_snr(grid)
        n_steps = len(grid) - 1

        def data_prediction(x, t):
            alpha, std = sde.marginal_coeffs(t)
            return (x + batch_broadcast(std.square(), x) * score_fn(x, t)) / batch_broadcast(alpha, x)

        history = []  # (lambda, x0) of the last `order` evaluations, newest last
        for i, (t, t_next) in enumerate(steps(grid, x, progress, "UniPC")):
            if i == 0:
                history.append((lam[0], data_prediction(x, t)))
            p = min(self.order, len(history))
            lam_0, m_0 = history[-1]
            h = lam[i + 1] - lam_0
            z = -h
            B = z if self.variant == "bh1" else torch.expm1(z)
            alpha, std = sde.marginal_coeffs(t)
            alpha_next, std_next = sde.marginal_coeffs(t_next)
            x_base = batch_broadcast(std_next / std, x) * x - batch_broadcast(alpha_next * torch.expm1(z), x) * m_0
            past = list(reversed(history[-p:-1]))  # newest first
            r = [(lam_k - lam_0) / h for lam_k, _ in past]
            diffs = [(m_k - m_0) / r_k for r_k, (_, m_k) in zip(r, past)]
            R, b = _order_conditions(r, z, B)
            x_pred = x_base
            if p > 1:
                a = torch.full((1,), 0.5, dtype=torch.float64) if p == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
                x_pred = x_base - batch_broadcast(alpha_next * B, x) * _combine(a, diffs)
            if i == n_steps - 1:
                x = x_pred
                break
            m_next = data_prediction(x_pred, t_next)
            if self.corrector:
                c = torch.full((1,), 0.5, dtype=torch.float64) if p == 1 else torch.linalg.solve(R, b)
                correction = _combine(c[:-1], diffs) + c[-1] * (m_next - m_0)
                x = x_base - batch_broadcast(alpha_next * B, x) * correction
            else:
                x = x_pred
            history = (history + [(lam[i + 1], m_next)])[-self.order:]
        if denoise:
            t = grid[-1].to(x.dtype).expand(x.shape[0])
            x = reverse_sde_final_step(sde, score_fn, x, t, torch.zeros_like(t), denoise, generator)
        return x


def _order_conditions(r, z: Tensor, B: Tensor):
    """(R, b) of UniPC's order conditions R rho = b (paper eq. 11), float64: with the past nodes
    r_1..r_(p-1) and r_p = 1, R[i, k] = r_k^i and b_i = (i+1)! phi_(i+2)(z) z / B(z), i = 0..p-1."""
    nodes = list(r) + [torch.ones_like(z)]
    R = torch.stack([torch.stack([r_k ** i for r_k in nodes]) for i in range(len(nodes))])
    phi = torch.expm1(z) / z  # phi_1
    b = []
    for i in range(1, len(nodes) + 1):
        phi = (phi - 1.0 / math.factorial(i)) / z  # phi_(i+1)
        b.append(math.factorial(i) * phi * z / B)
    return R, torch.stack(b)


def _combine(weights: Tensor, diffs):
    """sum_k weights[k] diffs[k] (0 without differences)."""
    return sum(w * d for w, d in zip(weights, diffs)) if diffs else 0.0
