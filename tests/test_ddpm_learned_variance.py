"""Ancestral sampling with learned variances and respacing (Nichol & Dhariwal 2021, eq. 15 and
Sec. 4) as options of `ddpm`: v = 1 / 0 reproduce today's fixed variances, and a respaced chain
with the exact reverse conditionals of Gaussian data keeps the data's marginal."""
import math

import pytest
import torch

from mixtures import two_d_mixture
from sde_lib import VPSDE, NetworkScore
from sde_lib.learned_variance import DiscreteChain, LearnedVarianceScore, respaced_levels
from sde_lib.sampling import sample


@pytest.mark.parametrize("v, variance", [(1.0, "transition"), (0.0, "posterior")])
def test_learned_with_v_fixed_is_todays_ddpm(v, variance):
    N, B = 50, 64
    sde = VPSDE(N=N)
    exact = two_d_mixture().score_fn(sde)

    def eps_model(x, labels):
        i = labels.long()
        return -(1 - sde.alphas_cumprod[i]).sqrt()[:, None] * exact(x, sde.discrete_time(i))

    def two_outputs(x, labels):
        return torch.cat([eps_model(x, labels), torch.full_like(x, v)], 1)

    x_T = torch.randn(B, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = dict(N=N, x_T=x_T, dtype=torch.float64)
    ref, _ = sample(sde, NetworkScore(eps_model, sde, "eps", "discrete"), (B, 2), method="ddpm", variance=variance,
                    generator=torch.Generator().manual_seed(1), **kw)
    lv = LearnedVarianceScore(two_outputs, sde, time_labels="discrete")
    x, nfe = sample(sde, lv, (B, 2), method="ddpm", variance="learned", generator=torch.Generator().manual_seed(1), **kw)
    assert nfe == N
    torch.testing.assert_close(x, ref, rtol=1e-12, atol=1e-12)
    # respace = N is the chain itself
    x_full, _ = sample(sde, lv, (B, 2), method="ddpm", variance="learned", respace=N,
                       generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(x_full, ref, rtol=1e-12, atol=1e-12)


def test_respaced_chain_marginals_are_alpha_bar_at_kept_levels():
    sde = VPSDE(N=1000)
    chain = DiscreteChain(sde, respace=25)
    levels = respaced_levels(1000, 25)
    assert chain.levels.tolist() == levels.tolist() and len(levels) == 25
    ab = sde.alphas_cumprod[levels]
    # forward chain: mean coefficient prod r_k and variance by the step recursion
    torch.testing.assert_close(torch.cumprod(chain.ratio, 0).square(), ab, rtol=1e-12, atol=0)
    var = torch.zeros((), dtype=torch.float64)
    for k in range(25):
        var = chain.ratio[k] ** 2 * var + chain.beta[k]
        torch.testing.assert_close(var, 1 - ab[k], rtol=1e-12, atol=0)
    # improved DDPM's respaced betas: 1 - alpha_bar_k / alpha_bar_{k-1}
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    torch.testing.assert_close(chain.beta, 1 - ab / ab_prev, rtol=1e-10, atol=0)


def test_respaced_learned_sampling_with_exact_reverse_keeps_gaussian_marginal():
    # Data N(m0, s0^2): with eps from the exact score (the exact posterior mean) and v giving the
    # exact Var[x_{k-1} | x_k] of the respaced chain, each step keeps the exact marginal.
    m0, s0, K, B = 0.3, 0.5, 10, 20000
    sde = VPSDE(N=1000)
    chain = DiscreteChain(sde, respace=K)
    ab = sde.alphas_cumprod[chain.levels]
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    V, V_prev = ab * s0**2 + 1 - ab, ab_prev * s0**2 + 1 - ab_prev
    var_true = V_prev * (1 - (ab / ab_prev) * V_prev / V)
    beta = 1 - ab / ab_prev
    bt = beta * (1 - ab_prev) / (1 - ab)
    bt[0] = bt[1]
    v_exact = torch.log(var_true / bt) / torch.log(beta / bt)

    def net(x, labels):
        k = torch.searchsorted(chain.levels, labels.long())
        score = -(x - ab[k, None].sqrt() * m0) / V[k, None]
        return torch.cat([-(1 - ab[k, None]).sqrt() * score, v_exact[k, None].expand_as(x)], 1)

    g = torch.Generator().manual_seed(0)
    x_T = ab[-1].sqrt() * m0 + V[-1].sqrt() * torch.randn(B, 1, generator=g, dtype=torch.float64)
    x, nfe = sample(sde, LearnedVarianceScore(net, sde, time_labels="discrete"), (B, 1), method="ddpm",
                    variance="learned", respace=K, denoise=False, x_T=x_T, generator=g, dtype=torch.float64)
    assert nfe == K
    se_mean, se_var = s0 / math.sqrt(B), s0**2 * math.sqrt(2 / (B - 1))
    assert abs(x.mean() - m0) < 4 * se_mean
    assert abs(x.var() - s0**2) < 4 * se_var


def test_respace_needs_the_trained_chain():
    sde = VPSDE(N=100)
    with pytest.raises(ValueError, match="leave the sampler's N unset"):
        sample(sde, lambda x, t: -x, (4, 2), method="ddpm", respace=10, N=50)
    with pytest.raises(ValueError, match="respace"):
        sample(sde, lambda x, t: -x, (4, 2), method="ddpm", respace=200)
    with pytest.raises(ValueError, match="LearnedVarianceScore"):
        sample(sde, lambda x, t: -x, (4, 2), method="ddpm", variance="learned")
