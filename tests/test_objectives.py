"""Loss weightings and noise-level proposals chosen by name, against their definitions and
closed forms on Gaussian data with the exact score."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import norm

from sde_lib import EDMVESDE, VESDE, VPSDE, CosineVPSDE, GaussianMixture, LinearInterpolantSDE, subVPSDE
from sde_lib.losses import PROPOSALS, WEIGHTINGS, DenoisingScoreMatching, LogNormalTimeSampler

SDES = {"vp": VPSDE(), "subvp": subVPSDE(), "ve": VESDE(sigma_max=10.0), "cosine": CosineVPSDE(),
        "linear": LinearInterpolantSDE(), "edm_ve": EDMVESDE(sigma_max=20.0)}
LAMBDAS = np.array([0.01, 0.1, 0.5, 1.0, 2.0])  # eigenvalues of the data covariance
SD, GAMMA = 0.6, 5.0  # sigma_data, min-SNR gamma


def gaussian_data():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    return GaussianMixture([1.0], rng.normal(size=(1, 5)), (q @ np.diag(LAMBDAS) @ q.T)[None])


def eps_weight(name, sde, t):
    """Each weighting as a multiple of the eps-MSE ||std s + z||^2, from the papers' definitions:
    x0_hat - x0 = (std / alpha)(eps_hat - z) (Tweedie), v = alpha eps - std x0, EDM's
    lambda = (sigma^2 + sd^2) / (sigma sd)^2 on the x0 error, min(SNR, gamma) on the x0 error,
    and u_hat - u = (std' - std alpha' / alpha)(eps_hat - z) with std std' = c std^2 + g^2 / 2."""
    alpha, std = sde.marginal_coeffs(t)
    g2, snr, sigma = sde.diffusion(t) ** 2, (alpha / std) ** 2, std / alpha
    return {
        "eps": torch.ones_like(t),
        "likelihood": g2 / std**2,
        "x0": 1 / snr,
        "v": (alpha * (1 + 1 / snr)) ** 2,  # alpha + std^2 / alpha, squared
        "edm": (sigma**2 + SD**2) / (sigma * SD) ** 2 / snr,
        "min_snr": torch.clamp(snr, max=GAMMA) / snr,
        "flow": (g2 / (2 * std)) ** 2,
    }[name]


def expected_eps_mse(alpha, std):
    """E ||std s + z||^2 at one time = sum_j alpha^2 lam_j / (alpha^2 lam_j + std^2)."""
    return float(np.sum(alpha**2 * LAMBDAS / (alpha**2 * LAMBDAS + std**2)))


def _within(values, expected, k=4.5):
    se = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item() - expected) < k * se, (values.mean().item(), expected, se)


def loss(sde, weighting, proposal="uniform", **kw):
    return DenoisingScoreMatching(sde, weighting=weighting, proposal=proposal, reduce_mean=False,
                                  sigma_data=SD, min_snr_gamma=GAMMA, **kw)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("weighting", list(WEIGHTINGS))
