"""Samplers with exact Gaussian-mixture scores: they reach the true distribution; DDPM comes out exactly."""
import pytest
import torch

from mixtures import compare_to_truth, image_mixture, random_directions, sliced_w2, sw2_noise_floor, two_d_mixture
from sde_lib import VESDE, VPSDE, subVPSDE
from sde_lib.sampling import sample

SDES = {"vp": VPSDE, "subvp": subVPSDE, "ve": VESDE}
CASES = {"2d": (two_d_mixture, 4000), "3x8x8": (image_mixture, 1000)}
SAMPLERS = {
    "pc_rd_langevin": dict(method="pc", predictor="reverse_diffusion", corrector="langevin", N=1000),
    "euler_maruyama": dict(method="pc", predictor="euler_maruyama", corrector="none", N=1000),
    "ode_rk45": dict(method="ode", solver="RK45", rtol=1e-5, atol=1e-5),
    "ddim_100": dict(method="ddim", eta=0.0, N=100),
    "torchsde_euler": dict(method="sde_solver", solver="euler", N=500),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_sampler_reaches_the_true_distribution(sampler, sde_name, case):
    make_gm, n = CASES[case]
    gm, sde = make_gm(), SDES[sde_name]()
    options = dict(SAMPLERS[sampler])
    method = options.pop("method")
    x, nfe = sample(sde, gm.score_fn(sde), (n, *gm.event_shape), method=method,
                    generator=torch.Generator().manual_seed(11), **options)
    assert x.shape == (n, *gm.event_shape) and torch.isfinite(x).all()
    # With the default final step (denoise "pf" or "mean") the samplers remove all the noise, so
    # the target is p_0 itself (for VE too: the t = 0 kernel's sigma_min blur is removed).
    target = gm
    truth = target.sample(n, torch.Generator().manual_seed(12), dtype=torch.float64)
    z_max, z_crit, details = compare_to_truth(target, x, truth)
    assert z_max < z_crit, details
    dirs = random_directions(gm.dim)
    floor_mean, floor_sd = sw2_noise_floor(target, n, dirs)
    assert sliced_w2(x, truth, dirs) < floor_mean + 4 * floor_sd
