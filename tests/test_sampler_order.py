"""Each sampler's error falls with the step count at the order it promises (Gaussian data, exact score).

For data N(mu, v) every SDE here keeps p_t Gaussian and the exact score linear, so:
  * deterministic samplers are affine maps x_T -> a x_T + b, measured exactly from two inputs and
    compared with the exact probability-flow map;
  * stochastic samplers are compared by their output mean and variance (Monte Carlo on 1-D data,
    errors asserted to be many standard errors above the Monte-Carlo noise).
"""
import math

import pytest
import torch

from sde_lib import VESDE, VPSDE, GaussianMixture, subVPSDE
from sde_lib.sampling import sample

MU, V = 0.8, 0.5


def gaussian():
    return GaussianMixture([1.0], [[MU]], [[[V]]])


def gaussian_score(sde):
    """The exact score of N(mu, v) data at time t, written out (cheaper than the oracle)."""
    def score_fn(x, t):
        alpha, std = sde.marginal_coeffs(t)
        alpha, var = alpha.to(x.dtype)[:, None], (alpha**2 * V + std**2).to(x.dtype)[:, None]
        return -(x - alpha * MU) / var
    return score_fn


def exact_flow_map(sde, t_from, t_to):
    """Probability-flow map of N(mu, v) data from t_from to t_to: x -> a x + b."""
    (a0, s0), (a1, s1) = (
        (c.item() for c in sde.marginal_coeffs(torch.tensor([t], dtype=torch.float64))) for t in (t_from, t_to)
    )
    scale = math.sqrt((a1**2 * V + s1**2) / (a0**2 * V + s0**2))
    return scale, a1 * MU - scale * a0 * MU


def observed_order(errors, Ns):
    return [math.log(errors[i] / errors[i + 1]) / math.log(Ns[i + 1] / Ns[i]) for i in range(len(Ns) - 1)]


@pytest.mark.parametrize("sde_cls", [VPSDE, subVPSDE, VESDE])
@pytest.mark.parametrize(
    "method, options, order",
    [
        ("ddim", dict(eta=0.0, schedule="uniform"), 1),
        ("ddim", dict(eta=0.0, schedule="logsnr"), 1),
        ("dpm_solver", dict(order=1), 1),
        ("dpm_solver", dict(order=2), 2),
        ("ode", dict(solver="euler"), 1),
        ("ode", dict(solver="heun"), 2),
        ("ode", dict(solver="rk4"), 4),
    ],
)
def test_deterministic_samplers_converge_at_their_order(sde_cls, method, options, order):
    sde = sde_cls() if sde_cls is not VESDE else VESDE(sigma_max=5.0)
    gm, eps = gaussian(), 1e-2
    a_star, b_star = exact_flow_map(sde, sde.T, eps)
    Ns = [8, 16, 32, 64] if order < 4 else [4, 8, 16]
    errors = []
    for N in Ns:
        x_T = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
        out, _ = sample(sde, gm.score_fn(sde), (2, 1), method=method, N=N, eps=eps, denoise=False,
                        x_T=x_T, dtype=torch.float64, **options)
        a, b = (out[1] - out[0]).item(), out[0].item()
        errors.append(abs(a - a_star) + abs(b - b_star))
    orders = observed_order(errors, Ns)
    # The asymptotic order shows in the last ratios; allow the usual pre-asymptotic drift.
    assert abs(orders[-1] - order) < 0.35 * order, (errors, orders)


class UnitNoise:
    """Replaces the samplers' Gaussian draws: draw k is 1 in batch row 2 + k and 0 elsewhere.

    The samplers are affine in (x_T, noise) when the score is linear, so with rows 0 and 1
    started from x_T = 0 and 1 and no noise, row 2 + k - row 0 is the output's response c_k to
    the k-th noise draw: the output mean and variance follow exactly, with no Monte Carlo.
    """

    def __init__(self):
        self.calls = 0

    def __call__(self, shape, generator=None, device=None, dtype=torch.float32):
        z = torch.zeros(shape, dtype=dtype, device=device)
        z[2 + self.calls] = 1.0
        self.calls += 1
        return z


def exact_output_moments(monkeypatch, sde, method, N, options):
    noise = UnitNoise()
    monkeypatch.setattr("sde_lib.utils.randn", noise)
    B = 2 + N + 1  # at most one draw per step (no corrector), plus spare rows
    x_T = torch.zeros(B, 1, dtype=torch.float64)
    x_T[1] = 1.0
    # Chain-based predictors converge only if their grid ends at the chain's first level.
    levels = options.get("predictor") in ("reverse_diffusion", "ancestral_sampling") and "schedule" not in options
    eps = sde.with_num_levels(N).chain_end_time() if levels else 1e-3
    out, _ = sample(sde, gaussian_score(sde), (B, 1), method=method, N=N, eps=eps, denoise=False,
                    x_T=x_T, dtype=torch.float64, **options)
    assert noise.calls <= N
    a, b = (out[1] - out[0]).item(), out[0].item()
    c = out[2:2 + noise.calls, 0] - out[0, 0]
    # x_T drawn from the true p_T (not the prior), so that only the discretisation error remains.
    (alpha_T, std_T), = zip(*(c_.tolist() for c_ in sde.marginal_coeffs(torch.tensor([sde.T], dtype=torch.float64))))
    mean = a * alpha_T * MU + b
    var = a**2 * (alpha_T**2 * V + std_T**2) + (c**2).sum().item()
    return mean, var


@pytest.mark.parametrize(
    "sde_cls, method, options",
    [
        (VPSDE, "pc", dict(predictor="euler_maruyama", corrector="none")),
        (VPSDE, "pc", dict(predictor="reverse_diffusion", corrector="none")),
        (VPSDE, "pc", dict(predictor="ancestral_sampling", corrector="none")),
        (VPSDE, "ddim", dict(eta=1.0, schedule="uniform")),
        (subVPSDE, "pc", dict(predictor="euler_maruyama", corrector="none")),
        (subVPSDE, "pc", dict(predictor="reverse_diffusion", corrector="none")),
        (VESDE, "pc", dict(predictor="reverse_diffusion", corrector="none")),
        (VESDE, "pc", dict(predictor="ancestral_sampling", corrector="none")),
        (VPSDE, "pc", dict(predictor="reverse_diffusion", corrector="none", schedule="logsnr")),
        (subVPSDE, "pc", dict(predictor="ancestral_sampling", corrector="none", schedule="logsnr")),
    ],
)
def test_stochastic_samplers_converge_at_weak_order_one(monkeypatch, sde_cls, method, options):
    """Euler-type reverse-SDE samplers have weak order 1: moment errors halve as N doubles."""
    sde = sde_cls() if sde_cls is not VESDE else VESDE(sigma_max=5.0)
    # Continuous-time samplers end at t = 0, whose VE kernel still carries the sigma_min blur;
    # the chain-based ones end at the chain's level -1, the data itself.
    chain_based = options.get("predictor") in ("reverse_diffusion", "ancestral_sampling")
    target = gaussian() if chain_based else gaussian().marginal(sde, 0.0)
    m_star, v_star = target.means[0, 0].item(), target.covs[0, 0, 0].item()
    Ns = [100, 200, 400, 800]
    errors = []
    for N in Ns:
        mean, var = exact_output_moments(monkeypatch, sde, method, N, options)
        errors.append(abs(mean - m_star) / math.sqrt(v_star) + abs(var - v_star) / v_star)
    orders = observed_order(errors, Ns)
    assert abs(orders[-1] - 1.0) < 0.2, (errors, orders)
