"""Forward SDEs against closed forms: schedules, kernels, discretisations, priors."""
import math

import numpy as np
import pytest
import torch

from sde_lib import VESDE, VPSDE, CosineVPSDE, EDMVESDE, LinearInterpolantSDE, NetworkScore, build_sde, subVPSDE

ALL_SDES = {
    "vp": lambda: VPSDE(),
    "subvp": lambda: subVPSDE(),
    "ve": lambda: VESDE(),
    "cosine": lambda: CosineVPSDE(),
    "linear": lambda: LinearInterpolantSDE(),
    "edm_ve": lambda: EDMVESDE(),
}


@pytest.fixture(params=list(ALL_SDES))
def sde(request):
    return ALL_SDES[request.param]()


def test_vp_discretises_to_ddpm_betas():
    sde = VPSDE(0.1, 20.0, 1000)
    betas = sde.discrete_betas
    # Ho et al. (2020): beta_1 = 1e-4 ... beta_T = 0.02, linear.
    assert betas.shape == (1000,)
    assert abs(betas[0].item() - 1e-4) < 1e-15
    assert abs(betas[-1].item() - 0.02) < 1e-15
    np.testing.assert_allclose(betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=0, atol=1e-15)
    x = torch.randn(5, 3)
    i = torch.tensor([0, 1, 10, 500, 999])
    t = sde.discrete_time(i).float()
    f, G = sde.discretize(x, t)
    beta = torch.tensor(np.linspace(1e-4, 0.02, 1000))[i]
    torch.testing.assert_close(f, (torch.sqrt(1 - beta)[:, None] - 1).float() * x)
    torch.testing.assert_close(G, beta.sqrt().float())


def test_ve_discretises_to_smld_sigmas():
    sde = VESDE(0.01, 50.0, 1000)
    sig = np.exp(np.linspace(np.log(0.01), np.log(50.0), 1000))
    np.testing.assert_allclose(sde.discrete_sigmas.numpy(), sig, rtol=1e-14)
    i = torch.tensor([0, 1, 999])
    f, G = sde.discretize(torch.ones(3, 2), sde.discrete_time(i).float())
    assert torch.all(f == 0)
    expected = np.sqrt(sig[[0, 1, 999]] ** 2 - np.r_[0.0, sig[[0, 998]]] ** 2)
    np.testing.assert_allclose(G.numpy(), expected, rtol=1e-6)


def test_discrete_index_maps_grid_times_to_levels(sde):
    i = torch.arange(sde.N)
    assert torch.equal(sde.discrete_index(sde.discrete_time(i).float()), i)
    # The official sampling grid linspace(T, eps, N) maps to levels N-1 ... 0 (floor) whenever
    # eps (N - 1) / T < 1, e.g. eps = 1e-3 T.
    grid = torch.linspace(sde.T, 1e-3 * sde.T, sde.N)
    assert torch.equal(sde.discrete_index(grid), torch.arange(sde.N - 1, -1, -1))


def test_chain_reproduces_level_marginals(sde):
    """Iterating x_i = r_i x_{i-1} + sqrt(q_i) z from the data gives every level's (alpha_i, std_i)."""
    a, var = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    levels = torch.arange(sde.N)
    ratio, q = sde.transition_coeffs(levels)
    alphas, stds = sde.discrete_marginal_coeffs(levels)
    for i in range(sde.N):
        a, var = ratio[i] * a, ratio[i] ** 2 * var + q[i]
        assert abs(a - alphas[i]) <= 1e-12 * alphas[i]
        assert abs(var.sqrt() - stds[i]) <= 1e-9 * stds[i] + 1e-15


def test_kernel_solves_the_moment_odes(sde):
    """d alpha/dt = c(t) alpha and d std^2/dt = 2 c(t) std^2 + g(t)^2 (Sarkka & Solin eq. 5.51)."""
    t = torch.linspace(0.02, sde.T - 0.02, 50, dtype=torch.float64).requires_grad_(True)
    alpha, std = sde.marginal_coeffs(t)
    if alpha.requires_grad:
        (dalpha,) = torch.autograd.grad(alpha.sum(), t, retain_graph=True)
    else:  # VE: alpha = 1
        dalpha = torch.zeros_like(alpha)
    (dvar,) = torch.autograd.grad(std.square().sum(), t)
    c, g = sde.drift_coeff(t).detach(), sde.diffusion(t).detach()
    torch.testing.assert_close(dalpha, c * alpha.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dvar, 2 * c * std.detach().square() + g.square(), rtol=1e-9, atol=1e-10)


