"""Every parameterisation of the score adapter, against the exact score of a Gaussian mixture.

The network output each parameterisation asks for is computed here from its definition (the
paper's formula, written in the test) and the exact score; the adapter must turn it back into
that score to float64 precision.
"""
import math

import pytest
import torch

from sde_lib import EDMVESDE, VESDE, VPSDE, CosineVPSDE, GaussianMixture, LinearInterpolantSDE, NetworkScore, subVPSDE
from sde_lib.score import PREDICTIONS

SDES = {"vp": VPSDE(), "subvp": subVPSDE(), "ve": VESDE(sigma_max=20.0), "cosine": CosineVPSDE(),
        "linear": LinearInterpolantSDE(), "edm_ve": EDMVESDE(sigma_max=20.0)}
SIGMA_DATA = 0.7


def mixture():
    return GaussianMixture.random(dim=4, n_components=3, seed=3)


def targets(sde, x, t, score):
    """{prediction: the network output it needs}, from each paper's definition (float64)."""
    alpha, std = (c[:, None] for c in sde.marginal_coeffs(t))
    eps = -std * score                      # x = alpha x0 + std eps, score = -E[eps | x] / std
    x0 = (x + std**2 * score) / alpha       # Tweedie: E[x0 | x]
    sigma, sd = std / alpha, SIGMA_DATA     # Karras et al. 2022, Table 1 ("VP"/"VE" -> sigma)
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
    drift, g = sde.sde(x, t)
    return {
        "score": score,
        "eps": eps,
        "scaled_score": std * score,
        "x0": x0,
        "v": alpha * eps - std * x0,                          # Salimans & Ho 2022
        "edm": (x0 - c_skip * x / alpha) / c_out,            # F of D = c_skip x^ + c_out F
        "flow": drift - 0.5 * g[:, None] ** 2 * score,        # Song et al. 2021, eq. 13
    }


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_network_output_round_trips_to_the_exact_score(name, prediction):
    sde, gm = SDES[name], mixture()
    g = torch.Generator().manual_seed(0)
    n = 64
    t = torch.linspace(1e-3, sde.T, n, dtype=torch.float64)
    x = gm.sample(n, generator=g, dtype=torch.float64)
    alpha, std = sde.marginal_coeffs(t)
    x = alpha[:, None] * x + std[:, None] * torch.randn(x.shape, generator=g, dtype=torch.float64)
    score = gm.score(x, sde, t)
    out = targets(sde, x, t, score)[prediction]
    seen = {}

    def net(inp, labels):
        seen["inp"], seen["labels"] = inp, labels
        return out

    adapter = NetworkScore(net, sde, prediction=prediction, sigma_data=SIGMA_DATA)
    # x0 and edm give the score as (alpha x0 - x) / std^2: rounding x (float64) is amplified by
    # 1 / std^2, the conditioning of the conversion itself (1e8 for sub-VP at t = 1e-3).
    error = (adapter(x, t) - score).abs()
    allowed = 1e-10 * score.abs() + 1e-14 * x.abs() / std[:, None] ** 2
    assert bool((error <= allowed).all()), (error / allowed).max()
    torch.testing.assert_close(adapter.output_from_score(x, t, score), out, rtol=1e-10,
                               atol=1e-10 * out.abs().max().item())
    if prediction == "edm":  # the network sees c_in x / alpha and c_noise = ln(sigma) / 4
        sigma = (std / alpha)[:, None]
        torch.testing.assert_close(seen["inp"], x / alpha[:, None] / torch.sqrt(sigma**2 + SIGMA_DATA**2))
        torch.testing.assert_close(seen["labels"], 0.25 * torch.log(std / alpha))
    else:
        torch.testing.assert_close(seen["inp"], x)
        torch.testing.assert_close(seen["labels"], sde.network_time_label(t))


def test_v_is_the_velocity_of_the_angle_on_vp():
    """On VP (alpha^2 + std^2 = 1), v = d x_phi / d phi with alpha = cos phi, std = sin phi
    (Salimans & Ho 2022, App. D), so x0 = alpha x - std v."""
    sde = VPSDE()
    gm = mixture()
    g = torch.Generator().manual_seed(1)
    t = torch.rand(32, generator=g, dtype=torch.float64) * 0.9 + 0.05
    x0 = gm.sample(32, generator=g, dtype=torch.float64)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    alpha, std = (c[:, None] for c in sde.marginal_coeffs(t))
    phi = torch.atan2(std, alpha)
    v = -torch.sin(phi) * x0 + torch.cos(phi) * z  # d/dphi (cos phi x0 + sin phi z)
    x = alpha * x0 + std * z
    torch.testing.assert_close(alpha * x - std * v, x0)
    adapter = NetworkScore(lambda inp, labels: v, sde, prediction="v")
    # the adapter's score from the per-sample v is that of the (single-sample) denoiser x0 -> z
    torch.testing.assert_close(adapter(x, t), -z / std)


def test_edm_coefficients_at_sigma_data():
    """At sigma = sigma_data: c_skip = 1/2, c_out = sigma_data / sqrt 2, c_in = 1 / (sqrt 2 sd)."""
    sde = VESDE(sigma_min=0.01, sigma_max=10.0)
    sd = 0.5
    t = sde_time_at_sigma(sde, sd)
    adapter = NetworkScore(None, sde, prediction="edm", sigma_data=sd)
    c_skip, c_out, c_in, c_noise = (c.item() for c in adapter.edm_coeffs(t))
    assert c_skip == pytest.approx(0.5, rel=1e-12)
    assert c_out == pytest.approx(sd / math.sqrt(2), rel=1e-12)
    assert c_in == pytest.approx(1 / (math.sqrt(2) * sd), rel=1e-12)
    assert c_noise == pytest.approx(0.25 * math.log(sd), rel=1e-12)


def sde_time_at_sigma(sde, sigma):
    return torch.tensor([math.log(sigma / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)],
                        dtype=torch.float64)
