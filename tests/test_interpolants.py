"""The linear interpolant of flow matching (x_t = (1 - t) x_0 + t z) and EDM's sigma(t) = t VE
process: probability flow against the exact velocity, the flow-matching loss, and the samplers
and the likelihood run on them unchanged with exact mixture scores."""
import numpy as np
import pytest
import torch

from mixtures import compare_to_truth, two_d_mixture
from sde_lib import EDMVESDE, GaussianMixture, LinearInterpolantSDE, NetworkScore
from sde_lib.likelihood import log_likelihood, prior_mismatch
from sde_lib.losses import DenoisingScoreMatching
from sde_lib.sampling import sample

NEW_SDES = {"linear": LinearInterpolantSDE, "edm_ve": lambda: EDMVESDE(sigma_max=20.0)}


def exact_velocity(gm, x, t):
    """E[z - x_0 | x_t] for x_t = (1 - t) x_0 + t z, x_0 ~ mixture, by Gaussian conditioning
    (numpy, per component: E[x_0 | x_t, k] = mu + a S (a^2 S + s^2 I)^-1 (x_t - a mu))."""
    out = np.zeros_like(x)
    W, M, C = gm.weights.numpy(), gm.means.numpy(), gm.covs.numpy()
    d = x.shape[1]
    for b in range(len(x)):
        a, s = 1.0 - t[b], t[b]
        logr, post = [], []
        for k in range(len(W)):
            cov = a * a * C[k] + s * s * np.eye(d)
            dev = x[b] - a * M[k]
            sol = np.linalg.solve(cov, dev)
            logr.append(np.log(W[k]) - 0.5 * dev @ sol - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1])
            post.append(M[k] + a * C[k] @ sol)
        r = np.exp(np.array(logr) - max(logr))
        r /= r.sum()
        x0 = (r[:, None] * np.array(post)).sum(0)
        z = (x[b] - a * x0) / s
        out[b] = z - x0
    return out


def test_probability_flow_is_the_flow_matching_velocity():
    sde, gm = LinearInterpolantSDE(), GaussianMixture.random(dim=3, n_components=3, seed=1)
    g = torch.Generator().manual_seed(0)
    n = 40
    t = torch.linspace(0.02, sde.T, n, dtype=torch.float64)
    x0 = gm.sample(n, generator=g, dtype=torch.float64)
    x = (1 - t)[:, None] * x0 + t[:, None] * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    pf_drift, _ = sde.reverse(gm.score_fn(sde), probability_flow=True).sde(x, t)
    expected = torch.from_numpy(exact_velocity(gm, x.numpy(), t.numpy()))
    torch.testing.assert_close(pf_drift, expected, rtol=1e-8, atol=1e-8)
    # the "flow" parameterisation's network output is that velocity
    flow = NetworkScore(None, sde, prediction="flow")
    torch.testing.assert_close(flow.output_from_score(x, t, gm.score(x, sde, t)), expected, rtol=1e-8, atol=1e-8)