def _reference_std(sde, t):
    """std(t) from an independent float64 computation (numpy, not the library's formula)."""
    t = np.asarray(t, dtype=np.float64)
    if isinstance(sde, (LinearInterpolantSDE, EDMVESDE)):  # std(t) = t
        return t
    if isinstance(sde, VESDE):
        return sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
    if isinstance(sde, CosineVPSDE):
        phi = lambda u: np.cos((u + sde.s) / (1 + sde.s) * np.pi / 2)
        log_ab = 2 * (np.log(phi(t)) - np.log(phi(0.0)))
    else:
        log_ab = -0.5 * t**2 * (sde.beta_max - sde.beta_min) - t * sde.beta_min
    one_minus = -np.expm1(log_ab)
    return one_minus if isinstance(sde, subVPSDE) else np.sqrt(one_minus)


def test_std_in_float32_matches_float64_to_1e6(sde):
    t = np.geomspace(1e-5, sde.T, 200)
    _, std = sde.marginal_prob(torch.zeros(200, 3, dtype=torch.float32), torch.tensor(t, dtype=torch.float32))
    assert std.dtype == torch.float32
    # Reference at the float32 time actually used.
    ref = _reference_std(sde, np.float32(t).astype(np.float64))
    rel = np.abs(std.numpy().astype(np.float64) - ref) / ref
    assert rel.max() < 1e-6, rel.max()


def test_official_vp_std_formula_is_the_one_that_fails():
    """The check above is not vacuous: the official float32 formula is 0.6 % off at t = 1e-5."""
    t = torch.tensor([1e-5], dtype=torch.float32)
    lmc = -0.25 * t**2 * 19.9 - 0.5 * t * 0.1
    official = torch.sqrt(1.0 - torch.exp(2.0 * lmc))
    ref = _reference_std(VPSDE(), np.float32(1e-5))
    assert abs(official.item() - ref) / ref > 1e-3


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_marginal_prob_matches_forward_simulation(name):
    """Simulate sde() forward from x_0 with many paths; mean and variance agree with the kernel."""
    sde = ALL_SDES[name]()
    g = torch.Generator().manual_seed(0)
    n, steps = 20_000, 800
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64)
    x = x0.expand(n, 2).clone()
    if isinstance(sde, VESDE):  # the kernel has std sigma_min at t = 0: data pre-blurred
        x = x + sde.sigma_min * torch.randn(n, 2, generator=g, dtype=torch.float64)
    # The cosine schedule's beta(t) blows up towards T (beta(T) ~ 370): check it at 0.9 T, where
    # the simulation step is still fine enough.
    # So does the linear interpolant's drift -x / (1 - t).
    check_times = {int(steps * f) for f in (0.1, 0.4, 0.9 if name in ("cosine", "linear") else 1.0)}
    dt = sde.T / steps
    for k in range(1, steps + 1):
        t_mid = torch.full((n,), (k - 0.5) * dt, dtype=torch.float64)  # midpoint rule: O(dt^2) bias
        drift, diffusion = sde.sde(x, t_mid)
        x = x + drift * dt + diffusion[:, None] * math.sqrt(dt) * torch.randn(n, 2, generator=g, dtype=torch.float64)
        if k in check_times:
            t = torch.full((1,), k * dt, dtype=torch.float64)
            mean, std = sde.marginal_prob(x0[None], t)
            var = std.item() ** 2
            se_mean = math.sqrt(var / n)
            se_var = var * math.sqrt(2.0 / (n - 1))
            assert torch.all((x.mean(0) - mean[0]).abs() < 4.5 * se_mean), (k, x.mean(0), mean)
            assert torch.all((x.var(0) - var).abs() < 4.5 * se_var), (k, x.var(0), var)


def test_prior_logp_and_sampling(sde):
    z = sde.prior_sampling((4000, 3, 2, 2), generator=torch.Generator().manual_seed(1))
    assert z.shape == (4000, 3, 2, 2)
    assert abs(z.std().item() - sde.prior_std) < 4 * sde.prior_std / math.sqrt(2 * z.numel())
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z[:5].double()).reshape(5, -1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z[:5].double()), ref)


