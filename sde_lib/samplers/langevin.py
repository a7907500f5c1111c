"""Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) over the noise levels of any SDE."""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from ..grids import SCHEDULES, time_points
from ..predictors import reverse_sde_final_step
from ..progress import progress_bar
from ..utils import check_choice, check_positive, check_positive_int, randn_like
from .base import SamplingMethod

# Largest relative step a_i / sigma_i^2 accepted. Every p_t here is data convolved with
# N(0, sigma^2 I) (scaled by alpha), so the Hessian of -log p_t is at most I / sigma^2
# (-grad^2 log p_t = I / sigma^2 - Cov[alpha x_0 | x_t] / sigma^4). The update
# x + a/2 s + sqrt(a) z contracts a Gaussian direction of variance v by 1 - a / (2 v), which is
# stable only for a < 4 v; with v >= sigma_i^2 a relative step below 4 is stable on any data.
# NCSN's own setting (step_lr 2e-5, sigma_L = 0.01) has 0.2; 2 keeps a factor 2 from the edge.
MAX_RELATIVE_STEP = 2.0


@dataclasses.dataclass(frozen=True)
class AnnealedLangevin(SamplingMethod):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) over N noise levels.

    For each level time t_i of the grid from T to eps with noise std sigma_i = std(t_i), run
    `n_steps_each` steps x <- x + a_i / 2 s(x, t_i) + sqrt(a_i) z with a_i = step_lr
    (sigma_i / sigma_L)^2, sigma_L = std(eps) (NCSN: step_lr = 2e-5 with sigma_L = 0.01). With
    `denoise="mean"` (default), a final Tweedie step x + sigma_L^2 s(x, eps) (Jolicoeur-Martineau
    et al. 2021; for VP divided by alpha); "pf" takes half of it (see `reverse_sde_final_step`).
    Any SDE works (for VP the levels are its marginals); VE is the NCSN setting.

    The relative step a_i / sigma_i^2 = step_lr / sigma_L^2 is the same at every level and must
    stay below `MAX_RELATIVE_STEP` (the chain diverges above 4): sub-VP's std(1e-3) is 1.1e-4,
    so NCSN's step_lr would be 1650 times too large there; `check` refuses it and names the
    largest step_lr that is stable.

    Options:
      n_steps_each: Langevin steps per level.
      step_lr: the step at the last level, a_L.
      schedule: the level times (`grids.time_points`).
    """

    n_steps_each: int = 5
    step_lr: float = 2e-5
    schedule: str = "logsnr"

    default_denoise: ClassVar = "mean"

    def validate(self) -> None:
        check_positive_int("n_steps_each", self.n_steps_each)
        check_positive("step_lr", self.step_lr)
        check_choice("schedule", self.schedule, SCHEDULES)

    def check(self, sde, N, eps):
        sigma_L = float(sde.marginal_std(torch.tensor([eps], dtype=torch.float64)))
        relative = self.step_lr / sigma_L**2
        if relative > MAX_RELATIVE_STEP:
            raise ValueError(
                f"step_lr={self.step_lr:g}: annealed Langevin on {type(sde).__name__} with eps={eps:g}"
                f" (std(eps)={sigma_L:.3g}) takes steps of {relative:.3g} x each level's noise variance"
                f" and diverges (stable below 4); use step_lr <= {MAX_RELATIVE_STEP * sigma_L**2:.3g}"
                " or a larger eps")

    def run(self, sde, score_fn, x, *, eps, denoise, N, generator, progress):
        grid = time_points(sde, eps, N, self.schedule, x.device)
        sigmas = sde.marginal_std(grid)
        B = x.shape[0]
        with progress_bar(progress, N, "Annealed Langevin") as bar:
            for i in range(N):
                t = grid[i].to(x.dtype).expand(B)
                a = (self.step_lr * (sigmas[i] / sigmas[-1]) ** 2).item()
                for _ in range(self.n_steps_each):
                    x = x + 0.5 * a * score_fn(x, t) + math.sqrt(a) * randn_like(x, generator)
                bar.update(1)
        if denoise:
            t = grid[-1].to(x.dtype).expand(B)
            x = reverse_sde_final_step(sde, score_fn, x, t, torch.zeros_like(t), denoise, generator)
        return x
