"""Learned reverse variances and the discrete-time variational bound of the DDPM chain
(Nichol & Dhariwal 2021, "Improved DDPM"; Ho et al. 2020, Sec. 3).

The chain is an SDE's N-level discretisation, or a K-level subsequence of it ("respacing",
Nichol & Dhariwal 2021, Sec. 4): levels j_0 < ... < j_{K-1} of the N-level chain with the data as
level -1 (alpha = 1, std = 0). Step k goes from level j_{k-1} up to j_k:
    x_k = r_k x_{k-1} + sqrt(beta_k) z,   r_k = alpha_k / alpha_{k-1},
    beta_k = std_k^2 - r_k^2 std_{k-1}^2
(for VP: 1 - alpha_bar_k / alpha_bar_{k-1}, the respaced betas of improved DDPM), and
    beta~_k = beta_k std_{k-1}^2 / std_k^2      (Ho et al. 2020, eq. 7)
is the variance of q(x_{k-1} | x_k, x_0). The network's second output v interpolates the two in
the log domain (Nichol & Dhariwal 2021, eq. 15):
    log sigma_k^2 = v log beta_k + (1 - v) log beta~_k,
with log beta~_0 (= -inf, beta~_0 = 0) clipped to log beta~_1 as in their code.

The bound (Ho et al. 2020, eq. 5), in nats per example, is L = L_K + sum_{k>=1} L_{k-1} + L_0:
  L_K = KL(q(x_K | x_0) || p(x_K)), the prior term;
  L_{k-1} = KL(q(x_{k-1} | x_k, x_0) || p(x_{k-1} | x_k)), two Gaussians (closed form);
  L_0 = -log p(x_0 | x_1), the decoder: Ho et al. 2020 eq. 13's discretised Gaussian for 8-bit
        data scaled to [-1, 1], or a Gaussian density for continuous data.
(Here x_0 is the data and x_1 the first level, the paper's numbering; in code the data is x0.)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Tuple

import torch

from .score import NetworkScore
from .utils import batch_broadcast, check_choice, check_positive, check_positive_int, randn_like

Tensor = torch.Tensor

DECODERS = ("discretized", "gaussian")


@dataclasses.dataclass(frozen=True)
class Decoder:
    """The decoder p(x_0 | x_1) of L_0: "discretized" (Ho et al. 2020, eq. 13) for data of `bins`
    levels from `low` to `high`, or "gaussian", the continuous density (for continuous data)."""

    kind: str = "discretized"
    bins: int = 256
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self):
        check_choice("decoder", self.kind, DECODERS)
        if not (isinstance(self.bins, int) and self.bins >= 2 and self.low < self.high):
            raise ValueError(f"decoder: bins={self.bins!r} (an integer >= 2) from low={self.low} to high={self.high}"
                             " (low < high)")

    def log_likelihood(self, x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
        """log p(x) per coordinate, in nats (log-probability or log-density)."""
        if self.kind == "gaussian":
            return gaussian_log_likelihood(x, mean, log_scale)
        return discretized_gaussian_log_likelihood(x, mean, log_scale, self.bins, self.low, self.high)


def as_decoder(decoder) -> Decoder:
    """A `Decoder` from itself or its kind ("discretized": 8-bit data in [-1, 1])."""
    return decoder if isinstance(decoder, Decoder) else Decoder(kind=decoder)


LOG2 = math.log(2.0)


def respaced_levels(N: int, K: Optional[int] = None, first: int = 0) -> Tensor:
    """K levels of an N-level chain, evenly spaced from `first` to N - 1 and rounded (improved
    DDPM's `space_timesteps` with one section); K = None: all of them. (K,) long.

    Raises:
      ValueError: K not in [1, N - first].
    """
    if K is None:
        return torch.arange(first, N)
    K = check_positive_int("respace", K)
    if K > N - first:
        raise ValueError(f"respace={K}: a respaced chain keeps at most the {N - first} noisy levels of the"
                         f" trained chain of N={N}; use respace <= {N - first}")
    if K == 1:
        return torch.tensor([N - 1])
    return torch.unique(torch.round(torch.linspace(first, N - 1, K, dtype=torch.float64)).long())


def noisy_levels_start(sde) -> int:
    """The first level of the SDE's N-level chain with std > 0; the levels before it are the data
    itself (the cosine chain's level 0 sits at t = 0, where its beta is 0)."""
    std = sde.discrete_marginal_coeffs(torch.arange(sde.N))[1]
    return int((std == 0).long().cumprod(0).sum())


def interpolated_log_variance(v: Tensor, log_beta: Tensor, log_beta_tilde: Tensor) -> Tensor:
    """log sigma^2 = v log beta + (1 - v) log beta~ (Nichol & Dhariwal 2021, eq. 15).

    v is the network's variance output (no constraint is applied, as in the paper; v = 1 gives
    beta, v = 0 gives beta~); log_beta, log_beta_tilde are broadcast against v.
    """
    return v * log_beta + (1.0 - v) * log_beta_tilde


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per coordinate, in nats (broadcasting)."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2).square() * torch.exp(-logvar2) - 1.0)


def _log_prob_between(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Phi(hi) - Phi(lo)) for finite lo < hi, accurate in both tails (reflected into the lower
    one)."""
    flip = (lo + hi) > 0
    lo, hi = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(log_lo - log_hi).clamp(max=1.0 - 1e-15))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor, bins: int = 256,
                                        low: float = -1.0, high: float = 1.0) -> Tensor:
    """log p(x) of the discretised Gaussian decoder (Ho et al. 2020, eq. 13), per coordinate.

    x holds data of `bins` levels evenly spaced from `low` to `high` (8-bit images scaled to
    [-1, 1]: -1 + 2 m / 255); each value owns the bin x +- (high - low) / (2 (bins - 1)), the end
    bins extended to -inf and +inf. log_scale is the log standard deviation. Computed in float64
    (every branch finite, so that gradients are too); returns nats in x's dtype, the shape of the
    broadcast inputs.
    """
    dtype = torch.promote_types(x.dtype, mean.dtype)
    x, mean, log_scale = x.double(), mean.double(), log_scale.double()
    half = 0.5 * (high - low) / (bins - 1)
    inv = torch.exp(-log_scale)
    lo, hi = (x - half - mean) * inv, (x + half - mean) * inv
    inner = _log_prob_between(lo, hi)
    first = torch.special.log_ndtr(hi)    # P(z < hi): the bin of `low`
    last = torch.special.log_ndtr(-lo)    # P(z > lo): the bin of `high`
    out = torch.where(x < low + 0.5 * half, first, torch.where(x > high - 0.5 * half, last, inner))
    return out.to(dtype)


def gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log N(x; mean, e^{2 log_scale}) per coordinate, in nats (the decoder for continuous data)."""
    return -0.5 * (math.log(2 * math.pi) + 2.0 * log_scale + (x - mean).square() * torch.exp(-2.0 * log_scale))


class DiscreteChain:
    """The K-level (respaced) chain of an SDE's N-level discretisation, float64 coefficients.

    Args:
      sde: any SDE of this library (its `discrete_marginal_coeffs`, `transition_coeffs`,
        `discrete_time`, `prior_std`); its N is the trained number of levels.
      respace: K, the number of kept levels (`respaced_levels`); None: all N, whose steps are
        then the SDE's own `transition_coeffs` (DDPM's beta_i exactly). Levels with std = 0 at
        the start of the chain are the data and are left out (`noisy_levels_start`).

    Attributes ((K,) float64 unless said): levels (K,) long, the kept levels of the N-level
      chain; times, their times t_j; alpha, std the kernel at them; ratio r_k, beta (beta_k),
      beta_tilde (beta~_k), log_beta, log_beta_tilde_clipped (k = 0 takes k = 1's value), the
      posterior mean coefficients coef_x0, coef_xt (Ho et al. 2020, eq. 7).
    """

    def __init__(self, sde, respace: Optional[int] = None):
        self.sde = sde
        first = noisy_levels_start(sde)
        if first >= sde.N:
            raise ValueError(f"{sde!r}: every level of the chain is noise-free; use more levels")
        self.levels = respaced_levels(sde.N, respace, first)
        self.K = len(self.levels)
        self.times = sde.discrete_time(self.levels)
        self.alpha, self.std = sde.discrete_marginal_coeffs(self.levels)
        prev = torch.cat([torch.full((1,), -1, dtype=torch.long), self.levels[:-1]])
        a_prev, s_prev = sde.discrete_marginal_coeffs(prev)
        if bool((self.levels == torch.arange(first, first + self.K)).all()):  # consecutive levels
            self.ratio, self.beta = sde.transition_coeffs(self.levels)
        else:
            self.ratio = self.alpha / a_prev
            self.beta = self.std.square() - self.ratio.square() * s_prev.square()
        var_prev = s_prev.square()
        self.beta_tilde = self.beta * var_prev / self.std.square()
        self.log_beta = torch.log(self.beta)
        clipped = self.beta_tilde.clone()
        clipped[0] = self.beta_tilde[1] if self.K > 1 else self.beta[0]
        self.log_beta_tilde_clipped = torch.log(clipped)
        self.coef_x0 = a_prev * self.beta / self.std.square()
        self.coef_xt = self.ratio * var_prev / self.std.square()

    def _at(self, c: Tensor, k: Tensor, x: Tensor) -> Tensor:
        return batch_broadcast(c.to(x.device)[k].to(x.dtype), x)

    def q_sample(self, x0: Tensor, k: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """x_k = alpha_k x0 + std_k z, k (B,) long chain indices."""
        return self._at(self.alpha, k, x0) * x0 + self._at(self.std, k, x0) * randn_like(x0, generator)

    def posterior(self, x0: Tensor, xt: Tensor, k: Tensor) -> Tuple[Tensor, Tensor]:
        """Mean and log variance (clipped at k = 0) of q(x_{k-1} | x_k, x0) (Ho et al. 2020, eq. 7);
        the mean shaped like x0, the log variance (B, 1, ...) broadcastable."""
        mean = self._at(self.coef_x0, k, x0) * x0 + self._at(self.coef_xt, k, x0) * xt
        return mean, self._at(self.log_beta_tilde_clipped, k, x0)

    def p_mean(self, xt: Tensor, k: Tensor, eps: Tensor) -> Tensor:
        """The model's mean (x_k - beta_k / std_k eps) / r_k (Ho et al. 2020, eq. 11; for VP,
        std_k = sqrt(1 - alpha_bar_k))."""
        return (xt - self._at(self.beta / self.std, k, xt) * eps) / self._at(self.ratio, k, xt)

    def p_log_variance(self, k: Tensor, v: Tensor) -> Tensor:
        """log sigma_k^2 of eq. 15 from the variance output v (shaped like x)."""
        return interpolated_log_variance(v, self._at(self.log_beta, k, v), self._at(self.log_beta_tilde_clipped, k, v))

    def prior_term(self, x0: Tensor) -> Tensor:
        """L_K = KL(q(x_K | x0) || N(0, prior_std^2 I)), nats per example (B,)."""
        k = torch.full((x0.shape[0],), self.K - 1, dtype=torch.long, device=x0.device)
        mean = self._at(self.alpha, k, x0) * x0
        logvar = torch.log(self._at(self.std.square(), k, x0)).expand_as(x0)
        zero = torch.zeros_like(x0)
        kl = normal_kl(mean, logvar, zero, zero + 2.0 * math.log(self.sde.prior_std))
        return kl.reshape(x0.shape[0], -1).sum(1)

    def term(self, x0: Tensor, xt: Tensor, k: Tensor, eps: Tensor, v: Tensor,
             decoder="discretized") -> Tensor:
        """L_{k-1} for k >= 1 (the Gaussian KL), L_0 = -log p(x0 | x_1) for k = 0 (the decoder: a
        `Decoder` or its kind); nats per example (B,). eps, v: the network's two outputs at
        (x_k, level j_k)."""
        decoder = as_decoder(decoder)
        mean_q, logvar_q = self.posterior(x0, xt, k)
        mean_p, logvar_p = self.p_mean(xt, k, eps), self.p_log_variance(k, v)
        out = normal_kl(mean_q, logvar_q.expand_as(x0), mean_p, logvar_p).reshape(x0.shape[0], -1).sum(1)
        first = k == 0
        if bool(first.any()):  # the decoder only where k = 0 (its tails have no gradient elsewhere)
            nll = -decoder.log_likelihood(x0[first], mean_p[first], 0.5 * logvar_p[first])
            out = out.masked_scatter(first, nll.reshape(nll.shape[0], -1).sum(1))
        return out


def vlb_terms(chain: DiscreteChain, model: Callable[[Tensor, Tensor], Tuple[Tensor, Tensor]], x0: Tensor, *,
              decoder="discretized", generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """All terms of the bound for a batch: (terms (B, K) with L_0 ... L_{K-1}, prior (B,)), nats.

    model(x_k, t) -> (eps, v), each shaped like x, at the level's time t (B,) (`DiscreteChain.times`);
    x_k is drawn afresh from q(x_k | x0) for each k (K network calls).
    """
    B = x0.shape[0]
    terms = []
    for k in range(chain.K):
        kk = torch.full((B,), k, dtype=torch.long, device=x0.device)
        xt = chain.q_sample(x0, kk, generator)
        eps, v = model(xt, chain.times[kk].to(device=x0.device, dtype=x0.dtype))
        terms.append(chain.term(x0, xt, kk, eps, v, decoder))
    return torch.stack(terms, 1), chain.prior_term(x0)


def vlb_bits_per_dim(chain: DiscreteChain, model, x0: Tensor, *, decoder="discretized",
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """The discrete-time variational bound (Ho et al. 2020, eq. 5) in bits/dim, per example (B,).

    For decoder="discretized" it bounds -log2 P of the 8-bit data (no dequantisation offset).
    """
    terms, prior = vlb_terms(chain, model, x0, decoder=decoder, generator=generator)
    dims = x0[0].numel()
    return (terms.sum(1) + prior) / (dims * LOG2)


def hybrid_loss(chain: DiscreteChain, model, x0: Tensor, *, lam: float = 1e-3, decoder="discretized",
                generator: Optional[torch.Generator] = None) -> Tensor:
    """L_hybrid = L_simple + lambda L_vlb (Nichol & Dhariwal 2021, eq. 16), per example (B,).

    One chain index k ~ U{0..K-1} per example: L_simple = mean over coordinates of ||eps -
    eps_theta||^2 (Ho et al. 2020, eq. 14), and L_vlb = K L_{k-1} in bits per coordinate (an
    unbiased estimate of the sum over steps; the prior term has no parameters), computed with the
    mean's output detached so that L_vlb trains the variance only (Sec. 3.1).
    """
    check_positive("lam", lam)
    B = x0.shape[0]
    k = torch.randint(0, chain.K, (B,), generator=generator,
                      device=generator.device if generator is not None else None).to(x0.device)
    z = randn_like(x0, generator)
    xt = chain._at(chain.alpha, k, x0) * x0 + chain._at(chain.std, k, x0) * z
    eps, v = model(xt, chain.times.to(x0.device)[k].to(x0.dtype))
    simple = (eps - z).square().reshape(B, -1).mean(1)
    vlb = chain.term(x0, xt, k, eps.detach(), v, decoder) / (x0[0].numel() * LOG2)
    return simple + lam * chain.K * vlb


class LearnedVarianceScore:
    """score_fn(x, t, y=None) of a network with two outputs (Nichol & Dhariwal 2021, Sec. 3.1).

    The network returns 2 C channels along dim 1 for data of C channels (C features for vectors):
    the first half is eps (Ho et al. 2020), turned into the score by `NetworkScore`; the second is
    v of eq. 15. Each call keeps v in `last_v`, so that a sampler reads the variance of the step
    it just took without another network call (`variance_output`); `last_eps` likewise.

    Args:
      net: callable net(x, labels[, y]) -> (B, 2 C, ...).
      sde, time_labels: as `NetworkScore` (the prediction is "eps").
    """

    def __init__(self, net: Callable, sde, time_labels: str = "continuous"):
        self.net = net
        self.sde = sde
        self.last_eps: Optional[Tensor] = None
        self.last_v: Optional[Tensor] = None
        self.score = NetworkScore(self._eps, sde, prediction="eps", time_labels=time_labels)

    def _eps(self, x: Tensor, labels: Tensor, y: Optional[Tensor] = None) -> Tensor:
        out = self.net(x, labels) if y is None else self.net(x, labels, y)
        self.last_eps, self.last_v = split_output(out)
        return self.last_eps

    def outputs(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """(eps, v) at (x, t), each shaped like x: the `model` of `vlb_terms` and `hybrid_loss`."""
        labels = self.sde.network_time_label(t, discrete=self.score.discrete)
        return self._eps(x, labels.to(x.dtype), y), self.last_v

    def __call__(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        return self.score(x, t, y)


def split_output(out: Tensor) -> Tuple[Tensor, Tensor]:
    """(eps, v): the two halves of a (B, 2 C, ...) network output along dim 1."""
    if out.shape[1] % 2:
        raise ValueError(f"a network with learned variances outputs 2 C channels; got {out.shape[1]}")
    return out.chunk(2, dim=1)


def find_learned_variance(score_fn) -> "LearnedVarianceScore":
    """The `LearnedVarianceScore` inside score_fn, which may be wrapped by objects that keep the
    wrapped function as `.score_fn` (`CountingScore`) or `.func` (functools.partial).

    Raises:
      ValueError: none inside.
    """
    f = score_fn
    while not isinstance(f, LearnedVarianceScore):
        f = getattr(f, "score_fn", None) or getattr(f, "func", None)
        if f is None:
            raise ValueError("variance='learned' needs the score of a network with a variance output"
                             " (sde_lib.learned_variance.LearnedVarianceScore; config.model.learned_variance"
                             " = True); use variance='transition' or 'posterior'")
    return f


def variance_output(score_fn) -> Tensor:
    """v of the last evaluation of the `LearnedVarianceScore` inside score_fn
    (`find_learned_variance`)."""
    return find_learned_variance(score_fn).last_v


def network_outputs(score_fn) -> Callable[[Tensor, Tensor], Tuple[Tensor, Tensor]]:
    """model(x, t) -> (eps, v) for `vlb_terms` and `hybrid_loss`, through score_fn (so that bound
    class labels and counting still apply): one call of score_fn, then its network's two outputs."""
    inner = find_learned_variance(score_fn)

    def model(x: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        score_fn(x, t)
        return inner.last_eps, inner.last_v
    return model


class HybridLoss:
    """loss(score_fn, x0, generator=...) -> (B,): `hybrid_loss` on the SDE's N-level chain for the
    score of a network with learned variances (a `LearnedVarianceScore`, maybe wrapped).

    Args:
      sde: the SDE (its N-level chain, `DiscreteChain`).
      lam: lambda of L_simple + lambda L_vlb (0.001, Nichol & Dhariwal 2021).
      decoder: L_0's `Decoder` (or its kind).
    """

    def __init__(self, sde, *, lam: float = 1e-3, decoder="discretized"):
        self.chain = DiscreteChain(sde)
        self.lam = check_positive("lam", lam)
        self.decoder = as_decoder(decoder)

    def __call__(self, score_fn, x0: Tensor, *, generator: Optional[torch.Generator] = None) -> Tensor:
        return hybrid_loss(self.chain, network_outputs(score_fn), x0, lam=self.lam, decoder=self.decoder,
                           generator=generator)
