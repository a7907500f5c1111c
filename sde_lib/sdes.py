"""Forward SDEs dx = f(x, t) dt + g(t) dw (Song et al. 2021, eq. 5) and their discretisations.

Every SDE here is linear with a Gaussian perturbation kernel
    p_0t(x_t | x_0) = N(x_t; alpha(t) x_0, std(t)^2 I),
so each class reduces to two scalar functions of time, `marginal_coeffs(t) -> (alpha, std)`, plus
its drift and diffusion. Each also defines a discrete Markov chain of N noise levels (DDPM's
beta_i for VP, SMLD's sigma_i for VE) that the ancestral and reverse-diffusion predictors walk.

Time conventions (shared with the official score_sde code):
  * `t` is a 1-D tensor with one time per example, in [0, T].
  * Level i in {0, ..., N-1} of the discrete chain sits at time t_i = i T / (N - 1); level -1 is
    the data itself (alpha = 1, std = 0).
  * Scalar coefficients are computed in float64 (they are (B,)-sized, so this is free) and cast
    to the data's dtype, so float32 data gets correctly rounded coefficients even at t = 1e-5.
"""
from __future__ import annotations

import abc
import functools
import inspect
import math
from typing import TYPE_CHECKING, Callable, Optional, Tuple

import torch

from .utils import batch_broadcast, check_positive, check_positive_int, flat_sum, randn

Tensor = torch.Tensor

if TYPE_CHECKING:  # the reverse SDE imports this module
    from .reverse import ReverseSDE


def _f64(t: Tensor) -> Tensor:
    return t.to(torch.float64)


