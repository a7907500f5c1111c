"""Time grids of the stepping samplers: where, between T and eps, the score is evaluated.

Shared by every sampler module (`sampling`, `ddim`, `dpm_solver`, `controllable`), below all of
them, so that none imports another for its grid.
"""
from __future__ import annotations

import math

import torch

from .progress import progress_bar
from .utils import check_choice

Tensor = torch.Tensor

SCHEDULES = ("uniform", "logsnr", "edm")
# The few-step solvers (`dpm_solver`, `unipc`) also take "optimized" (`optimized_time_points`).
SOLVER_SCHEDULES = SCHEDULES + ("optimized",)


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


_OPTIMIZED = {}


def optimized_time_points(sde, eps: float, N: int, solver, denoise, device=None, *, iters: int = 300,
                          n_scales: int = 33, max_scale: float = 1.0) -> Tensor:
    """N times from T down to eps chosen for `sde`, eps and `solver` at N points, float64 (N,).

    The grid minimises the solver's own error on Gaussian data, where the probability flow is known
    in closed form: for data N(0, v) in one direction the flow from T to eps scales x_T by
    sqrt((alpha_eps^2 v + std_eps^2) / (alpha_T^2 v + std_T^2)) (the marginal std ratio), and the
    final step (`denoise`) is applied to that exact x_eps; the solver, run with the exact score
    -x / (alpha^2 v + std^2), scales x_T by its own factor. The objective is the mean over data
    scales of log(solver factor / exact factor)^2, the scales sqrt(v) log-spaced from
    std(eps) / alpha(eps) (finer structure is below the noise at eps) to `max_scale` (default 1:
    data in [-1, 1]; a larger one also fits the grid to coarser structure, e.g. the distances
    between a mixture's components, which the flow resolves earlier, at larger noise).
    Times are parameterised as T + (eps - T) cumsum(softmax(theta)), started from the "logsnr" grid
    and optimised by Adam (`iters` steps). Found once per (SDE, eps, N, solver, denoise) and kept.

    Args:
      solver: an object with `solve(sde, score_fn, x, grid, denoise, generator, progress) -> x_0`
        that is differentiable in `grid` (the N times, float64).
    """
    key = (type(sde).__qualname__, repr(sorted(vars(sde).items(), key=lambda kv: kv[0])), float(eps), N,
           repr(solver), denoise, iters, n_scales, float(max_scale))
    if key not in _OPTIMIZED:
        _OPTIMIZED[key] = _optimize_grid(sde, float(eps), N, solver, denoise, iters, n_scales, float(max_scale))
    return _OPTIMIZED[key].clone().to(device)


def _optimize_grid(sde, eps, N, solver, denoise, iters, n_scales, max_scale=1.0):
    start = time_points(sde, eps, N, "logsnr")
    if N <= 2:
        return start
    ends = torch.tensor([sde.T, eps], dtype=torch.float64)
    alpha, std = sde.marginal_coeffs(ends)
    v = torch.logspace(2 * torch.log10(std[1] / alpha[1]).item(), 2 * math.log10(max_scale), n_scales,
                       dtype=torch.float64)

    def score_fn(x, t):
        a, s = sde.marginal_coeffs(t)
        return -x / (a.square()[:, None] * v[:, None] + s.square()[:, None])

    var_T, var_eps = alpha[0] ** 2 * v + std[0] ** 2, alpha[1] ** 2 * v + std[1] ** 2
    exact_eps = torch.sqrt(var_eps / var_T)[:, None]  # flow T -> eps from x_T = 1
    t_eps = ends[1].expand(n_scales)
    with torch.no_grad():
        exact = exact_eps if not denoise else _final_step(sde, score_fn, exact_eps, t_eps, denoise)
    theta = torch.log(start[:-1] - start[1:]).clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=0.05)
    x_T = torch.ones(n_scales, 1, dtype=torch.float64)
    best, best_loss = start, float("inf")
    for _ in range(iters + 1):
        with torch.enable_grad():
            grid = torch.cat([ends[:1], sde.T + (eps - sde.T) * torch.cumsum(torch.softmax(theta, 0), 0)])
            out = solver.solve(sde, score_fn, x_T, grid, denoise, None, False)
            loss = torch.log(out / exact).square().mean()
            if loss.item() < best_loss:
                best, best_loss = grid.detach().clone(), loss.item()
            opt.zero_grad()
            loss.backward()
        opt.step()
    best[0], best[-1] = sde.T, eps
    return best


def _final_step(sde, score_fn, x, t, denoise):
    """The final step of `predictors.reverse_sde_final_step` for denoise "pf" / "mean" (no noise)."""
    alpha, std = sde.marginal_coeffs(t)
    weight = (0.5 if denoise == "pf" else 1.0) * std.square()
    return (x + weight[:, None] * score_fn(x, t)) / alpha[:, None]