def test_flow_matching_loss_is_the_conditional_velocity_error():
    """weighting="flow" on the linear interpolant is ||v_theta(x_t, t) - (z - x_0)||^2 (Liu et al.
    2023, eq. 1; Lipman et al. 2023, eq. 23) with v_theta the model's probability-flow velocity."""
    sde, gm = LinearInterpolantSDE(), two_d_mixture()
    g = torch.Generator().manual_seed(1)
    n = 256
    x0 = gm.sample(n, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.95 + 0.01
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    velocity = lambda x, t: torch.sin(x) + t[:, None]  # any network output
    model = NetworkScore(velocity, sde, prediction="flow")
    ours = DenoisingScoreMatching(sde, weighting="flow", reduce_mean=False)(model, x0, t=t, noise=z)
    x_t = (1 - t)[:, None] * x0 + t[:, None] * z
    torch.testing.assert_close(ours, (velocity(x_t, 999 * t) - (z - x0)).square().sum(1), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(NEW_SDES))
@pytest.mark.parametrize("method,options", [
    ("ode", dict(solver="RK45", rtol=1e-5, atol=1e-5)),
    ("edm", dict(N=40)),
    ("dpm_solver", dict(N=50)),
    ("ddim", dict(N=200)),
    ("pc", dict(predictor="euler_maruyama", corrector="none", N=500)),
], ids=["ode", "edm", "dpm_solver", "ddim", "euler_maruyama"])
def test_samplers_run_unchanged(name, method, options):
    sde, gm = NEW_SDES[name](), two_d_mixture()
    n = 2000
    x, _ = sample(sde, gm.score_fn(sde), (n, 2), method=method, generator=torch.Generator().manual_seed(4),
                  dtype=torch.float64, **options)
    truth = gm.sample(n, torch.Generator().manual_seed(5), dtype=torch.float64)
    z_max, z_crit, details = compare_to_truth(gm, x, truth)
    assert z_max < z_crit, details


@pytest.mark.parametrize("name", list(NEW_SDES))
def test_exact_likelihood(name):
    """log_likelihood targets log p_eps(x) + the prior mismatch exactly: within 1e-3 nats / dim."""
    sde, gm = NEW_SDES[name](), GaussianMixture.random(dim=2, n_components=3, seed=0, scale=1.0)
    eps = 1e-5
    x = gm.sample(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logp, z, _ = log_likelihood(sde, gm.score_fn(sde), x, "exact", eps=eps)
    target = gm.log_prob(x, sde, eps) + prior_mismatch(sde, z, lambda z_: gm.log_prob(z_, sde, sde.T))
    assert ((logp - target).abs() / 2).mean().item() < 1e-3


@pytest.mark.parametrize("name", list(NEW_SDES))
def test_classifier_free_guidance_at_weight_one_samples_the_class(name):
    """Guidance runs unchanged: w = 1 with exact labelled scores gives component y's law."""
    from sde_lib.guidance import classifier_free

    sde, gm, y, n = NEW_SDES[name](), two_d_mixture(), 2, 2000
    score = classifier_free(gm.labelled_score_fn(sde, null_label=-1), y, 1.0, -1)
    x, _ = sample(sde, score, (n, 2), method="ode", generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    target = GaussianMixture([1.0], gm.means[y:y + 1], gm.covs[y:y + 1])
    truth = target.sample(n, torch.Generator().manual_seed(7), dtype=torch.float64)
    _, z_crit, details = compare_to_truth(target, x, truth)
    del details["weight[0]"]  # one component: its weight is 1 in both sets (0/0)
    assert max(details.values()) < z_crit, details


@pytest.mark.parametrize("name", ["linear"])
def test_inpainting_runs_unchanged(name):
    """Half of a 3x8x8 image known; the components are diagonal and the known half identifies
    the component, so the exact conditional of the other half is one Gaussian (as in
    tests/test_controllable.py), and replacement with Euler-Maruyama steps reaches it."""
    from mixtures import bonferroni_z, image_mixture
    from sde_lib.controllable import inpaint

    gm, sde, n = image_mixture(), NEW_SDES[name](), 500
    mask = torch.zeros(1, 3, 8, 8)
    mask[..., :4] = 1
    y = gm.sample(1, torch.Generator().manual_seed(3))
    target = gm.conditional(mask, y)
    x, _ = inpaint(sde, gm.score_fn(sde), y.expand(n, 3, 8, 8), mask, sampler="pc", predictor="euler_maruyama",
                   corrector="none", schedule="logsnr", N=200, generator=torch.Generator().manual_seed(4))
    assert torch.equal(x[..., :4], y[..., :4].expand(n, 3, 8, 4))
    u = x[..., 4:].reshape(n, -1).double()
    mean, var = target.mean(), torch.diagonal(target.covariance())
    z_mean = (u.mean(0) - mean) / torch.sqrt(var / n)
    s2, m4 = u.var(0), ((u - u.mean(0)) ** 4).mean(0)
    z_var = (s2 - var) / torch.sqrt((m4 - s2**2) / n)
    assert max(z_mean.abs().max().item(), z_var.abs().max().item()) < bonferroni_z(2 * u.shape[1])
