"""Score-matching losses against closed forms on Gaussian data with the exact score."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from sde_lib import VESDE, VPSDE, CosineVPSDE, GaussianMixture, NetworkScore, subVPSDE
from sde_lib.losses import DenoisingScoreMatching, ImportanceTimeSampler, ddpm_loss, dsm_loss, smld_loss

SDES = {"vp": VPSDE(), "subvp": subVPSDE(), "ve": VESDE(sigma_max=10.0), "cosine": CosineVPSDE()}
LAMBDAS = np.array([0.01, 0.1, 0.5, 1.0, 2.0])  # eigenvalues of the data covariance


def gaussian_data():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    return GaussianMixture([1.0], rng.normal(size=(1, 5)), (q @ np.diag(LAMBDAS) @ q.T)[None])


def expected_dsm(sde, t):
    """E ||std s + z||^2 = d - std^2 E||s||^2 = sum_j alpha^2 lam_j / (alpha^2 lam_j + std^2)."""
    alpha, std = (c.item() for c in sde.marginal_coeffs(torch.tensor([t], dtype=torch.float64)))
    return float(np.sum(alpha**2 * LAMBDAS / (alpha**2 * LAMBDAS + std**2)))


def _within(values, expected, k=4.5):
    se = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item() - expected) < k * se, (values.mean().item(), expected, se)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("t", [0.05, 0.5])
def test_dsm_at_fixed_time_matches_closed_form(name, t):
    sde, gm = SDES[name], gaussian_data()
    n = 40_000
    g = torch.Generator().manual_seed(1)
    x0 = gm.sample(n, generator=g, dtype=torch.float64)
    tt = torch.full((n,), t, dtype=torch.float64)
    losses = dsm_loss(sde, gm.score_fn(sde), x0, reduce_mean=False, generator=g, t=tt)
    _within(losses, expected_dsm(sde, t))
    mean_losses = dsm_loss(sde, gm.score_fn(sde), x0, reduce_mean=True, generator=g, t=tt)
    _within(mean_losses, expected_dsm(sde, t) / 5)


def test_exact_score_minimises_dsm():
    """loss(s + delta) - loss(s) = std^2 ||delta||^2 + a cross term of mean zero (Tweedie)."""
    sde, gm = VPSDE(), gaussian_data()
    n = 40_000
    g = torch.Generator().manual_seed(2)
    x0 = gm.sample(n, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    delta = torch.linspace(-0.3, 0.3, 5, dtype=torch.float64)
    exact = gm.score_fn(sde)
    l0 = dsm_loss(sde, exact, x0, reduce_mean=False, t=t, noise=z)
    l1 = dsm_loss(sde, lambda x, t: exact(x, t) + delta, x0, reduce_mean=False, t=t, noise=z)
    std = sde.marginal_std(t)
    cross = l1 - l0 - std**2 * delta.square().sum()
    _within(cross, 0.0)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_likelihood_weighting_with_and_without_importance_sampling(name):
    sde, gm = SDES[name], gaussian_data()
    eps = 1e-3
    ratio = lambda t: (sde.diffusion(torch.tensor([t], dtype=torch.float64)).item() / sde.marginal_std(torch.tensor([t], dtype=torch.float64)).item()) ** 2
    integrand = lambda t: ratio(t) * expected_dsm(sde, t)
    exact = quad(integrand, eps, sde.T, limit=200, points=[1e-2, 1e-1])[0] / (sde.T - eps)
    n = 40_000
    g = torch.Generator().manual_seed(3)
    x0 = gm.sample(n, generator=g, dtype=torch.float64)
    uniform = dsm_loss(sde, gm.score_fn(sde), x0, eps=eps, reduce_mean=False, likelihood_weighting=True, generator=g)
    importance = dsm_loss(sde, gm.score_fn(sde), x0, eps=eps, reduce_mean=False, likelihood_weighting=True,
                          importance_sampling=True, generator=g)
    _within(uniform, exact)
    _within(importance, exact)
    # Importance sampling is there to cut the variance; for VE g^2/std^2 is constant, so the
    # importance density is the uniform one and both estimators are the same.
    if name != "ve":
        assert importance.var() < 0.5 * uniform.var()


def test_importance_sampler_draws_its_density():
    sde = VPSDE()
    sampler = ImportanceTimeSampler(sde, eps=1e-3)
    t, w = sampler.sample(200_000, generator=torch.Generator().manual_seed(4))
    assert t.min() >= 1e-3 and t.max() <= 1.0
    # P(t < 0.01) against the exact CDF of g^2/std^2: d/dt log(1/alpha_bar - 1) (Song et al. 2021b).
    F = lambda t: math.log(math.expm1(0.5 * t**2 * 19.9 + 0.1 * t))
    p = (F(0.01) - F(1e-3)) / (F(1.0) - F(1e-3))
    frac = (t < 0.01).double().mean().item()
    assert abs(frac - p) < 4.5 * math.sqrt(p * (1 - p) / len(t))


def test_ddpm_loss_is_l_simple():
    """With an epsilon network, the level loss equals ||eps_theta(x_i, i) - z||^2 (Ho et al. eq. 14)."""
    sde = VPSDE(N=1000)
    torch.manual_seed(0)
    W = torch.randn(6, 6) * 0.3
    eps_net = lambda x, labels: torch.tanh(x @ W) + 0.01 * labels[:, None]
    x0 = torch.randn(8, 6)
    levels = torch.tensor([0, 1, 5, 100, 500, 900, 998, 999])
    z = torch.randn(8, 6)
    ours = ddpm_loss(sde, NetworkScore(eps_net, sde, "eps", "discrete"), x0, levels=levels, noise=z)
    # Transcription of Algorithm 1's loss with DDPM's betas.
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)[levels]
    x_t = (ab.sqrt()[:, None] * x0 + (1 - ab).sqrt()[:, None] * z).float()
    ref = (eps_net(x_t, levels.float()) - z).square().mean(1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_smld_loss_matches_the_official_form():
    """sigma_i^2 ||s(x + sigma_i z) + z / sigma_i||^2 with NCSN sigma indices (Song & Ermon 2019)."""
    sde = VESDE(sigma_min=0.01, sigma_max=50.0, N=10)
    torch.manual_seed(1)
    score_net = lambda x, labels: -x / (1 + labels[:, None])
    x0, z = torch.randn(4, 3), torch.randn(4, 3)
    levels = torch.tensor([0, 3, 7, 9])
    ours = smld_loss(sde, NetworkScore(score_net, sde, "score", "discrete"), x0, levels=levels, noise=z, reduce_mean=False)
    sigmas = sde.discrete_sigmas[levels].float()
    ncsn_index = (9 - levels).float()
    perturbed = x0 + sigmas[:, None] * z
    ref = (sigmas[:, None] ** 2 * (score_net(perturbed, ncsn_index) + z / sigmas[:, None]) ** 2).sum(1)
    torch.testing.assert_close(ours, ref)


def test_loss_errors():
    with pytest.raises(ValueError, match="likelihood_weighting"):
        DenoisingScoreMatching(VPSDE(), importance_sampling=True)
    with pytest.raises(ValueError, match="eps=0"):
        DenoisingScoreMatching(VPSDE(), eps=0)
