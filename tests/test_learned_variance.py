"""Learned variances and the discrete-time bound (Nichol & Dhariwal 2021; Ho et al. 2020): each term
against its closed form computed here independently, and the bound on Gaussian data, where the
exact reverse conditionals are known."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from sde_lib import VPSDE
from sde_lib.learned_variance import (DiscreteChain, discretized_gaussian_log_likelihood, hybrid_loss,
                                      respaced_levels, vlb_terms)

N = 50


def ddpm_schedule(n):
    """DDPM's linear betas for n levels (Ho et al. 2020, scaled to n) and its alpha_bar."""
    betas = torch.linspace(0.1 / n, 20.0 / n, n, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    return betas, ab, ab_prev


def test_v_one_and_zero_give_beta_and_beta_tilde():
    chain = DiscreteChain(VPSDE(N=N))
    betas, ab, ab_prev = ddpm_schedule(N)
    beta_tilde = betas * (1 - ab_prev) / (1 - ab)  # Ho et al. 2020, eq. 7
    k = torch.arange(N)
    one = torch.ones(N, 1, dtype=torch.float64)
    torch.testing.assert_close(chain.p_log_variance(k, one).exp()[:, 0], betas, rtol=1e-15, atol=0)
    var0 = chain.p_log_variance(k, 0 * one).exp()[:, 0]
    torch.testing.assert_close(var0[1:], beta_tilde[1:], rtol=1e-14, atol=0)
    assert var0[0] == var0[1]  # beta~_0 = 0 is clipped to beta~_1 (improved DDPM)


def test_kl_terms_equal_torch_kl():
    betas, ab, ab_prev = ddpm_schedule(N)
    chain = DiscreteChain(VPSDE(N=N))
    g = torch.Generator().manual_seed(0)
    B = 64
    x0 = torch.randn(B, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(B, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(B, 3, generator=g, dtype=torch.float64)
    v = torch.rand(B, 3, generator=g, dtype=torch.float64) * 1.4 - 0.2
    k = torch.randint(1, N, (B,), generator=g)
    b, a, ap = betas[k, None], ab[k, None], ab_prev[k, None]
    mean_q = ap.sqrt() * b / (1 - a) * x0 + (1 - b).sqrt() * (1 - ap) / (1 - a) * xt  # eq. 7
    var_q = b * (1 - ap) / (1 - a)
    mean_p = (xt - b / (1 - a).sqrt() * eps) / (1 - b).sqrt()  # eq. 11
    var_p = b ** v * var_q ** (1 - v)  # Nichol & Dhariwal eq. 15
    ref = kl_divergence(Normal(mean_q, var_q.sqrt().expand_as(x0)), Normal(mean_p, var_p.sqrt())).sum(1)
    torch.testing.assert_close(chain.term(x0, xt, k, eps, v), ref, rtol=1e-10, atol=1e-12)
    # the prior term against N(0, I)
    aN = ab[-1]
    ref_prior = kl_divergence(Normal(aN.sqrt() * x0, (1 - aN).sqrt()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(chain.prior_term(x0), ref_prior, rtol=1e-10, atol=1e-14)


def test_decoder_is_the_bin_probability():
    g = torch.Generator().manual_seed(1)
    m = torch.tensor([0, 1, 37, 127, 128, 200, 254, 255])
    x = -1 + 2 * m.to(torch.float64) / 255
    mean = x + 0.05 * torch.randn(len(m), generator=g, dtype=torch.float64)
    log_scale = torch.log(torch.tensor([0.003, 0.01, 0.02, 0.004, 0.05, 0.01, 0.002, 0.03], dtype=torch.float64))
    got = discretized_gaussian_log_likelihood(x, mean, log_scale)
    for j in range(len(m)):  # Simpson's rule for the density over the bin (end bins to +-inf)
        s = log_scale[j].exp()
        lo = x[j] - 1 / 255 if m[j] > 0 else mean[j] - 40 * s
        hi = x[j] + 1 / 255 if m[j] < 255 else mean[j] + 40 * s
        u = torch.linspace(float(lo), float(hi), 200001, dtype=torch.float64)
        dens = torch.exp(-0.5 * ((u - mean[j]) / s) ** 2) / (s * math.sqrt(2 * math.pi))
        w = torch.ones_like(u)
        w[1:-1:2], w[2:-1:2] = 4, 2
        p = (w * dens).sum() * (u[1] - u[0]) / 3
        assert abs(got[j].exp() - p) <= 1e-7 * max(float(p), 1e-30) + 1e-300, (j, float(got[j].exp()), float(p))


def gaussian_model(sde, m0, s0, variance):
    """The exact reverse conditionals of 1-D data N(m0, s0^2) on the N-level chain: eps from the
    exact score (Tweedie: the exact posterior mean), v giving the exact Var[x_{k-1} | x_k]
    ("exact"), or v = 1 / 0 (beta / beta~)."""
    betas, ab, ab_prev = ddpm_schedule(sde.N)
    V = ab * s0**2 + 1 - ab  # Var x_k
    V_prev = ab_prev * s0**2 + 1 - ab_prev
    var_true = V_prev * (1 - (1 - betas) * V_prev / V)
    bt = betas * (1 - ab_prev) / (1 - ab)
    bt[0] = bt[1]
    v_exact = torch.log(var_true / bt) / torch.log(betas / bt)

    def model(x, t):
        i = sde.discrete_index(t)
        score = -(x - ab[i, None].sqrt() * m0) / V[i, None]
        eps = -(1 - ab[i, None]).sqrt() * score
        v = {"exact": v_exact[i, None], "beta": torch.ones_like(x), "beta_tilde": torch.zeros_like(x)}[variance]
        return eps, v.expand_as(x)
    return model


def gaussian_vlb(n, variance, B, seed=0, m0=0.3, s0=0.5):
    sde = VPSDE(N=n)
    chain = DiscreteChain(sde)
    g = torch.Generator().manual_seed(seed)
    x0 = m0 + s0 * torch.randn(B, 1, generator=g, dtype=torch.float64)
    terms, prior = vlb_terms(chain, gaussian_model(sde, m0, s0, variance), x0, decoder="gaussian", generator=g)
    return terms.sum(1) + prior


def test_vlb_with_exact_reverse_is_entropy_plus_prior_gap():
    # With p(x_{k-1} | x_k) = q(x_{k-1} | x_k), E[VLB] = H(data) + KL(q(x_K) || N(0, 1)) exactly.
    m0, s0, B = 0.3, 0.5, 4000
    vlb = gaussian_vlb(N, "exact", B)
    ab = ddpm_schedule(N)[1][-1]
    mK, vK = ab.sqrt() * m0, ab * s0**2 + 1 - ab
    kl_prior = 0.5 * (vK + mK**2 - 1 - torch.log(vK))
    expected = 0.5 * math.log(2 * math.pi * math.e * s0**2) + kl_prior
    se = vlb.std() / math.sqrt(B)
    assert abs(vlb.mean() - expected) < 5 * se, (float(vlb.mean()), float(expected), float(se))


def test_vlb_with_fixed_variances_is_above_and_approaches_nll():
    B = 2000
    gaps = {}
    for n in (40, 400):  # (a VP chain needs N > beta_max = 20)
        exact = gaussian_vlb(n, "exact", B)  # same x0 and x_k draws (the model does not draw)
        for variance in ("beta", "beta_tilde"):
            d = gaussian_vlb(n, variance, B) - exact
            se = d.std() / math.sqrt(B)
            assert d.mean() > 5 * se, (n, variance, float(d.mean()), float(se))
            gaps[n, variance] = float(d.mean())
    for variance in ("beta", "beta_tilde"):
        assert gaps[400, variance] < 0.5 * gaps[40, variance], gaps


def test_hybrid_loss_trains_the_variance_only_through_vlb():
    chain = DiscreteChain(VPSDE(N=N))
    w_eps = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    w_v = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)

    def model(x, t):
        return w_eps * x, w_v + 0 * x

    x0 = -1 + 2 * torch.randint(0, 256, (32, 2), generator=torch.Generator().manual_seed(3)).double() / 255
    loss = hybrid_loss(chain, model, x0, generator=torch.Generator().manual_seed(4)).mean()
    loss.backward()
    # the same draws, by hand: L_simple alone gives w_eps its gradient
    g = torch.Generator().manual_seed(4)
    k = torch.randint(0, N, (32,), generator=g)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    xt = chain.alpha[k, None] * x0 + chain.std[k, None] * z
    w = w_eps.detach().clone().requires_grad_(True)
    simple = (w * xt - z).square().mean(1)
    simple.mean().backward()
    torch.testing.assert_close(w_eps.grad, w.grad, rtol=1e-12, atol=0)
    vlb = chain.term(x0, xt, k, w_eps.detach() * xt, w_v.detach() + 0 * x0) / (2 * math.log(2))
    torch.testing.assert_close(loss.detach(), (simple + 1e-3 * N * vlb).mean().detach(), rtol=1e-12, atol=0)
    assert w_v.grad != 0


def test_respaced_levels():
    torch.testing.assert_close(respaced_levels(10, 4), torch.tensor([0, 3, 6, 9]))
    assert respaced_levels(10).tolist() == list(range(10))
    with pytest.raises(ValueError, match="respace"):
        respaced_levels(10, 11)
