"""Consistency models (Song et al. 2023): the boundary condition holds exactly at the smallest
noise level, the schedules are the paper's formulas, one- and multistep sampling of the exact
consistency function of Gaussian data give the exact distribution, and the distillation loss of
the exact function with the exact teacher vanishes as the levels refine."""
import math

import pytest
import torch

from models.mlp import ScoreMLP
from sde_lib import VESDE, VPSDE, subVPSDE
from sde_lib.consistency import (ConsistencyFunction, boundary_coeffs, consistency_loss, karras_levels,
                                 n_schedule, noise_level, target_decay)
from sde_lib.sampling import build_sampler, sample
from sde_lib.utils import batch_broadcast


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE()])
def test_boundary_condition_is_exact_at_the_smallest_noise_level(sde):
    torch.manual_seed(0)
    eps = 1e-3
    f = ConsistencyFunction(ScoreMLP(data_dim=2, hidden_dim=32, num_blocks=1), sde, eps=eps)
    x = torch.randn(64, 2) * 3
    t = torch.full((64,), eps)
    alpha = sde.marginal_coeffs(t)[0]
    assert torch.equal(f(x, t), x / batch_broadcast(alpha, x))  # f(y, sigma_min) = y, bit for bit
    sigma_min = noise_level(sde, t)
    c_skip, c_out = boundary_coeffs(sigma_min, sigma_min, 0.5)
    assert torch.equal(c_skip, torch.ones_like(c_skip)) and torch.equal(c_out, torch.zeros_like(c_out))
    # away from the boundary the network matters
    assert not torch.allclose(f(x, torch.full((64,), 0.5)), x / batch_broadcast(sde.marginal_coeffs(torch.full((64,), 0.5))[0], x))


def test_schedules_are_the_papers_formulas():
    # App. C: N(k) = ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1) + 1, mu(k) = exp(s0 log mu0 / N(k))
    assert n_schedule(0, 1000) == 2 and n_schedule(1000, 1000) == 151
    assert n_schedule(250, 1000) == math.ceil(math.sqrt(0.25 * (151**2 - 4) + 4) - 1) + 1
    assert [n_schedule(k, 100) for k in range(0, 101, 10)] == sorted(n_schedule(k, 100) for k in range(0, 101, 10))
    assert target_decay(0, 1000) == pytest.approx(0.9)
    assert target_decay(1000, 1000) == pytest.approx(math.exp(2 * math.log(0.9) / 151))
    levels = karras_levels(0.002, 80.0, 18)
    assert levels[0].item() == pytest.approx(0.002) and levels[-1].item() == pytest.approx(80.0)
    assert (levels[1:] > levels[:-1]).all()


class GaussianConsistency:
    """The exact consistency function of N(0, V) data: the probability flow maps y at sigma to
    y sqrt((V + sigma_min^2) / (V + sigma^2)) at sigma_min (the marginal std ratio)."""

    def __init__(self, sde, eps, V):
        self.sde, self.eps, self.V = sde, eps, V
        self.sigma_min = noise_level(sde, torch.tensor([eps], dtype=torch.float64))

    def __call__(self, x, t):
        alpha = self.sde.marginal_coeffs(t)[0]
        sigma = noise_level(self.sde, t)
        ratio = torch.sqrt((self.V + self.sigma_min**2) / (self.V + sigma**2))
        return batch_broadcast(ratio / alpha, x) * x

    def as_score(self):
        return ConsistencyFunction.as_score(self)


@pytest.mark.parametrize("N", [1, 2, 4])
def test_consistency_sampling_of_the_exact_function_is_exact(N):
    # VP's prior N(0, 1) is the exact marginal at T for V = 1; the samples must be N(0, 1 + sigma_min^2).
    sde, eps, n = VPSDE(), 1e-3, 20000
    f = GaussianConsistency(sde, eps, 1.0)
    out, nfe = sample(sde, f.as_score(), (n, 1), method="consistency", N=N, eps=eps,
                      generator=torch.Generator().manual_seed(N), dtype=torch.float64)
    assert nfe == N
    var = 1.0 + f.sigma_min.item() ** 2
    assert abs(out.mean().item()) < 4 * math.sqrt(var / n)
    assert abs(out.var().item() - var) < 4 * var * math.sqrt(2 / (n - 1))


def test_distillation_loss_of_the_exact_function_vanishes_as_levels_refine():
    # With the exact teacher score and f = f_target = the exact consistency function, the only
    # error is the teacher's Euler step, O(h^2) per pair: the loss (its square) falls >= 8x when
    # the levels double.
    sde, eps, V = VPSDE(), 1e-3, 0.3
    f = GaussianConsistency(sde, eps, V)

    def teacher_score(x, t):
        alpha, std = sde.marginal_coeffs(t)
        return -x / batch_broadcast(alpha**2 * V + std**2, x)

    f.sde = sde
    x = math.sqrt(V) * torch.randn(4096, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    losses = [consistency_loss(f, f, x, N=N, teacher_score=teacher_score,
                               generator=torch.Generator().manual_seed(1)).mean().item() for N in (20, 40, 80)]
    assert losses[1] < losses[0] / 8 and losses[2] < losses[1] / 8, losses


def test_bad_schedule_is_rejected():
    with pytest.raises(ValueError, match="schedule"):
        build_sampler("consistency", schedule="cosine")