class SDE(abc.ABC):
    """A forward SDE with a Gaussian perturbation kernel and an N-level discretisation.

    Subclasses implement `drift_coeff`, `diffusion`, `marginal_coeffs`, `prior_std`,
    `discrete_marginal_coeffs` and `network_time_label`, and keep each constructor argument as an
    attribute of the same name (so that `constructor_kwargs` can rebuild them); everything a
    sampler, loss or likelihood needs is derived here, so that no code outside this module has to
    ask which SDE it was given.
    """

    # Noise of the ancestral predictor: "transition" uses the forward step's variance (DDPM's
    # sigma_i^2 = beta_i, Ho et al. 2020 Alg. 2); "posterior" uses Var[x_{i-1} | x_i, x_0]
    # (SMLD's choice in the official code).
    ancestral_variance = "transition"

    def __init__(self, N: int):
        self.N = check_positive_int("N", N)

    # ------------------------------------------------------------------ what subclasses define
    @property
    def T(self) -> float:
        """End time of the forward process."""
        return 1.0

    @abc.abstractmethod
    def drift_coeff(self, t: Tensor) -> Tensor:
        """Scalar c(t) of the linear drift f(x, t) = c(t) x; (B,) float64."""

    @abc.abstractmethod
    def diffusion(self, t: Tensor) -> Tensor:
        """Diffusion coefficient g(t); (B,) float64."""

    @abc.abstractmethod
    def marginal_coeffs(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        """Perturbation kernel p_0t = N(alpha(t) x_0, std(t)^2 I): returns (alpha, std), (B,) float64."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """The prior p_T is N(0, prior_std^2 I)."""

    @abc.abstractmethod
    def discrete_marginal_coeffs(self, i: Tensor) -> Tuple[Tensor, Tensor]:
        """(alpha_i, std_i) of level i of the discrete chain, i in [-1, N-1]; float64 (B,)."""

    @abc.abstractmethod
    def network_time_label(self, t: Tensor, discrete: bool = False) -> Tensor:
        """The time label a score network is trained with (see subclasses)."""

    def constructor_kwargs(self) -> dict:
        """Keyword arguments that rebuild this SDE (used by `with_num_levels` and repr).

        By default every named parameter of the class's constructor, read from the attribute of
        the same name (`self.N`, `self.beta_min`, ...). Override it if a constructor argument is
        not kept under its own name.

        Raises:
          TypeError: a constructor parameter has no attribute of its name, or the constructor
            takes *args / **kwargs; the message names the parameter and the fix.
        """
        cls = type(self).__name__
        kwargs = {}
        for p in list(inspect.signature(type(self).__init__).parameters.values())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(
                    f"{cls}.__init__ takes {p}: constructor_kwargs cannot tell its arguments from "
                    f"the signature; override {cls}.constructor_kwargs() to return them")
            if not hasattr(self, p.name):
                raise TypeError(
                    f"{cls}.__init__ has the parameter {p.name!r} but the instance has no "
                    f"attribute self.{p.name}; store it as self.{p.name} in __init__ or override "
                    f"{cls}.constructor_kwargs() to return the arguments that rebuild the SDE")
            kwargs[p.name] = getattr(self, p.name)
        return kwargs

    # ------------------------------------------------------------------ the official interface
    def sde(self, x: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        """Drift f(x, t) (shape of x) and diffusion g(t) (B,) of the forward SDE, eq. 5."""
        drift = batch_broadcast(self.drift_coeff(t), x) * x
        return drift, self.diffusion(t).to(x.dtype)

    def marginal_prob(self, x: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        """Mean (shape of x) and std (B,) of p_0t(x_t | x_0 = x)."""
        alpha, std = self.marginal_coeffs(t)
        return batch_broadcast(alpha, x) * x, std.to(x.dtype)

    def marginal_std(self, t: Tensor) -> Tensor:
        """std(t) of the perturbation kernel, float64 (B,)."""
        return self.marginal_coeffs(t)[1]

    def log_snr(self, t: Tensor) -> Tensor:
        """Half log signal-to-noise ratio lambda(t) = log(alpha(t) / std(t)), decreasing in t; float64."""
        alpha, std = self.marginal_coeffs(t)
        return torch.log(alpha) - torch.log(std)

    def time_from_log_snr(self, lam: Tensor, iters: int = 100) -> Tensor:
        """Invert `log_snr` by bisection on [0, T] (lambda is strictly decreasing); float64."""
        lam = _f64(lam)
        lo = torch.zeros_like(lam)
        hi = torch.full_like(lam, self.T)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > lam  # mid is too early
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def prior_sampling(
        self,
        shape,
        generator: Optional[torch.Generator] = None,
        device=None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw x_T ~ N(0, prior_std^2 I) of the given (batch, *data_shape)."""
        return randn(shape, generator, device, dtype) * self.prior_std

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std^2 I) per example, summed over all non-batch dims: (B,)."""
        d = z[0].numel()
        var = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * var) - 0.5 * flat_sum(z.square()) / var

    def discretize(self, x: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        """One step of the discrete chain into level i(t): x_i = x_{i-1} + f + G z.

        For VP this is DDPM's x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z; for VE it is SMLD's
        x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z (Song et al. 2021, eqs. 45-47).

        Returns:
          f (shape of x) and G (B,).
        """
        ratio, var = self.transition_coeffs(self.discrete_index(t))
        f = batch_broadcast(ratio - 1.0, x) * x
        return f, var.sqrt().to(x.dtype)

    def reverse(self, score_fn: Callable, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (eq. 6) or probability-flow ODE (eq. 13) for `score_fn`."""
        from .reverse import ReverseSDE

        return ReverseSDE(self, score_fn, probability_flow=probability_flow)

    # ------------------------------------------------------------------ the discrete chain
    def discrete_index(self, t: Tensor) -> Tensor:
        """Level i(t) = floor(t (N - 1) / T) in [0, N-1], as the official code maps times.

        A tolerance of 1e-4 levels makes grid times i T/(N-1), rounded in float32 (error <= 6e-5
        levels), map to i, while the official grid linspace(T, 1e-3, N) still floors to N-1 ... 0.
        """
        if self.N == 1:
            return torch.zeros(t.shape, dtype=torch.long, device=t.device)
        i = torch.floor(_f64(t) * (self.N - 1) / self.T + 1e-4).long()
        return i.clamp(0, self.N - 1)

    def discrete_time(self, i: Tensor) -> Tensor:
        """Time t_i = i T / (N - 1) of level i (float64)."""
        if self.N == 1:
            return torch.full(i.shape, self.T, dtype=torch.float64, device=i.device)
        return _f64(i) * self.T / (self.N - 1)

    def chain_end_time(self) -> float:
        """The time whose kernel matches the chain's first level (equal log-SNR), in [0, T).

        Chain-based samplers end their time grid there, so that the score at level 0 is taken
        at level 0's own noise: 9.2e-4 for VP with N = 1000 (the official eps = 1e-3 was chosen
        for that N), 6.2e-3 for N = 100, and 0 for VE, whose levels are sigma(i / (N - 1)).
        """
        a, s = self.discrete_marginal_coeffs(torch.zeros(1, dtype=torch.long))
        t = self.time_from_log_snr(torch.log(a) - torch.log(s)).item()
        return 0.0 if t < 1e-12 else t

    def transition_coeffs(self, i: Tensor) -> Tuple[Tensor, Tensor]:
        """Step i-1 -> i of the chain: x_i = ratio x_{i-1} + sqrt(var) z, (B,) float64 each.

        With (a, s) the level coefficients, ratio = a_i / a_{i-1} and the step's variance is
        s_i^2 - ratio^2 s_{i-1}^2, so that the chain reproduces every level's marginal.
        """
        a, s = self.discrete_marginal_coeffs(i)
        a_prev, s_prev = self.discrete_marginal_coeffs(i - 1)
        ratio = a / a_prev
        return ratio, (s.square() - ratio.square() * s_prev.square()).clamp(min=0.0)

    def transition_between(self, t: Tensor, t_next: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The forward kernel's step from t_next up to t > t_next: x_t = ratio x_next + sqrt(var) z.

        Returns (ratio, var, std_t, std_next), float64 (B,), from `marginal_coeffs`; t_next = 0
        stands for the data itself (alpha = 1, std = 0; for VE below sigma_min), as the chain's
        level -1 does. The chain-based predictors use it between the times of a non-uniform grid.
        """
        alpha, std = self.marginal_coeffs(t)
        alpha_n, std_n = self.marginal_coeffs(t_next)
        data = _f64(t_next) == 0
        alpha_n = torch.where(data, torch.ones_like(alpha_n), alpha_n)
        std_n = torch.where(data, torch.zeros_like(std_n), std_n)
        ratio = alpha / alpha_n
        return ratio, (std.square() - ratio.square() * std_n.square()).clamp(min=0.0), std, std_n

    def ancestral_step(self, x: Tensor, t: Tensor, score: Tensor, t_next: Optional[Tensor] = None,
                       variance: Optional[str] = None) -> Tuple[Tensor, Tensor]:
        """Mean and noise std of one ancestral step from level i(t) down to i - 1 (or, given
        t_next, from t down to t_next along the kernel: `transition_between`).

        Reverses x_i = r x_{i-1} + sqrt(q) z: by Tweedie's formula for this Gaussian step,
        E[x_{i-1} | x_i] = (x_i + q score) / r (Ho et al. 2020 Alg. 2 with s = -eps/std_i; Song et
        al. 2021 eq. 47 for VE). The noise std follows `variance` ("transition": the step's own, DDPM's
        beta_i; "posterior": DDPM's beta~_i), by default the SDE's `ancestral_variance`.

        Returns:
          x_mean (shape of x) and noise std (B,) in x's dtype.
        """
        if t_next is None:
            i = self.discrete_index(t)
            ratio, var = self.transition_coeffs(i)
            s, s_prev = self.discrete_marginal_coeffs(i)[1], self.discrete_marginal_coeffs(i - 1)[1]
        else:
            ratio, var, s, s_prev = self.transition_between(t, t_next)
        x_mean = (x + batch_broadcast(var, x) * score) / batch_broadcast(ratio, x)
        if (self.ancestral_variance if variance is None else variance) == "transition":
            noise_var = var
        else:  # Var[x_{i-1} | x_i, x_0] = var std_{i-1}^2 / std_i^2 (DDPM's beta-tilde form)
            noise_var = var * s_prev.square() / s.square()
        return x_mean, noise_var.sqrt().to(x.dtype)

    def langevin_scale(self, t: Tensor) -> Tensor:
        """The factor alpha_i of the official Langevin step size (VP: 1 - beta_i; VE: 1); (B,)."""
        ratio, _ = self.transition_coeffs(self.discrete_index(t))
        return ratio.square()

    def check_chain(self) -> None:
        """Raise ValueError unless every step of the N-level chain is a valid Gaussian step."""
        ratio, var = self.transition_coeffs(torch.arange(self.N))
        if not bool(torch.isfinite(ratio).all() and (ratio > 0).all() and torch.isfinite(var).all()):
            raise ValueError(
                f"N={self.N}: the {type(self).__name__} chain of N levels is invalid (a step's beta_i "
                f">= 1); use more levels (for VP: N > beta_max) or a continuous-time sampler "
                f"(euler_maruyama without corrector, ode, ddim, dpm_solver)")

    def with_num_levels(self, N: int) -> "SDE":
        """The same SDE with an N-level discretisation (N steps for the discrete predictors)."""
        if N == self.N:
            return self
        return type(self)(**{**self.constructor_kwargs(), "N": N})

    def __repr__(self) -> str:
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.constructor_kwargs().items())
        except TypeError:  # a repr must not raise; with_num_levels reports the problem
            args = f"N={self.N}, ..."
        return f"{type(self).__name__}({args})"


class VPSDE(SDE):
    """Variance-preserving SDE, eq. 11: dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw.

    beta(t) = beta_min + t (beta_max - beta_min) is DDPM's linear schedule in continuous time;
    the N-level chain has DDPM's beta_i = beta_min/N + i (beta_max - beta_min) / (N (N-1)), so
    `VPSDE(0.1, 20, 1000)` has beta_1 = 1e-4 ... beta_1000 = 0.02 (Ho et al. 2020).

    A new schedule is a subclass that overrides `beta(t)` and `log_mean_coeff(t)` (both, or the
    constructor raises TypeError). Its chain is made of the schedule's exact one-level
    transitions, beta_i = 1 - alpha_bar(t_i) / alpha_bar(t_i - dt) with dt = T / (N - 1), so
    `log_mean_coeff` must also be defined one level below t = 0 (the step into level 0).

    Network time labels (official): continuous 999 t; discrete the DDPM timestep i(t).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max={beta_max} must be >= beta_min={beta_min}")
        own = {name: getattr(type(self), name) is not getattr(VPSDE, name)
               for name in ("beta", "log_mean_coeff")}
        if own["beta"] != own["log_mean_coeff"]:
            new, missing = ("beta", "log_mean_coeff") if own["beta"] else ("log_mean_coeff", "beta")
            raise TypeError(
                f"{type(self).__name__} overrides {new}(t) but not {missing}(t): a VP schedule is "
                f"the pair beta(t), log alpha(t) = -1/2 int_0^t beta; override both")
        self._linear_schedule = not own["beta"]

    @functools.cached_property
    def discrete_betas(self) -> Tensor:
        """beta_i of the N-level chain, i = 0..N-1: (N,) float64, computed on first use."""
        return self._discrete_betas()

    @functools.cached_property
    def alphas_cumprod(self) -> Tensor:
        """alpha_bar_i = prod_{j <= i} (1 - beta_j): (N,) float64."""
        return torch.cumprod(1.0 - self.discrete_betas, dim=0)

    def _discrete_betas(self) -> Tensor:
        if self._linear_schedule:  # DDPM's betas (Ho et al. 2020: linspace(1e-4, 0.02, 1000))
            return torch.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N, dtype=torch.float64)
        t = self.discrete_time(torch.arange(self.N))
        dt = self.T / max(self.N - 1, 1)
        # 1 - alpha_bar(t) / alpha_bar(t - dt) = -expm1(2 (log alpha(t) - log alpha(t - dt)))
        return -torch.expm1(2.0 * (self.log_mean_coeff(t) - self.log_mean_coeff(t - dt)))

    # beta(t) and log alpha(t) = -1/2 int_0^t beta(s) ds define a VP SDE; subclasses change them.
    def beta(self, t: Tensor) -> Tensor:
        """beta(t), float64 (B,)."""
        return self.beta_min + _f64(t) * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        """log alpha(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min (eq. 33), float64."""
        t = _f64(t)
        return -0.25 * t.square() * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return self.beta(t).sqrt()

    def marginal_coeffs(self, t):
        log_alpha = self.log_mean_coeff(t)
        # std^2 = 1 - alpha^2 = -expm1(2 log alpha): no cancellation at small t.
        return log_alpha.exp(), torch.sqrt(-torch.expm1(2.0 * log_alpha))

    @property
    def prior_std(self) -> float:
        return 1.0

    def _level_alpha_bar(self, i: Tensor) -> Tensor:
        ab = self.alphas_cumprod.to(i.device)
        return torch.where(i >= 0, ab[i.clamp(min=0)], torch.ones((), dtype=ab.dtype, device=i.device))

    def discrete_marginal_coeffs(self, i):
        ab = self._level_alpha_bar(i)
        return ab.sqrt(), (1.0 - ab).sqrt()

    def transition_coeffs(self, i):
        # Directly from beta_i: exact in floating point (no difference of near-equal numbers).
        beta = self.discrete_betas.to(i.device)[i]
        return torch.sqrt(1.0 - beta), beta

    def network_time_label(self, t, discrete=False):
        if discrete:
            # The DDPM timestep i(t) itself (the official code passes t (N - 1) unrounded, which
            # on its sampling grid is off the integer timestep by up to eps (N - 1)).
            return self.discrete_index(t).to(torch.float64)
        return 999.0 * _f64(t)


class CosineVPSDE(VPSDE):
    """VP SDE with the cosine schedule of Nichol & Dhariwal (2021) in continuous time.

    alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0)), phi(t) = (t + s) / (1 + s) * pi / 2, so
    beta(t) = -d log alpha_bar / dt = pi / (1 + s) * tan(phi(t)). beta diverges at t = 1, so the
    process ends at T < 1 (default 0.9946, where alpha_bar ~ 7e-5, as in DPM-Solver's cosine
    schedule). The chain's beta_i are the exact one-level transitions of every VP schedule but
    DDPM's (see `VPSDE`), clipped at `max_beta` = 0.999 as Nichol & Dhariwal do.
    """

    def __init__(self, s: float = 0.008, T: float = 0.9946, N: int = 1000, max_beta: float = 0.999):
        if not (0.0 < T < 1.0):
            raise ValueError(f"T={T!r}: the cosine schedule needs 0 < T < 1 (beta(1) is infinite)")
        self.s = check_positive("s", s)
        self._T = float(T)
        self.max_beta = float(max_beta)
        self._phi0 = 0.5 * math.pi * self.s / (1.0 + self.s)
        super().__init__(beta_min=self.beta(torch.zeros(1)).item(), beta_max=self.beta(torch.full((1,), T)).item(), N=N)

    @property
    def T(self):
        return self._T

    def _phi(self, t):
        return 0.5 * math.pi * (_f64(t) + self.s) / (1.0 + self.s)

    def beta(self, t):
        return math.pi / (1.0 + self.s) * torch.tan(self._phi(t))

    def log_mean_coeff(self, t):
        # log(cos(phi0 + d) / cos(phi0)) = log1p(cos d - 1 - tan(phi0) sin d), d = phi(t) - phi0.
        d = self._phi(t) - self._phi0
        return torch.log1p(-2.0 * torch.sin(0.5 * d).square() - math.tan(self._phi0) * torch.sin(d))

    def _discrete_betas(self):
        return super()._discrete_betas().clamp(0.0, self.max_beta)


class subVPSDE(VPSDE):
    """Sub-VP SDE, eq. 12: dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw.

    Same alpha(t) as VP, std(t) = 1 - alpha(t)^2 (eq. 29): the variance stays below VP's. The
    chain's levels use DDPM's alpha_bar_i: (alpha_i, std_i) = (sqrt(alpha_bar_i), 1 - alpha_bar_i).
    Time labels as VP.
    """

    def diffusion(self, t):
        # 1 - exp(-2 int beta) = 1 - alpha^4 = -expm1(4 log alpha)
        return torch.sqrt(self.beta(t) * -torch.expm1(4.0 * self.log_mean_coeff(t)))

    def marginal_coeffs(self, t):
        log_alpha = self.log_mean_coeff(t)
        return log_alpha.exp(), -torch.expm1(2.0 * log_alpha)

    def discrete_marginal_coeffs(self, i):
        ab = self._level_alpha_bar(i)
        return ab.sqrt(), 1.0 - ab

    def transition_coeffs(self, i):
        # var = std_i^2 - (1 - beta) std_{i-1}^2 with u = 1 - alpha_bar_{i-1}, written without
        # cancellation: beta u (2 - u) + beta^2 (1 - u)^2.
        beta = self.discrete_betas.to(i.device)[i]
        u = 1.0 - self._level_alpha_bar(i - 1)
        return torch.sqrt(1.0 - beta), beta * u * (2.0 - u) + beta.square() * (1.0 - u).square()


class VESDE(SDE):
    """Variance-exploding SDE, eq. 9: dx = sqrt(d sigma^2(t) / dt) dw.

    sigma(t) = sigma_min (sigma_max / sigma_min)^t, so g(t) = sigma(t) sqrt(2 log(sigma_max /
    sigma_min)). As in the official code, `marginal_prob` returns std = sigma(t), which is
    sigma_min (not 0) at t = 0: it is the kernel of data pre-blurred by N(0, sigma_min^2 I), and
    every density at time t here is that of the blurred data. The chain has SMLD's (NCSN's)
    geometric sigma_i = sigma(t_i), i = 0..N-1, and sigma_{-1} = 0 (Song & Ermon 2019).

    Network time labels (official): continuous sigma(t); discrete the NCSN sigma index
    round((T - t)(N - 1) / T), 0 for the largest sigma.
    """

    ancestral_variance = "posterior"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        super().__init__(N)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max={sigma_max} must be > sigma_min={sigma_min}")
        self.discrete_sigmas = torch.exp(
            torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), N, dtype=torch.float64)
        )

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _f64(t)

    def drift_coeff(self, t):
        return torch.zeros_like(_f64(t))

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def marginal_coeffs(self, t):
        return torch.ones_like(_f64(t)), self.sigma(t)

    @property
    def prior_std(self):
        return self.sigma_max

    def discrete_marginal_coeffs(self, i):
        sig = self.discrete_sigmas.to(i.device)
        std = torch.where(i >= 0, sig[i.clamp(min=0)], torch.zeros((), dtype=sig.dtype, device=i.device))
        return torch.ones_like(std), std

    def network_time_label(self, t, discrete=False):
        if discrete:
            return torch.round((self.T - _f64(t)) * (self.N - 1) / self.T)
        return self.sigma(t)


