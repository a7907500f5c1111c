"""The fixed variances of DDPM's ancestral sampler as public options of `ddpm` (Ho et al. 2020,
Sec. 3.2: sigma_t^2 = beta_t or beta~_t), against a transcription of Algorithm 2."""
import pytest
import torch

from mixtures import two_d_mixture
from sde_lib import VPSDE, NetworkScore
from sde_lib.sampling import build_sampler, sample


def algorithm2(eps_model, x, betas, sigmas, randn):
    """Algorithm 2 of Ho et al. (2020): t = T ... 1, z = 0 at t = 1."""
    alphas = 1 - betas
    alpha_bar = torch.cumprod(alphas, 0)
    T = len(betas)
    for t in range(T, 0, -1):
        i = t - 1
        z = randn(x) if t > 1 else torch.zeros_like(x)
        eps = eps_model(x, torch.full((len(x),), float(i), dtype=x.dtype))
        x = (x - betas[i] / (1 - alpha_bar[i]).sqrt() * eps) / alphas[i].sqrt() + sigmas[i] * z
    return x


@pytest.mark.parametrize("variance", ["transition", "posterior"])
def test_ddpm_with_fixed_variances_is_algorithm_2(variance):
    N, B = 50, 64
    sde = VPSDE(N=N)
    gm = two_d_mixture()
    exact = gm.score_fn(sde)

    def eps_model(x, labels):  # an epsilon "network" with discrete labels (the DDPM timestep)
        i = labels.long()
        std = (1 - sde.alphas_cumprod[i]).sqrt()
        return -std[:, None] * exact(x, sde.discrete_time(i))

    betas = torch.linspace(0.1 / N, 20.0 / N, N, dtype=torch.float64)  # DDPM's schedule for N levels
    alpha_bar = torch.cumprod(1 - betas, 0)
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    sigmas = betas.sqrt() if variance == "transition" else (betas * (1 - alpha_bar_prev) / (1 - alpha_bar)).sqrt()
    x_T = torch.randn(B, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    ref = algorithm2(eps_model, x_T, betas, sigmas, lambda x: torch.randn(x.shape, generator=g, dtype=x.dtype))
    score_fn = NetworkScore(eps_model, sde, prediction="eps", time_labels="discrete")
    x, nfe = sample(sde, score_fn, (B, 2), method="ddpm", variance=variance, N=N, x_T=x_T,
                    generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert nfe == N
    torch.testing.assert_close(x, ref, rtol=1e-10, atol=1e-10)
    if variance == "transition":  # VP's own: the default is unchanged
        x_default, _ = sample(sde, score_fn, (B, 2), method="ddpm", N=N, x_T=x_T,
                              generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        torch.testing.assert_close(x_default, x, rtol=0, atol=0)


def test_bad_variance():
    with pytest.raises(ValueError, match="variance"):
        build_sampler("ddpm", variance="fixed")
