"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
Diffusion Models", Alg. 2): a student learns in one deterministic DDIM step what the teacher does
in two, so that N student steps do the work of 2N teacher steps.

The grids are nested: the teacher's 2N steps run over `grids.time_points(sde, eps, 2N + 1,
schedule)` from T to eps, the student's N steps over every other of those times, which is
`time_points(sde, eps, N + 1, schedule)` for "uniform" and "logsnr". A student of N steps samples
with `sample(..., method="ddim", N=N, denoise=False, schedule=schedule, eps=eps)`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from .grids import time_points
from .utils import batch_broadcast, check_choice, check_positive_int, randn_like

Tensor = torch.Tensor

DISTILL_SCHEDULES = ("uniform", "logsnr")  # the grids whose N + 1 times are every other of 2N + 1
DISTILL_WEIGHTINGS = ("truncated_snr", "snr_plus_one", "output")  # see `loss_weight`


def data_prediction(sde, score_fn, z: Tensor, t: Tensor) -> Tensor:
    """Tweedie's x0 = (z + std^2 s) / alpha at (B,) times t; shape of z."""
    alpha, std = sde.marginal_coeffs(t)
    return (z + batch_broadcast(std.square(), z) * score_fn(z, t)) / batch_broadcast(alpha, z)


def ddim_step(sde, z: Tensor, x0: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
    """Deterministic DDIM step (Song et al. 2021, eq. 12 with eta = 0) from t to t_next given x0:
    z_next = alpha_next x0 + (std_next / std) (z - alpha x0)."""
    alpha, std = sde.marginal_coeffs(t)
    alpha_next, std_next = sde.marginal_coeffs(t_next)
    return batch_broadcast(alpha_next, z) * x0 + batch_broadcast(std_next / std, z) * (z - batch_broadcast(alpha, z) * x0)


def two_step_target(sde, teacher_score, z: Tensor, t: Tensor, t_mid: Tensor, t_next: Tensor) -> Tensor:
    """The student's x0 target: two teacher DDIM steps t -> t_mid -> t_next land on z'', and
        x0~ = (z'' - (std_next / std) z) / (alpha_next - (std_next / std) alpha)
    is the x0 with which one DDIM step t -> t_next lands there too (Salimans & Ho, Alg. 2)."""
    z_mid = ddim_step(sde, z, data_prediction(sde, teacher_score, z, t), t, t_mid)
    z_next = ddim_step(sde, z_mid, data_prediction(sde, teacher_score, z_mid, t_mid), t_mid, t_next)
    alpha, std = sde.marginal_coeffs(t)
    alpha_next, std_next = sde.marginal_coeffs(t_next)
    ratio = std_next / std
    return (z_next - batch_broadcast(ratio, z) * z) / batch_broadcast(alpha_next - ratio * alpha, z)


def loss_weight(sde, t: Tensor, t_next: Tensor, weighting: str) -> Tensor:
    """(B,) weight of the student's squared x0 error for a step from t to t_next:
      * "truncated_snr": max(SNR(t), 1), SNR = alpha^2 / std^2 (Salimans & Ho, sec. 4);
      * "snr_plus_one":  SNR(t) + 1, the x0 error measured as the error of v = alpha eps - std x0
                         (Salimans & Ho, sec. 4; v-loss = (SNR + 1) x0-loss when alpha^2 + std^2 = 1);
      * "output":        (1 - (std_next / std)(alpha / alpha_next))^2 min(SNR(t_next), 1): the x0
                         error's move of the DDIM step's output z_next (eq. 12), in data units
                         z_next / alpha_next, times min(SNR(t_next), 1), which discounts the steps
                         that end at high noise, where a small error of z_next changes the final
                         sample little. Not from the paper: chosen on the 2-D mixture's students
                         (benchmarks/RESULTS.md).
    """
    check_choice("weighting", weighting, DISTILL_WEIGHTINGS)
    alpha, std = sde.marginal_coeffs(t)
    snr = (alpha / std).square()
    if weighting == "truncated_snr":
        return torch.clamp(snr, min=1.0)
    if weighting == "snr_plus_one":
        return snr + 1.0
    alpha_next, std_next = sde.marginal_coeffs(t_next)
    move = 1.0 - (std_next / std) * (alpha / alpha_next)
    return move.square() * torch.clamp((alpha_next / std_next).square(), max=1.0)


@dataclasses.dataclass(frozen=True)
class ProgressiveDistillationLoss:
    """Per-example loss (B,) of one distillation round to a student of `student_steps` steps.

    For data x: a student step i ~ U{0..N-1}, its times t = g[2i], t_mid = g[2i+1], t_next = g[2i+2]
    on the teacher's grid g (2N + 1 times), z = alpha_t x + std_t e, and
        loss = w(t, t_next) * mean over dimensions of (x0_student(z, t) - x0~)^2,
    x0~ from `two_step_target`, w = `loss_weight(..., weighting)` (default: the truncated-SNR
    weighting max(alpha_t^2 / std_t^2, 1) of Salimans & Ho, sec. 4).
    Call as loss(score_fn, x, generator=g), score_fn the student's (the Trainer's loss contract).
    """

    sde: object
    teacher_score: Callable[[Tensor, Tensor], Tensor]
    student_steps: int
    eps: float = 1e-3
    schedule: str = "logsnr"
    weighting: str = "truncated_snr"

    def __post_init__(self):
        check_positive_int("student_steps", self.student_steps)
        check_choice("schedule", self.schedule, DISTILL_SCHEDULES)
        check_choice("weighting", self.weighting, DISTILL_WEIGHTINGS)

    def teacher_grid(self, device=None) -> Tensor:
        """The teacher's 2N + 1 times from T to eps, float64."""
        return time_points(self.sde, self.eps, 2 * self.student_steps + 1, self.schedule, device)

    def __call__(self, score_fn, x: Tensor, *, generator: Optional[torch.Generator] = None) -> Tensor:
        grid = self.teacher_grid(x.device).to(x.dtype)
        i = torch.randint(self.student_steps, (x.shape[0],), generator=generator).to(x.device)
        t, t_mid, t_next = grid[2 * i], grid[2 * i + 1], grid[2 * i + 2]
        alpha, std = self.sde.marginal_coeffs(t)
        z = batch_broadcast(alpha, x) * x + batch_broadcast(std, x) * randn_like(x, generator)
        with torch.no_grad():
            target = two_step_target(self.sde, self.teacher_score, z, t, t_mid, t_next)
        x0 = data_prediction(self.sde, score_fn, z, t)
        weight = loss_weight(self.sde, t, t_next, self.weighting).to(x.dtype)
        return weight * (x0 - target).square().reshape(x.shape[0], -1).mean(1)
