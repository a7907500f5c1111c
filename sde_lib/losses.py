"""Denoising score matching objectives (Song et al. 2021, eq. 7; Ho et al. 2020; Song & Ermon 2019)
with the weightings and noise-level proposals of later work (v, EDM, min-SNR, flow matching),
and the cross-entropy of a noise-conditional classifier (Song et al. 2021, App. I.1).

Every loss takes a `score_fn(x, t)` (the classifier loss a `log_prob_fn(x, t)`) and returns
per-example losses (B,); a trainer takes their mean. Conditioning (class labels) is bound into
`score_fn` by the caller.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

import torch

from .utils import batch_broadcast, check_choice, check_end_time, check_positive, randn_like, to_device

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


@dataclasses.dataclass(frozen=True)
class Perturbed:
    """One draw of denoising score matching: x_t = alpha x_0 + std z at times t, and the model's
    score there. Tensors are shaped like x_0, except t, alpha, std (B,) float64."""

    sde: object
    x0: Tensor
    z: Tensor
    t: Tensor
    alpha: Tensor
    std: Tensor
    x_t: Tensor
    score: Tensor

    def b(self, v: Tensor) -> Tensor:
        """A per-example (B,) factor broadcast against the data, in its dtype."""
        return batch_broadcast(v.to(self.x0.dtype), self.x0)

    @property
    def eps_hat(self) -> Tensor:
        return -self.b(self.std) * self.score

    @property
    def x0_hat(self) -> Tensor:  # Tweedie's formula
        return (self.x_t + self.b(self.std.square()) * self.score) / self.b(self.alpha)

    @property
    def sigma(self) -> Tensor:  # EDM's noise level of x_t / alpha
        return self.std / self.alpha


def _eps_mse(p: Perturbed, o: dict) -> Tensor:
    """||eps_hat - z||^2 (Ho et al. 2020, eq. 14; Song et al. 2021, eq. 7 with lambda = std^2)."""
    return (p.eps_hat - p.z).square()


def _likelihood(p: Perturbed, o: dict) -> Tensor:
    """g^2 ||s + z / std||^2 (Song et al. 2021b, Thm. 1: bounds the negative log-likelihood)."""
    g2 = p.sde.diffusion(p.t).square()
    return p.b(g2) * (p.score + p.z / p.b(p.std)).square()


def _x0_mse(p: Perturbed, o: dict) -> Tensor:
    """||x0_hat - x_0||^2: the eps-MSE weighted by 1 / SNR = std^2 / alpha^2 (Kingma et al. 2021)."""
    return (p.x0_hat - p.x0).square()


def _v_mse(p: Perturbed, o: dict) -> Tensor:
    """||v_hat - v||^2, v = alpha z - std x_0 (Salimans & Ho 2022, Sec. 4)."""
    a, s = p.b(p.alpha), p.b(p.std)
    return ((a * p.eps_hat - s * p.x0_hat) - (a * p.z - s * p.x0)).square()


def _edm(p: Perturbed, o: dict) -> Tensor:
    """lambda(sigma) ||D - x_0||^2, lambda = (sigma^2 + sd^2) / (sigma sd)^2 (Karras et al. 2022,
    eq. 8 and Table 1); the denoiser D is x0_hat."""
    sd = o["sigma_data"]
    lam = (p.sigma.square() + sd**2) / (p.sigma * sd).square()
    return p.b(lam) * (p.x0_hat - p.x0).square()


def _min_snr(p: Perturbed, o: dict) -> Tensor:
    """min(SNR, gamma) ||x0_hat - x_0||^2, SNR = alpha^2 / std^2 (Hang et al. 2023, eq. 8)."""
    snr = (p.alpha / p.std).square()
    return p.b(snr.clamp(max=o["min_snr_gamma"])) * (p.x0_hat - p.x0).square()


def _flow(p: Perturbed, o: dict) -> Tensor:
    """||u_hat - u||^2 with the conditional velocity u = alpha' x_0 + std' z of the kernel and
    u_hat = f - g^2 / 2 s the probability-flow velocity (Lipman et al. 2023, eq. 23; on the linear
    interpolant u = z - x_0, Liu et al. 2023). From the SDE: alpha' = c alpha with f = c x, and
    d std^2 / dt = 2 c std^2 + g^2."""
    c, g2 = p.sde.drift_coeff(p.t), p.sde.diffusion(p.t).square()
    d_alpha, d_std = c * p.alpha, (c * p.std.square() + 0.5 * g2) / p.std
    u = p.b(d_alpha) * p.x0 + p.b(d_std) * p.z
    u_hat = p.b(c) * p.x_t - p.b(0.5 * g2) * p.score
    return (u_hat - u).square()


# Loss weightings, each the squared error of its paper's target (shape of x_0, before reduction).
WEIGHTINGS = {"eps": _eps_mse, "likelihood": _likelihood, "x0": _x0_mse, "v": _v_mse, "edm": _edm,
              "min_snr": _min_snr, "flow": _flow}
# Noise-level proposals: uniform t and importance-sampled t are one objective (the time average
# over U[eps, T]; importance sampling only changes the estimator's variance); "lognormal" is
# EDM's p_train, ln sigma ~ N(P_mean, P_std^2) with sigma = std / alpha (Karras et al. 2022,
# Sec. 5), which defines its own average over noise levels.
PROPOSALS = ("uniform", "importance", "lognormal")


class LogNormalTimeSampler:
    """EDM's training noise levels: ln sigma ~ N(P_mean, P_std^2) (Karras et al. 2022, Table 1),
    mapped to the SDE's time with sigma(t) = std(t) / alpha(t), i.e. log-SNR = -ln sigma, and
    clipped to [eps, T] (levels beyond the SDE's range go to its ends).

    Args:
      sde: any SDE of this library.
      eps: smallest time, in (0, T).
      P_mean, P_std: mean and std of ln sigma (-1.2 and 1.2 in EDM).
    """

    def __init__(self, sde, eps: float = 1e-5, P_mean: float = -1.2, P_std: float = 1.2):
        self.sde, self.eps = sde, check_end_time(eps, sde.T)
        self.P_mean, self.P_std = float(P_mean), check_positive("P_std", P_std)

    def sample(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """Times t (n,) float64."""
        normal = torch.randn(n, generator=generator, dtype=torch.float64,
                             device=generator.device if generator is not None else None).cpu()
        log_sigma = self.P_mean + self.P_std * normal
        t = self.sde.time_from_log_snr(-log_sigma)
        return to_device(t.clamp(self.eps, self.sde.T), device)


class DenoisingScoreMatching:
    """Continuous-time denoising score matching, eq. 7 of Song et al. (2021), with a weighting
    and a noise-level proposal chosen by name.

    t ~ proposal, x_t = alpha(t) x_0 + std(t) z, and the loss per example is the squared error of
    the weighting's target (`WEIGHTINGS`), each as its paper writes it: "eps" ||eps_hat - z||^2
    (the official default lambda = std^2), "likelihood" g^2 ||s + z / std||^2, "x0"
    ||x0_hat - x_0||^2, "v" ||v_hat - v||^2, "edm" lambda(sigma) ||D - x_0||^2, "min_snr"
    min(SNR, gamma) ||x0_hat - x_0||^2, "flow" ||u_hat - u||^2; the model's eps_hat, x0_hat,
    v_hat, u_hat all come from its score. Each is reduced over data dimensions by mean
    (`reduce_mean`) or sum, as the official code does.

    Args:
      sde: the forward SDE.
      eps: smallest time, in (0, T) (1e-5 in the official configs).
      reduce_mean: average over data dimensions instead of summing.
      weighting: a key of WEIGHTINGS.
      proposal: "uniform" (t ~ U[eps, T]), "importance" (t ~ g^2/std^2, see
        `ImportanceTimeSampler`, reweighted to the uniform average) or "lognormal" (EDM's).
      sigma_data: EDM's data std (weighting "edm").
      P_mean, P_std: EDM's log-normal proposal.
      min_snr_gamma: gamma of min-SNR-gamma (5 in Hang et al. 2023).
      likelihood_weighting, importance_sampling: the earlier flags, equal to weighting=
        "likelihood" and proposal="importance" (the flag needs the likelihood weighting).
    """

    def __init__(self, sde, *, eps: float = 1e-5, reduce_mean: bool = True,
                 likelihood_weighting: bool = False, importance_sampling: bool = False,
                 weighting: str = "eps", proposal: str = "uniform", sigma_data: float = 0.5,
                 P_mean: float = -1.2, P_std: float = 1.2, min_snr_gamma: float = 5.0):
        check_end_time(eps, sde.T)
        if importance_sampling and not likelihood_weighting:
            raise ValueError("importance_sampling=True needs likelihood_weighting=True"
                             " (or pass proposal='importance' with any weighting)")
        check_choice("weighting", weighting, WEIGHTINGS)
        check_choice("proposal", proposal, PROPOSALS)
        if likelihood_weighting:
            if weighting not in ("eps", "likelihood"):
                raise ValueError(f"likelihood_weighting=True contradicts weighting={weighting!r}")
            weighting = "likelihood"
        if importance_sampling:
            if proposal not in ("uniform", "importance"):
                raise ValueError(f"importance_sampling=True contradicts proposal={proposal!r}")
            proposal = "importance"
        self.sde, self.eps, self.reduce_mean = sde, eps, reduce_mean
        self.weighting, self.proposal = weighting, proposal
        self.likelihood_weighting = weighting == "likelihood"
        self.options = {"sigma_data": check_positive("sigma_data", sigma_data),
                        "min_snr_gamma": check_positive("min_snr_gamma", min_snr_gamma)}
        self.time_sampler = ImportanceTimeSampler(sde, eps) if proposal == "importance" else None
        self.lognormal = LogNormalTimeSampler(sde, eps, P_mean, P_std) if proposal == "lognormal" else None

    def sample_times(self, B: int, generator: Optional[torch.Generator], device) -> Tuple[Tensor, Optional[Tensor]]:
        """t (B,) float64 from the proposal, and the importance weight 1 / (p(t) (T - eps)) that
        turns an importance-sampled average into the uniform one (None for the other proposals)."""
        if self.time_sampler is not None:
            t, weight = self.time_sampler.sample(B, generator=generator, device=device)
            return t, weight / self.time_sampler.unnormalised_density(t)
        if self.lognormal is not None:
            return self.lognormal.sample(B, generator=generator, device=device), None
        u = to_device(torch.rand(B, generator=generator, dtype=torch.float64,
                                 device=generator.device if generator is not None else device), device)
        return u * (self.sde.T - self.eps) + self.eps, None

    def __call__(self, score_fn: Callable[[Tensor, Tensor], Tensor], x0: Tensor, *,
                 generator: Optional[torch.Generator] = None, t: Optional[Tensor] = None,
                 noise: Optional[Tensor] = None) -> Tensor:
        """Per-example losses (B,) of `score_fn` on clean data x0 (B, ...).

        `generator` draws t and z; `t` (B,) and `noise` (shape of x0) fix them instead.
        """
        sde, B = self.sde, x0.shape[0]
        weight = None  # the importance weight 1 / (p(t) (T - eps))
        if t is None:
            t, weight = self.sample_times(B, generator, x0.device)
            t = t.to(x0.dtype)
        z = randn_like(x0, generator) if noise is None else noise
        alpha, std = sde.marginal_coeffs(t)
        x_t = batch_broadcast(alpha.to(x0.dtype), x0) * x0 + batch_broadcast(std.to(x0.dtype), x0) * z
        p = Perturbed(sde, x0, z, t, alpha, std, x_t, score_fn(x_t, t))
        loss = _reduce(WEIGHTINGS[self.weighting](p, self.options), self.reduce_mean)
        return loss if weight is None else weight.to(loss.dtype) * loss


def dsm_loss(sde, score_fn, x0, *, eps: float = 1e-5, reduce_mean: bool = True,
             likelihood_weighting: bool = False, importance_sampling: bool = False,
             generator=None, t=None, noise=None, **options) -> Tensor:
    """Per-example denoising score matching losses (B,); see `DenoisingScoreMatching` (`options`:
    weighting, proposal, sigma_data, P_mean, P_std, min_snr_gamma)."""
    loss = DenoisingScoreMatching(sde, eps=eps, reduce_mean=reduce_mean,
                                  likelihood_weighting=likelihood_weighting,
                                  importance_sampling=importance_sampling, **options)
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
