"""Consistency models (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models").

Written for any kernel N(alpha x_0, std^2 I) in the scaled state y = x / alpha and the noise level
sigma = std / alpha, where the probability flow is the EDM ODE dy/dsigma = (y - D(y, sigma)) / sigma
(D: Tweedie's x0). A consistency function maps every point of a trajectory to its end at
sigma_min = sigma(eps):
    f(y, sigma) = c_skip(sigma) y + c_out(sigma) F(x, t)                          (paper eq. 5)
    c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2),
    c_out  = sigma_data (sigma - sigma_min) / sqrt(sigma_data^2 + sigma^2)        (App. C)
so f(y, sigma_min) = y exactly (the boundary condition). Training (Alg. 2, 3): pairs of adjacent
levels sigma_n < sigma_(n+1) of a Karras grid of N(k) levels, y_(n+1) = x + sigma_(n+1) z, and
y_n from one Euler step of the teacher's ODE (consistency distillation) or y_n = x + sigma_n z
(consistency training); loss = mean ||f(y_(n+1), sigma_(n+1)) - f_target(y_n, sigma_n)||^2 with
the target an EMA of f's weights (decay mu(k) for training, eq. 7 / App. C).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .utils import batch_broadcast, check_positive_int, randn_like

Tensor = torch.Tensor


def noise_level(sde, t: Tensor) -> Tensor:
    """sigma(t) = std(t) / alpha(t), float64 (B,)."""
    alpha, std = sde.marginal_coeffs(t)
    return std / alpha


def boundary_coeffs(sigma: Tensor, sigma_min: Tensor, sigma_data: float):
    """(c_skip, c_out) of the boundary parameterisation (App. C), shapes of sigma."""
    c_skip = sigma_data**2 / ((sigma - sigma_min).square() + sigma_data**2)
    c_out = sigma_data * (sigma - sigma_min) / torch.sqrt(sigma_data**2 + sigma.square())
    return c_skip, c_out


class ConsistencyFunction:
    """f(x, t) -> the trajectory's end y at sigma_min (B, ...), from a network net(x, labels).

    Args:
      net: callable net(x, labels) -> tensor shaped like x (the free-form F of eq. 5), labels the
        SDE's time labels (`SDE.network_time_label`).
      sde: the forward SDE.
      eps: the smallest time; sigma_min = sigma(eps), where f(x, eps) = x / alpha(eps) exactly.
      sigma_data: the data's std in c_skip / c_out (0.5 in the paper for images in [-1, 1]).
    """

    def __init__(self, net: Callable, sde, eps: float = 1e-3, sigma_data: float = 0.5):
        self.net, self.sde, self.eps, self.sigma_data = net, sde, float(eps), float(sigma_data)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        alpha = self.sde.marginal_coeffs(t)[0]
        sigma = noise_level(self.sde, t)
        sigma_min = noise_level(self.sde, torch.full_like(t, self.eps))
        c_skip, c_out = boundary_coeffs(sigma, sigma_min, self.sigma_data)
        out = self.net(x, self.sde.network_time_label(t).to(x.dtype))
        y = x / batch_broadcast(alpha, x)
        return batch_broadcast(c_skip, x) * y + batch_broadcast(c_out, x) * out

    def as_score(self) -> Callable[[Tensor, Tensor], Tensor]:
        """score(x, t) whose Tweedie x0 (x + std^2 s) / alpha is f(x, t): how the samplers
        (`method="consistency"`) read a consistency model."""
        def score_fn(x, t):
            alpha, std = self.sde.marginal_coeffs(t)
            return (batch_broadcast(alpha, x) * self(x, t) - x) / batch_broadcast(std.square(), x)
        return score_fn


def n_schedule(k: int, K: int, s0: int = 2, s1: int = 150) -> int:
    """N(k), the number of levels at training step k of K (App. C):
    ceil(sqrt(k / K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1."""
    return math.ceil(math.sqrt(k / K * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1) + 1


def target_decay(k: int, K: int, mu0: float = 0.9, s0: int = 2, s1: int = 150) -> float:
    """mu(k) = exp(s0 log(mu0) / N(k)), the target network's EMA decay (App. C)."""
    return math.exp(s0 * math.log(mu0) / n_schedule(k, K, s0, s1))


def karras_levels(sigma_min: float, sigma_max: float, N: int, rho: float = 7.0) -> Tensor:
    """N noise levels, increasing: (sigma_min^(1/rho) + i/(N-1) (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho,
    float64 (N,) (Karras et al. 2022, eq. 5; consistency models, sec. 3)."""
    check_positive_int("N", N)
    frac = torch.linspace(0.0, 1.0, N, dtype=torch.float64)
    return (sigma_min ** (1 / rho) + frac * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho


def consistency_loss(f: ConsistencyFunction, target: ConsistencyFunction, x: Tensor, *, N: int,
                     teacher_score: Optional[Callable] = None, rho: float = 7.0,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """Per-example loss (B,) of consistency distillation (Alg. 2; `teacher_score` given, one Euler
    step of its probability flow) or consistency training (Alg. 3; no teacher) over N levels.

    x (B, ...) are data; the levels run from sigma(eps) to sigma(T) (`karras_levels`); the pair
    n ~ U{0..N-2} and (n + 1) share one noise z. Distance: mean squared error over dimensions.
    """
    sde = f.sde
    T = torch.full((1,), sde.T, dtype=torch.float64)
    sigma_min = noise_level(sde, torch.full((1,), f.eps, dtype=torch.float64)).item()
    levels = karras_levels(sigma_min, noise_level(sde, T).item(), N, rho)
    n = torch.randint(N - 1, (x.shape[0],), generator=generator)
    sigma, sigma_next = levels[n].to(x.device), levels[n + 1].to(x.device)
    t = sde.time_from_log_snr(-torch.log(sigma)).to(x.dtype)
    t_next = sde.time_from_log_snr(-torch.log(sigma_next)).to(x.dtype)
    t[n == 0] = f.eps  # the bisection's last digits aside, level 0 is eps itself
    z = randn_like(x, generator)
    y_next = x + batch_broadcast(sigma_next, x) * z
    alpha_next = sde.marginal_coeffs(t_next)[0]
    x_next = batch_broadcast(alpha_next, x) * y_next
    with torch.no_grad():
        if teacher_score is None:
            y = x + batch_broadcast(sigma, x) * z
        else:  # Euler step of dy/dsigma = (y - D) / sigma from sigma_next down to sigma
            alpha_n, std_n = sde.marginal_coeffs(t_next)
            D = (x_next + batch_broadcast(std_n.square(), x) * teacher_score(x_next, t_next)) / batch_broadcast(alpha_n, x)
            y = y_next + batch_broadcast((sigma - sigma_next) / sigma_next, x) * (y_next - D)
        alpha = sde.marginal_coeffs(t)[0]
        goal = target(batch_broadcast(alpha, x) * y, t)
    return (f(x_next, t_next) - goal).square().reshape(x.shape[0], -1).mean(1)