class LinearInterpolantSDE(SDE):
    """The linear interpolant of flow matching and rectified flow, x_t = (1 - t) x_0 + t z
    (Lipman et al. 2023, eq. 22 with sigma_min = 0; Liu et al. 2023), as an SDE.

    From the kernel alpha(t) = 1 - t, std(t) = t: the drift is f = c(t) x with c = alpha' / alpha
    = -1 / (1 - t), and g(t)^2 = d std^2 / dt - 2 c std^2 = 2 t / (1 - t) (Sarkka & Solin eq.
    5.51), so its probability flow f - g^2 / 2 score is the flow-matching velocity E[z - x_0 | x_t].
    c(t) diverges at t = 1, so the process ends at T < 1 (default 0.999, alpha(T) = 1e-3); the
    prior is N(0, T^2 I). The chain's levels are the kernel at t_i = i T / (N - 1) (level 0 is
    the data itself). Time labels: continuous 999 t, discrete the level i(t), as VP.
    """

    def __init__(self, T: float = 0.999, N: int = 1000):
        if not (0.0 < T < 1.0):
            raise ValueError(f"T={T!r}: the linear interpolant needs 0 < T < 1 (its drift -x / (1 - t)"
                             f" is infinite at t = 1)")
        super().__init__(N)
        self._T = float(T)

    @property
    def T(self):
        return self._T

    def drift_coeff(self, t):
        return -1.0 / (1.0 - _f64(t))

    def diffusion(self, t):
        t = _f64(t)
        return torch.sqrt(2.0 * t / (1.0 - t))

    def marginal_coeffs(self, t):
        t = _f64(t)
        return 1.0 - t, t.clone()

    @property
    def prior_std(self):
        return self._T

    def discrete_marginal_coeffs(self, i):
        t = torch.where(i >= 0, self.discrete_time(i), torch.zeros((), dtype=torch.float64, device=i.device))
        return self.marginal_coeffs(t)

    def network_time_label(self, t, discrete=False):
        if discrete:
            return self.discrete_index(t).to(torch.float64)
        return 999.0 * _f64(t)


