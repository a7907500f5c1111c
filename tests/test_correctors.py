"""Langevin correctors against the exact stationary law of their update on a Gaussian target.

For a target N(0, v) the score is -x / v and one corrector step with step size h is linear:
  * Euler-Maruyama (official): x' = (1 - h / v) x + sqrt(2 h) z, stationary variance
    v / (1 - h / (2 v));
  * Leimkuhler-Matthews: x' = (1 - h / v) x + sqrt(h / 2) (z_prev + z), stationary variance v.
The tests run many steps at a fixed time and compare the sample variance with these values,
with tolerances of 5 standard errors of a variance estimate from B samples (v sqrt(2 / B)).
"""
import math

import pytest
import torch

from sde_lib import VESDE
from sde_lib.correctors import AnnealedLangevinCorrector, LangevinCorrector

B = 20_000
T_FIX = 0.5  # VESDE() at t = 0.5: sigma = 0.01 * 5000 ** 0.5 = 0.707, the target variance of delta data


def _delta_data_score(sde):
    """Exact score of p_t for data at the origin: -x / sigma(t)^2."""
    def score_fn(x, t):
        return -x / sde.marginal_std(t).to(x.dtype).square()[:, None]
    return score_fn


def _stationary_variance(corrector_cls, update, dim, n_steps=60, **kwargs):
    sde = VESDE()
    corrector = corrector_cls(sde, _delta_data_score(sde), snr=0.5, n_steps=n_steps, update=update, **kwargs)
    t = torch.full((B,), T_FIX, dtype=torch.float64)
    v = sde.marginal_std(t[:1]).item() ** 2
    # Start away from the target (twice its variance); 60 steps contract by (1 - h / v)^60 = 2^-60.
    x = math.sqrt(2 * v) * torch.randn(B, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x, _ = corrector.correct(x, t, torch.Generator().manual_seed(0))
    return x.var(dim=0).mean().item() / v


@pytest.mark.parametrize("corrector_cls, dim, kwargs, euler_ratio", [
    # step h = 2 (snr sigma)^2 = v / 2, fixed: Euler-Maruyama's variance is v / (1 - 1/4).
    (AnnealedLangevinCorrector, 1, {}, 4.0 / 3.0),
    # step h = 2 (snr |z| / |s|)^2 with |s|^2 = dim r / v at variance r v: h / v = 2 snr^2 / r, and
    # r = 1 / (1 - snr^2 / r) gives r = 1 + snr^2 (the batch-mean norms cancel to O(1 / dim)).
    (LangevinCorrector, 64, {"step_size_rule": "batch"}, 1.25),
])
def test_leimkuhler_matthews_update_is_exact_for_gaussians_and_euler_is_biased(corrector_cls, dim, kwargs, euler_ratio):
    se = math.sqrt(2.0 / (B * dim))  # relative standard error of the pooled variance estimate
    ratio_lm = _stationary_variance(corrector_cls, "leimkuhler_matthews", dim, **kwargs)
    ratio_em = _stationary_variance(corrector_cls, "euler_maruyama", dim, **kwargs)
    assert abs(ratio_lm - 1.0) < 5 * se
    assert abs(ratio_em - euler_ratio) < 5 * se
    assert ratio_em - ratio_lm > 20 * se


def test_unknown_update_is_refused_with_the_choices():
    sde = VESDE()
    with pytest.raises(ValueError, match="update='ula' is not one of"):
        LangevinCorrector(sde, _delta_data_score(sde), update="ula")
