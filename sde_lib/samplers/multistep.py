"""What the multistep solvers of the probability flow (`dpm_solver`, `unipc`) share: the checks
of their `order`, `schedule` and `grid_max_scale` options and the time grid they step on."""
from __future__ import annotations

import math

from ..grids import SOLVER_SCHEDULES, optimized_time_points, time_points
from ..utils import check_choice
from .base import SamplingMethod


class MultistepSolver(SamplingMethod):
    """Base of a declaration with the fields `order` (1-3), `schedule` (`SOLVER_SCHEDULES`) and
    `grid_max_scale` (the largest data scale an "optimized" grid is fitted to)."""

    def validate_grid_options(self) -> None:
        if isinstance(self.order, bool) or self.order not in (1, 2, 3):
            raise ValueError(f"order={self.order!r} is not one of [1, 2, 3]")
        check_choice("schedule", self.schedule, SOLVER_SCHEDULES)
        scale = self.grid_max_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
            raise ValueError(f"grid_max_scale={scale!r}: expected a positive number (default 1.0)")

    def grid(self, sde, eps: float, N: int, denoise, device):
        """The float64 times from T to eps the solver steps over: N of them, one more when the
        last step is a solver step (denoise=False)."""
        n_points = N + (denoise is False)
        if self.schedule == "optimized":
            return optimized_time_points(sde, eps, n_points, self, denoise, device,
                                         max_scale=self.grid_max_scale)
        return time_points(sde, eps, n_points, self.schedule, device)