class EDMVESDE(SDE):
    """EDM's process, sigma(t) = t with s(t) = 1 (Karras et al. 2022, Sec. 4 and Table 1):
    dx = sqrt(2 t) dw, kernel N(x_0, t^2 I), on [0, T = sigma_max] (80 in EDM).

    Unlike VESDE, std(0) = 0: the kernel at t = 0 is the data itself. The chain's levels are
    sigma_i = t_i = i T / (N - 1) (level 0 is the data). Time labels: continuous sigma = t,
    discrete the NCSN-style index round((T - t)(N - 1) / T), as VE.
    """

    ancestral_variance = "posterior"

    def __init__(self, sigma_max: float = 80.0, N: int = 1000):
        super().__init__(N)
        self.sigma_max = check_positive("sigma_max", sigma_max)

    @property
    def T(self):
        return self.sigma_max

    def drift_coeff(self, t):
        return torch.zeros_like(_f64(t))

    def diffusion(self, t):
        return torch.sqrt(2.0 * _f64(t))

    def marginal_coeffs(self, t):
        t = _f64(t)
        return torch.ones_like(t), t.clone()

    @property
    def prior_std(self):
        return self.sigma_max

    def discrete_marginal_coeffs(self, i):
        std = torch.where(i >= 0, self.discrete_time(i), torch.zeros((), dtype=torch.float64, device=i.device))
        return torch.ones_like(std), std

    def network_time_label(self, t, discrete=False):
        if discrete:
            return torch.round((self.T - _f64(t)) * (self.N - 1) / self.T)
        return _f64(t)


SDES = {"vpsde": VPSDE, "subvpsde": subVPSDE, "vesde": VESDE, "cosine_vpsde": CosineVPSDE,
        "linear": LinearInterpolantSDE, "edm_vesde": EDMVESDE}


def build_sde(name: str, **kwargs) -> SDE:
    """Build an SDE by its registry name (`SDES`), e.g. build_sde("vpsde", beta_max=20.)."""
    key = name.lower()
    if key not in SDES:
        raise ValueError(f"unknown SDE {name!r}; valid names: {sorted(SDES)}")
    return SDES[key](**kwargs)
