"""Denoising score matching objectives (Song et al. 2021, eq. 7; Ho et al. 2020; Song & Ermon 2019),
and the cross-entropy of a noise-conditional classifier (Song et al. 2021, App. I.1).

Every loss takes a `score_fn(x, t)` (the classifier loss a `log_prob_fn(x, t)`) and returns
per-example losses (B,); a trainer takes their mean. Conditioning (class labels) is bound into
`score_fn` by the caller.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .utils import batch_broadcast, check_end_time, randn_like, to_device

Tensor = torch.Tensor


def _reduce(v: Tensor, reduce_mean: bool) -> Tensor:
    v = v.reshape(v.shape[0], -1)
    return v.mean(dim=1) if reduce_mean else v.sum(dim=1)


class ImportanceTimeSampler:
    """Draw t in [eps, T] with density p(t) proportional to g(t)^2 / std(t)^2 (Song et al. 2021b).

    With lambda(t) = g(t)^2, the likelihood-weighted loss is E_{t~U}[g^2 ||s + z/std||^2]; drawing t
    from p and weighting by g^2 / (std^2 p(t) (T - eps)) gives the same expectation with far less
    variance (the weight becomes a constant times ||std s + z||^2). The density is tabulated on a
    geometric grid and t is drawn by inverting the piecewise-linear CDF; the weights use that
    piecewise-constant density exactly, so the estimator is unbiased whatever the grid.

    Args:
      sde: any SDE of this library.
      eps: smallest time, in (0, T).
      n_grid: number of grid cells.
    """

    def __init__(self, sde, eps: float = 1e-5, n_grid: int = 4096):
        self.sde = sde
        self.eps = check_end_time(eps, sde.T)
        self.T = sde.T
        log_eps, log_T = torch.log10(torch.tensor(self.eps)), torch.log10(torch.tensor(sde.T))
        grid = torch.logspace(log_eps, log_T, n_grid + 1, dtype=torch.float64)
        grid[0], grid[-1] = self.eps, sde.T
        dens = self.unnormalised_density(grid)
        cell_mass = 0.5 * (dens[1:] + dens[:-1]) * torch.diff(grid)  # trapezoid per cell
        self.grid = grid
        self.cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(cell_mass, 0)])
        self.total = self.cdf[-1].item()
        self.cell_density = cell_mass / torch.diff(grid) / self.total  # density actually sampled

    def unnormalised_density(self, t: Tensor) -> Tensor:
        """g(t)^2 / std(t)^2, float64."""
        return self.sde.diffusion(t).square() / self.sde.marginal_std(t).square()

    def sample(self, n: int, generator: Optional[torch.Generator] = None, device=None):
        """Return (t, weight), each (n,) float64, with
        E[weight h(t)] = E_{t ~ U[eps, T]}[g(t)^2 / std(t)^2 h(t)] for any h."""
        u = torch.rand(n, generator=generator, dtype=torch.float64,
                       device=generator.device if generator is not None else None).cpu() * self.total
        j = torch.searchsorted(self.cdf, u, right=True).clamp(1, len(self.grid) - 1) - 1
        frac = (u - self.cdf[j]) / (self.cdf[j + 1] - self.cdf[j])
        t = self.grid[j] + frac * (self.grid[j + 1] - self.grid[j])
        weight = self.unnormalised_density(t) / (self.cell_density[j] * (self.T - self.eps))
        return to_device(t, device), to_device(weight, device)


class DenoisingScoreMatching:
    """Continuous-time denoising score matching, eq. 7 of Song et al. (2021).

    t ~ U[eps, T], x_t = alpha(t) x_0 + std(t) z, and the loss per example is
      * lambda(t) = std^2 (default):               ||std s(x_t, t) + z||^2
      * lambda(t) = g(t)^2 (likelihood weighting):  g^2 ||s(x_t, t) + z / std||^2, whose time
        integral bounds the negative log-likelihood (Song et al. 2021b, Thm. 1);
    each reduced over data dimensions by mean (`reduce_mean`) or sum, as the official code does.

    Args:
      sde: the forward SDE.
      eps: smallest time, in (0, T) (1e-5 in the official configs).
      reduce_mean: average over data dimensions instead of summing.
      likelihood_weighting: lambda(t) = g(t)^2.
      importance_sampling: with likelihood weighting, draw t from g^2/std^2 (see
        `ImportanceTimeSampler`) instead of uniformly; same expectation, lower variance.
    """

    def __init__(self, sde, *, eps: float = 1e-5, reduce_mean: bool = True,
                 likelihood_weighting: bool = False, importance_sampling: bool = False):
        check_end_time(eps, sde.T)
        if importance_sampling and not likelihood_weighting:
            raise ValueError("importance_sampling=True needs likelihood_weighting=True")
        self.sde, self.eps, self.reduce_mean = sde, eps, reduce_mean
        self.likelihood_weighting = likelihood_weighting
        self.time_sampler = ImportanceTimeSampler(sde, eps) if importance_sampling else None

    def __call__(self, score_fn: Callable[[Tensor, Tensor], Tensor], x0: Tensor, *,
                 generator: Optional[torch.Generator] = None, t: Optional[Tensor] = None,
                 noise: Optional[Tensor] = None) -> Tensor:
        """Per-example losses (B,) of `score_fn` on clean data x0 (B, ...).

        `generator` draws t and z; `t` (B,) and `noise` (shape of x0) fix them instead.
        """
        sde, B = self.sde, x0.shape[0]
        weight = None  # g^2/std^2, or the importance weight that replaces it
        if t is None and self.time_sampler is not None:
            t, weight = self.time_sampler.sample(B, generator=generator, device=x0.device)
            t = t.to(x0.dtype)
        elif t is None:
            u = to_device(torch.rand(B, generator=generator, dtype=torch.float64,
                                     device=generator.device if generator is not None else x0.device),
                          x0.device)
            t = (u * (sde.T - self.eps) + self.eps).to(x0.dtype)
        z = randn_like(x0, generator) if noise is None else noise
        mean, std = sde.marginal_prob(x0, t)
        std = batch_broadcast(std, x0)
        score = score_fn(mean + std * z, t)
        residual = _reduce((std * score + z).square(), self.reduce_mean)  # ||std s + z||^2
        if not self.likelihood_weighting:
            return residual
        if weight is None:
            weight = sde.diffusion(t).square() / sde.marginal_std(t).square()
        return weight.to(residual.dtype) * residual


def dsm_loss(sde, score_fn, x0, *, eps: float = 1e-5, reduce_mean: bool = True,
             likelihood_weighting: bool = False, importance_sampling: bool = False,
             generator=None, t=None, noise=None) -> Tensor:
    """Per-example denoising score matching losses (B,); see `DenoisingScoreMatching`."""
    loss = DenoisingScoreMatching(sde, eps=eps, reduce_mean=reduce_mean,
                                  likelihood_weighting=likelihood_weighting,
                                  importance_sampling=importance_sampling)
    return loss(score_fn, x0, generator=generator, t=t, noise=noise)


def discrete_dsm_loss(
    sde,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    *,
    reduce_mean: bool = True,
    generator: Optional[torch.Generator] = None,
    levels: Optional[Tensor] = None,
    noise: Optional[Tensor] = None,
) -> Tensor:
    """Score matching on the N levels of the SDE's chain: ||std_i s(x_i, t_i) + z||^2 per example.

    Level i ~ U{0, ..., N-1}, x_i = alpha_i x_0 + std_i z with the chain's coefficients. This is
      * VP: DDPM's L_simple, ||eps_theta(x_i, i) - z||^2 (Ho et al. 2020, eq. 14), since an
        epsilon network's score is -eps / std_i;
      * VE: the SMLD/NCSN loss sigma_i^2 ||s(x_i, sigma_i) + z / sigma_i||^2 (Song & Ermon 2019).
    The score is asked at the level's time t_i = i T / (N - 1), which discrete-time networks map
    back to i (see `NetworkScore`).

    Returns:
      Per-example losses (B,).
    """
    B = x0.shape[0]
    if levels is None:
        levels = to_device(torch.randint(0, sde.N, (B,), generator=generator,
                                         device=generator.device if generator is not None else x0.device),
                           x0.device)
    z = randn_like(x0, generator) if noise is None else noise
    alpha, std = sde.discrete_marginal_coeffs(levels)
    x_i = batch_broadcast(alpha, x0) * x0 + batch_broadcast(std, x0) * z
    score = score_fn(x_i, sde.discrete_time(levels).to(x0.dtype))
    return _reduce((batch_broadcast(std, x0) * score + z).square(), reduce_mean)


def ddpm_loss(sde, score_fn, x0, **kwargs) -> Tensor:
    """DDPM's L_simple on a VP SDE's chain (alias of `discrete_dsm_loss`)."""
    return discrete_dsm_loss(sde, score_fn, x0, **kwargs)


def smld_loss(sde, score_fn, x0, **kwargs) -> Tensor:
    """SMLD/NCSN's loss on a VE SDE's sigma levels (alias of `discrete_dsm_loss`)."""
    return discrete_dsm_loss(sde, score_fn, x0, **kwargs)


class NoisyClassifierLoss:
    """Cross-entropy of a noise-conditional classifier p_t(y | x_t) on perturbed data (Song et al.
    2021, App. I.1; Dhariwal & Nichol 2021, Sec. 4.1): t ~ U[eps, T], x_t = alpha(t) x_0 + std(t) z,
    loss = -log p_t(y | x_t) per example.

    Args:
      sde: the forward SDE whose kernel perturbs the data (the score model's SDE).
      eps: smallest time, in (0, T).
    """

    def __init__(self, sde, *, eps: float = 1e-5):
        self.sde, self.eps = sde, check_end_time(eps, sde.T)

    def __call__(self, log_prob_fn: Callable[[Tensor, Tensor], Tensor], x0: Tensor, y: Tensor, *,
                 generator: Optional[torch.Generator] = None, t: Optional[Tensor] = None,
                 noise: Optional[Tensor] = None) -> Tensor:
        """Per-example losses (B,) for clean data x0 (B, ...) with labels y (B,).

        `log_prob_fn(x, t)` returns normalised log-probabilities (B, K). `generator` draws t and
        z; `t` and `noise` fix them instead.
        """
        B = x0.shape[0]
        if t is None:
            u = torch.rand(B, generator=generator, dtype=torch.float64).to(x0.device)
            t = (u * (self.sde.T - self.eps) + self.eps).to(x0.dtype)
        z = randn_like(x0, generator) if noise is None else noise
        mean, std = self.sde.marginal_prob(x0, t)
        log_p = log_prob_fn(mean + batch_broadcast(std, x0) * z, t)
        return -log_p.gather(1, y.long().to(log_p.device)[:, None])[:, 0]