def test_reverse_sde_and_probability_flow(sde):
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64) * 0.9 + 0.05
    score_fn = lambda x, t: -x * 2.0
    drift, diff = sde.sde(x, t)
    rev = sde.reverse(score_fn)
    r_drift, r_diff = rev.sde(x, t)
    torch.testing.assert_close(r_drift, drift - diff[:, None] ** 2 * (-2 * x))
    torch.testing.assert_close(r_diff, diff)
    pf_drift, pf_diff = sde.reverse(score_fn, probability_flow=True).sde(x, t)
    torch.testing.assert_close(pf_drift, drift - 0.5 * diff[:, None] ** 2 * (-2 * x))
    assert torch.all(pf_diff == 0)
    f, G = sde.discretize(x, t)
    rf, rG = rev.discretize(x, t)
    torch.testing.assert_close(rf, f - G[:, None] ** 2 * (-2 * x))


def test_cosine_schedule_matches_nichol_dhariwal():
    sde = CosineVPSDE(s=0.008)
    t = torch.linspace(0.0, sde.T, 101, dtype=torch.float64)
    f = lambda u: torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    alpha_bar = f(t) / f(torch.zeros(1, dtype=torch.float64))
    alpha, _ = sde.marginal_coeffs(t)
    torch.testing.assert_close(alpha**2, alpha_bar, rtol=1e-12, atol=1e-15)
    assert torch.all(sde.discrete_betas <= 0.999) and torch.all(sde.discrete_betas >= 0)


def test_network_score_adapter_eps_and_labels():
    sde = VPSDE()
    eps_net_out = torch.randn(4, 3)
    seen = {}

    def net(x, labels):
        seen["labels"] = labels
        return eps_net_out

    # Discrete DDPM labels: score = -eps / sqrt(1 - alpha_bar_i).
    i = torch.tensor([0, 10, 500, 999])
    score = NetworkScore(net, sde, prediction="eps", time_labels="discrete")(torch.zeros(4, 3), sde.discrete_time(i).float())
    expected = -eps_net_out / torch.sqrt(1 - sde.alphas_cumprod[i]).float()[:, None]
    torch.testing.assert_close(score, expected)
    torch.testing.assert_close(seen["labels"], i.float())
    # Continuous VP labels: 999 t; VE continuous: sigma(t); VE discrete: NCSN sigma index.
    t = torch.tensor([0.1, 0.5, 0.9, 1.0])
    NetworkScore(net, sde, prediction="eps")(torch.zeros(4, 3), t)
    torch.testing.assert_close(seen["labels"], 999 * t)
    ve = VESDE()
    NetworkScore(net, ve, prediction="score")(torch.zeros(4, 3), t)
    torch.testing.assert_close(seen["labels"], (0.01 * 5000**t.double()).float())
    out = NetworkScore(net, ve, prediction="scaled_score", time_labels="discrete")(torch.zeros(4, 3), ve.discrete_time(i).float())
    torch.testing.assert_close(seen["labels"], (999 - i).float())
    torch.testing.assert_close(out, eps_net_out / ve.discrete_sigmas[i].float()[:, None])


def test_x0_prediction_is_tweedie():
    sde = subVPSDE()
    x, x0 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0.1, 0.4, 0.8], dtype=torch.float64)
    score = NetworkScore(lambda x, l: x0, sde, prediction="x0")(x, t)
    alpha, std = sde.marginal_coeffs(t)
    torch.testing.assert_close(score, (alpha[:, None] * x0 - x) / std[:, None] ** 2)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: VPSDE(N=0), "N=0"),
        (lambda: VESDE(sigma_min=1.0, sigma_max=0.5), "sigma_max"),
        (lambda: VPSDE(beta_min=-1), "beta_min"),
        (lambda: VPSDE(N=20).check_chain(), "N=20: the VPSDE chain"),
        (lambda: CosineVPSDE(T=1.0), "T=1.0"),
        (lambda: build_sde("nope"), "valid names"),
        (lambda: NetworkScore(None, VPSDE(), prediction="w"), "prediction"),
        (lambda: NetworkScore(None, VPSDE(), prediction="edm", time_labels="discrete"), "continuous"),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_with_num_levels_rebuilds_the_chain(sde):
    small = sde.with_num_levels(50)
    assert type(small) is type(sde) and small.N == 50 and small.T == sde.T
    assert sde.with_num_levels(sde.N) is sde
