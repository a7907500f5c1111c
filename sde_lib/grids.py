"""Time grids of the stepping samplers: where, between T and eps, the score is evaluated.

Shared by every sampler module (`sampling`, `ddim`, `dpm_solver`, `controllable`), below all of
them, so that none imports another for its grid.
"""
from __future__ import annotations

import torch

from .progress import progress_bar
from .utils import check_choice

Tensor = torch.Tensor

SCHEDULES = ("uniform", "logsnr", "edm")


def time_points(sde, eps: float, N: int, schedule: str = "uniform", device=None) -> Tensor:
    """N times from T down to eps, float64 (N,).

    Schedules:
      * "uniform": linspace(T, eps, N), the official grid.
      * "logsnr":  uniform in lambda = log(alpha / std) (DPM-Solver's choice); for VE this is
                   NCSN's geometric sigma grid. Steps concentrate where the data's scales are.
      * "edm":     Karras et al. (2022) eq. 5 with rho = 7 in sigma = std / alpha.
    """
    check_choice("schedule", schedule, SCHEDULES)
    ends = torch.tensor([sde.T, eps], dtype=torch.float64)
    if N == 1:
        return ends[:1].to(device)
    if schedule == "uniform":
        return torch.linspace(sde.T, eps, N, dtype=torch.float64, device=device)
    lam_T, lam_eps = sde.log_snr(ends)
    frac = torch.linspace(0.0, 1.0, N, dtype=torch.float64)
    if schedule == "logsnr":
        lam = lam_T + frac * (lam_eps - lam_T)
    else:  # sigma = exp(-lambda); rho-spaced in sigma^(1/rho)
        rho = 7.0
        s_max, s_min = torch.exp(-lam_T / rho), torch.exp(-lam_eps / rho)
        lam = -rho * torch.log(s_max + frac * (s_min - s_max))
    t = sde.time_from_log_snr(lam)
    t[0], t[-1] = sde.T, eps
    return t.to(device)


def time_grid(sde, eps: float, N: int, schedule: str = "uniform", device=None) -> Tensor:
    """`time_points` followed by 0: the N + 1 ends of N steps, float64 (N + 1,).

    Step k of a stepping sampler goes from t_k to t_{k+1}, so the score is evaluated at
    T, ..., eps and never at 0, and the last step, of length eps, lands on t = 0. (The official
    code instead steps by 1/N from each grid point, overshooting past t = 0 by about 1/N.)
    """
    grid = time_points(sde, eps, N, schedule, device)
    return torch.cat([grid, torch.zeros(1, dtype=torch.float64, device=grid.device)])


def steps(grid: Tensor, x: Tensor, progress, desc: str):
    """Yield (t, t_next) per step as (B,) tensors in x's dtype, reporting each step to `progress`
    (`sde_lib.progress`)."""
    B = x.shape[0]
    with progress_bar(progress, len(grid) - 1, desc) as bar:
        for k in range(len(grid) - 1):
            yield grid[k].to(x.dtype).expand(B), grid[k + 1].to(x.dtype).expand(B)
            bar.update(1)
