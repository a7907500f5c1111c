"""The analytic oracle against independent computations."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from sde_lib import VESDE, VPSDE, GaussianMixture, subVPSDE


@pytest.fixture
def gm():
    return GaussianMixture.random(dim=3, n_components=4, seed=3)


def _scipy_log_prob(gm, x, alpha=1.0, std=0.0):
    dens = 0.0
    for w, m, c in zip(gm.weights.numpy(), gm.means.numpy(), gm.covs.numpy()):
        dens = dens + w * multivariate_normal(alpha * m, alpha**2 * c + std**2 * np.eye(len(m))).pdf(x)
    return np.log(dens)


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE(sigma_max=5.0)], ids=["vp", "subvp", "ve"])
def test_log_prob_at_time_t_matches_scipy(gm, sde):
    x = torch.randn(7, 3, dtype=torch.float64) * 2
    t = 0.37
    alpha, std = (c.item() for c in sde.marginal_coeffs(torch.tensor([t], dtype=torch.float64)))
    ours = gm.log_prob(x, sde, torch.full((7,), t, dtype=torch.float64))
    np.testing.assert_allclose(ours.numpy(), _scipy_log_prob(gm, x.numpy(), alpha, std), rtol=1e-10)
    np.testing.assert_allclose(gm.log_prob(x).numpy(), _scipy_log_prob(gm, x.numpy()), rtol=1e-10)
    np.testing.assert_allclose(gm.marginal(sde, t).log_prob(x).numpy(), ours.numpy(), rtol=1e-10)


def test_score_is_gradient_of_log_prob(gm):
    sde = VPSDE()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.01, 0.3, 0.7, 1.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad(gm.log_prob(x, sde, t).sum(), x)
    torch.testing.assert_close(gm.score(x.detach(), sde, t), grad, rtol=1e-10, atol=1e-12)
    y = torch.tensor([0, 1, 2, 3, 0])
    (grad_y,) = torch.autograd.grad(gm.log_prob(x, sde, t, y=y).sum(), x)
    torch.testing.assert_close(gm.score(x.detach(), sde, t, y=y), grad_y, rtol=1e-10, atol=1e-12)


def test_samples_have_the_mixture_moments(gm):
    n = 200_000
    x, k = gm.sample(n, generator=torch.Generator().manual_seed(0), return_labels=True, dtype=torch.float64)
    freq = torch.bincount(k, minlength=4).double() / n
    se = torch.sqrt(gm.weights * (1 - gm.weights) / n)
    assert torch.all((freq - gm.weights).abs() < 4.5 * se)
    cov = gm.covariance()
    se_mean = torch.sqrt(torch.diag(cov) / n)
    assert torch.all((x.mean(0) - gm.mean()).abs() < 4.5 * se_mean)
    se_cov = torch.sqrt((torch.diag(cov)[:, None] * torch.diag(cov)[None] + cov**2) / n)
    assert torch.all((torch.cov(x.T) - cov).abs() < 4.5 * se_cov)


def test_class_posterior_is_bayes(gm):
    sde = VESDE(sigma_max=5.0)
    x = torch.randn(6, 3, dtype=torch.float64)
    t = torch.full((6,), 0.5, dtype=torch.float64)
    post = gm.class_log_posterior(x, sde, t).exp()
    torch.testing.assert_close(post.sum(1), torch.ones(6, dtype=torch.float64))
    joint = torch.stack([gm.log_prob(x, sde, t, y=torch.full((6,), k)) for k in range(4)], 1) + gm.weights.log()
    torch.testing.assert_close(post, torch.softmax(joint, 1))


def test_image_shaped_mixture_and_entropy():
    gm = GaussianMixture.random(dim=12, n_components=2, seed=1)
    img = GaussianMixture(gm.weights, gm.means, gm.covs, event_shape=(3, 2, 2))
    x = img.sample(10)
    assert x.shape == (10, 3, 2, 2)
    torch.testing.assert_close(img.log_prob(x), gm.log_prob(x.reshape(10, 12)))
    assert img.score(x).shape == x.shape
    # A single Gaussian's entropy is 1/2 log det(2 pi e Sigma).
    one = GaussianMixture([1.0], gm.means[:1], gm.covs[:1])
    h, se = one.entropy(n=100_000)
    exact = 0.5 * torch.logdet(2 * math.pi * math.e * gm.covs[0]).item()
    assert abs(h - exact) < 4.5 * se


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="expected"):
        GaussianMixture([1.0, 1.0], np.zeros((2, 2)), np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture([1.0], np.zeros((1, 2)), -np.eye(2)[None])


def test_diagonal_fast_path_agrees_with_the_general_one():
    rng = np.random.default_rng(5)
    covs = np.stack([np.diag(rng.uniform(0.01, 1.0, 6)) for _ in range(3)])
    diag = GaussianMixture([1.0, 2.0, 3.0], rng.normal(size=(3, 6)), covs)
    assert diag.diagonal
    general = GaussianMixture([1.0, 2.0, 3.0], diag.means, covs)
    general.diagonal = False
    x = torch.randn(9, 6, dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 9, dtype=torch.float64)
    torch.testing.assert_close(diag.log_prob(x, VPSDE(), t), general.log_prob(x, VPSDE(), t))
    torch.testing.assert_close(diag.score(x, VPSDE(), t), general.score(x, VPSDE(), t))