def test_weightings_equal_their_definitions(name, weighting):
    """Per example, for any model (here the exact score plus an error), each loss is its weight
    times the eps-MSE."""
    sde, gm = SDES[name], gaussian_data()
    g = torch.Generator().manual_seed(0)
    n = 256
    x0 = gm.sample(n, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * (sde.T - 0.01) + 0.01
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    exact = gm.score_fn(sde)
    model = lambda x, t: exact(x, t) + 0.3 * torch.sin(x)
    ours = loss(sde, weighting)(model, x0, t=t, noise=z)
    eps_mse = loss(sde, "eps")(model, x0, t=t, noise=z)
    torch.testing.assert_close(ours, eps_weight(weighting, sde, t) * eps_mse, rtol=1e-9, atol=0)


def test_edm_loss_is_the_unit_weight_loss_of_its_network():
    """lambda(sigma) c_out(sigma)^2 = 1 (Karras et al. 2022, eq. 8 and Sec. 5): the EDM loss equals
    ||F_theta - F_target||^2 with F_target = (x0 - c_skip x / alpha) / c_out."""
    sde, gm = VPSDE(), gaussian_data()
    g = torch.Generator().manual_seed(5)
    n = 128
    x0 = gm.sample(n, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    alpha, std = (c[:, None] for c in sde.marginal_coeffs(t))
    sigma = std / alpha
    c_skip, c_out = SD**2 / (sigma**2 + SD**2), sigma * SD / torch.sqrt(sigma**2 + SD**2)
    x_t = alpha * x0 + std * z
    model = lambda x, t: gm.score(x, sde, t) + 0.2 * torch.cos(x)
    D = (x_t + std**2 * model(x_t, t)) / alpha
    F_model, F_target = (D - c_skip * x_t / alpha) / c_out, (x0 - c_skip * x_t / alpha) / c_out
    torch.testing.assert_close(loss(sde, "edm")(model, x0, t=t, noise=z),
                               (F_model - F_target).square().sum(1), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["vp", "ve", "linear"])
@pytest.mark.parametrize("weighting", list(WEIGHTINGS))
def test_loss_at_fixed_time_matches_closed_form(name, weighting):
    sde, gm = SDES[name], gaussian_data()
    n, t0 = 20_000, 0.3
    g = torch.Generator().manual_seed(1)
    x0 = gm.sample(n, generator=g, dtype=torch.float64)
    t = torch.full((n,), t0, dtype=torch.float64)
    values = loss(sde, weighting)(gm.score_fn(sde), x0, t=t, generator=g)
    alpha, std = (c.item() for c in sde.marginal_coeffs(t[:1]))
    _within(values, eps_weight(weighting, sde, t[:1]).item() * expected_eps_mse(alpha, std))


@pytest.mark.parametrize("weighting", list(WEIGHTINGS))
def test_exact_score_minimises_each_loss(weighting):
    """loss(s + delta) - loss(s) = w std^2 ||delta||^2 + a cross term of mean zero (Tweedie)."""
    sde, gm = VPSDE(), gaussian_data()
    n = 20_000
    g = torch.Generator().manual_seed(2)
    x0 = gm.sample(n, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    delta = torch.linspace(-0.3, 0.3, 5, dtype=torch.float64)
    exact = gm.score_fn(sde)
    objective = loss(sde, weighting)
    l0 = objective(exact, x0, t=t, noise=z)
    l1 = objective(lambda x, t: exact(x, t) + delta, x0, t=t, noise=z)
    excess = eps_weight(weighting, sde, t) * sde.marginal_std(t) ** 2 * delta.square().sum()
    assert bool((excess > 0).all())
    _within((l1 - l0 - excess) / eps_weight(weighting, sde, t), 0.0)


@pytest.mark.parametrize("name", ["vp", "cosine"])
def test_lognormal_proposal_draws_edm_sigmas(name):
    """sigma(t) = std / alpha of the drawn times is log-normal(P_mean, P_std) (Karras et al. 2022)."""
    sde = SDES[name]
    n, P_mean, P_std = 20_000, -1.2, 1.2
    t = LogNormalTimeSampler(sde, 1e-5, P_mean, P_std).sample(n, generator=torch.Generator().manual_seed(3))
    alpha, std = sde.marginal_coeffs(t)
    u = (torch.log(std / alpha) - P_mean) / P_std
    z_max = 0
    for q in (-2.0, -1.0, 0.0, 0.5, 1.5):
        p = norm.cdf(q)
        frac = (u < q).double().mean().item()
        z_max = max(z_max, abs(frac - p) / math.sqrt(p * (1 - p) / n))
    assert z_max < 4.5


def test_edm_objective_with_lognormal_proposal_matches_closed_form():
    """E_{ln sigma ~ N}[lambda(sigma) ||D - x0||^2] with the exact denoiser: for a Gaussian,
    sum_j lam_j / (lam_j + sigma^2) (sigma^2 + sd^2) / sd^2 (on the scaled variable x / alpha)."""
    sde, gm = VPSDE(), gaussian_data()
    P_mean, P_std = -1.2, 1.2
    f = lambda u: norm.pdf(u) * float(np.sum(LAMBDAS / (LAMBDAS + math.exp(2 * (P_mean + P_std * u))))) \
        * (math.exp(2 * (P_mean + P_std * u)) + SD**2) / SD**2
    exact = quad(f, -8, 8, limit=200)[0]
    n = 40_000
    g = torch.Generator().manual_seed(4)
    x0 = gm.sample(n, generator=g, dtype=torch.float64)
    values = loss(sde, "edm", "lognormal", P_mean=P_mean, P_std=P_std)(gm.score_fn(sde), x0, generator=g)
    _within(values, exact)


@pytest.mark.parametrize("weighting", ["eps", "v"])
def test_importance_proposal_keeps_the_uniform_objective(weighting):
    """Any weighting with importance-sampled t has the uniform-t average (reweighted)."""
    sde, gm = VPSDE(), gaussian_data()
    eps = 1e-3
    tt = lambda t: torch.tensor([t], dtype=torch.float64)
    integrand = lambda t: eps_weight(weighting, sde, tt(t)).item() * expected_eps_mse(
        *(c.item() for c in sde.marginal_coeffs(tt(t))))
    exact = quad(integrand, eps, sde.T, limit=200, points=[1e-2, 1e-1])[0] / (sde.T - eps)
    n = 40_000
    g = torch.Generator().manual_seed(6)
    x0 = gm.sample(n, generator=g, dtype=torch.float64)
    _within(loss(sde, weighting, "importance", eps=eps)(gm.score_fn(sde), x0, generator=g), exact)


def test_objective_errors():
    with pytest.raises(ValueError, match="weighting"):
        DenoisingScoreMatching(VPSDE(), weighting="snr2")
    with pytest.raises(ValueError, match="proposal"):
        DenoisingScoreMatching(VPSDE(), proposal="beta")
    with pytest.raises(ValueError, match="contradicts"):
        DenoisingScoreMatching(VPSDE(), likelihood_weighting=True, weighting="v")
    with pytest.raises(ValueError, match="P_std"):
        DenoisingScoreMatching(VPSDE(), proposal="lognormal", P_std=0.0)
    assert set(PROPOSALS) == {"uniform", "importance", "lognormal"}
