"""EDM's sampler (Karras et al. 2022, Alg. 1 and 2) against a transcription of Algorithm 2, and
its samples with exact scores against the true distribution."""
import math

import pytest
import torch

from mixtures import compare_to_truth, two_d_mixture
from sde_lib import VESDE, VPSDE, CosineVPSDE, subVPSDE
from sde_lib.sampling import build_sampler, sample

CIFAR10_VP_CHURN = dict(S_churn=30.0, S_tmin=0.01, S_tmax=1.0, S_noise=1.007)  # Karras et al. Table 5


def algorithm2(D, t_steps, x, randn, S_churn, S_tmin, S_tmax, S_noise):
    """Algorithm 2 of Karras et al. (2022), line by line; t_steps = t_0 .. t_{N-1}, t_N = 0."""
    N = len(t_steps) - 1
    for i in range(N):
        t_i, t_next = t_steps[i], t_steps[i + 1]
        eps_i = S_noise * randn(x)                                               # line 3
        gamma_i = min(S_churn / N, math.sqrt(2) - 1) if S_tmin <= t_i <= S_tmax else 0.0  # line 4
        t_hat = t_i + gamma_i * t_i                                              # line 5
        x_hat = x + math.sqrt(t_hat**2 - t_i**2) * eps_i                         # line 6
        d_i = (x_hat - D(x_hat, t_hat)) / t_hat                                  # line 7
        x_next = x_hat + (t_next - t_hat) * d_i                                  # line 8
        if t_next != 0:                                                          # line 9
            d_prime = (x_next - D(x_next, t_next)) / t_next                      # line 10
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_i + 0.5 * d_prime)      # line 11
        x = x_next
    return x


def edm_steps(sigma_max, sigma_min, N, rho=7.0):
    """Eq. 5: t_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, t_N = 0."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / (N - 1) * (b - a)) ** rho for i in range(N)] + [0.0]


@pytest.mark.parametrize("options", [{}, CIFAR10_VP_CHURN], ids=["alg1", "churn"])
def test_reproduces_algorithm_2_step_for_step(options):
    """On EDM's own process (VE, sigma(t) in the SDE's range) the sampler's every denoiser call
    and its output equal the transcription's, with the same noise."""
    sde = VESDE(sigma_min=0.01, sigma_max=20.0)
    gm = two_d_mixture()
    eps, N, B = 0.15, 12, 64
    t_of_sigma = lambda s: math.log(s / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
    sigma_min = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** eps
    x_T = sde.prior_sampling((B, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    calls_ref = []

    def D(x, sigma):  # VE: D(x; sigma) = x + sigma^2 grad log p_sigma(x)
        calls_ref.append((x.clone(), sigma))
        t = torch.full((B,), t_of_sigma(sigma), dtype=torch.float64)
        return x + sigma**2 * gm.score(x, sde, t)

    g_ref = torch.Generator().manual_seed(1)
    full = {**dict(S_churn=0.0, S_tmin=0.0, S_tmax=math.inf, S_noise=1.0), **options}
    ref = algorithm2(D, edm_steps(sde.sigma_max, sigma_min, N), x_T,
                     lambda x: torch.randn(x.shape, generator=g_ref, dtype=x.dtype), **full)

    calls = []

    def score_fn(x, t):
        calls.append((x.clone(), t.clone()))
        return gm.score(x, sde, t)

    x, nfe = sample(sde, score_fn, (B, 2), method="edm", eps=eps, N=N, x_T=x_T,
                    generator=torch.Generator().manual_seed(1), dtype=torch.float64, **options)
    assert nfe == len(calls_ref) == 2 * N - 1
    for (xa, ta), (xb, sigma) in zip(calls, calls_ref):
        torch.testing.assert_close(xa, xb, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ta, torch.full_like(ta, t_of_sigma(sigma)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x, ref, rtol=1e-10, atol=1e-10)
    if options:  # the churn was on: the noise changed the result
        assert not torch.allclose(x, sample(sde, gm.score_fn(sde), (B, 2), method="edm", eps=eps, N=N, x_T=x_T,
                                            generator=torch.Generator().manual_seed(1),
                                            dtype=torch.float64)[0])


@pytest.mark.parametrize("make_sde", [VPSDE, subVPSDE, CosineVPSDE, lambda: VESDE(sigma_max=20.0)],
                         ids=["vp", "subvp", "cosine", "ve"])
def test_edm_sampler_reaches_the_true_distribution(make_sde):
    """With exact scores, 2N - 1 = 79 evaluations of Algorithm 1 sample the 2-D mixture."""
    sde, gm = make_sde(), two_d_mixture()
    n = 2000
    x, nfe = sample(sde, gm.score_fn(sde), (n, 2), method="edm", N=40, eps=1e-3,
                    generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert nfe == 79
    truth = gm.sample(n, torch.Generator().manual_seed(3), dtype=torch.float64)
    z_max, z_crit, details = compare_to_truth(gm, x, truth)
    assert z_max < z_crit, details


def test_denoise_options_and_errors():
    sde, gm = VPSDE(), two_d_mixture()
    calls = []
    sample(sde, lambda x, t: calls.append(t) or gm.score(x, sde, t), (4, 2), method="edm", N=1)
    assert len(calls) == 1 and bool((calls[0] == sde.T).all())  # one Euler step from T to 0
    for denoise, nfe in [("mean", 9), ("pf", 9), (False, 10)]:
        x, n = sample(sde, gm.score_fn(sde), (8, 2), method="edm", N=5, denoise=denoise,
                      generator=torch.Generator().manual_seed(0))
        assert n == nfe and torch.isfinite(x).all()
    for bad, match in [(dict(S_churn=-1.0), "S_churn"), (dict(S_noise="a"), "S_noise"), (dict(rho=0.0), "rho")]:
        with pytest.raises(ValueError, match=match):
            build_sampler("edm", **bad)
