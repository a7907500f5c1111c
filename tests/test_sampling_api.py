"""Sampler API: DDPM's Algorithm 2 exactly, exact NFE counts, reproducibility, argument errors."""
import math

import pytest
import torch

from sde_lib import VESDE, VPSDE, NetworkScore
from sde_lib.sampling import METHODS, sample, time_grid, time_points


def small_eps_net(N=1000):
    """A fixed non-linear epsilon 'network' of (x, DDPM timestep): the exact noise predictor of
    N(0, 0.5 I) data plus a non-linear perturbation, so that samples stay O(1)."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(12, 12, generator=g) / math.sqrt(12)
    alpha_bar = VPSDE(N=N).alphas_cumprod.float()
    def eps_net(x, labels):
        ab = alpha_bar[labels.round().long()][:, None]
        h = x.reshape(x.shape[0], -1)
        eps = h * torch.sqrt(1 - ab) / (0.5 * ab + 1 - ab) + 0.05 * torch.tanh(h @ W)
        return eps.reshape(x.shape)
    return eps_net


def algorithm_2(eps_net, shape, generator, N=1000):
    """Plain transcription of Ho et al. (2020), Algorithm 2, with linspace(1e-4, 0.02, N) betas.

    Noise is drawn in the same order as the library's sampler draws it (x_T, then one z per
    step, the last one discarded as Algorithm 2 sets z = 0 at t = 1).
    """
    betas = torch.linspace(1e-4 * 1000 / N, 0.02 * 1000 / N, N, dtype=torch.float64)
    alphas = 1.0 - betas
    alpha_bar = torch.cumprod(alphas, 0)
    x = torch.randn(shape, generator=generator)
    for i in reversed(range(N)):
        z = torch.randn(shape, generator=generator)
        if i == 0:
            z = torch.zeros_like(z)
        eps = eps_net(x, torch.full((shape[0],), float(i)))
        coef = (betas[i] / torch.sqrt(1 - alpha_bar[i])).float()
        x = (x - coef * eps) / torch.sqrt(alphas[i]).float() + torch.sqrt(betas[i]).float() * z
    return x


@pytest.mark.parametrize("N", [1000, 50])
def test_ddpm_and_ancestral_predictor_are_algorithm_2(N):
    sde = VPSDE(0.1, 20.0, N)
    net = small_eps_net(N)
    score_fn = NetworkScore(net, sde, prediction="eps", time_labels="discrete")
    shape = (4, 3, 2, 2)
    ref = algorithm_2(net, shape, torch.Generator().manual_seed(5), N)
    x_ddpm, nfe = sample(sde, score_fn, shape, method="ddpm", generator=torch.Generator().manual_seed(5))
    x_pc, _ = sample(sde, score_fn, shape, method="pc", predictor="ancestral_sampling", corrector="none",
                     denoise="mean", generator=torch.Generator().manual_seed(5))
    assert nfe == N
    assert (x_ddpm - ref).abs().max() <= 1e-6
    assert (x_pc - ref).abs().max() <= 1e-6


def official_ve_pc(score_fn, x, generator, N, snr=0.16, eps=1e-3, sigma_min=0.01, sigma_max=50.0):
    """Plain transcription of the official PC sampler for VE: Langevin corrector (unadjusted,
    batch-mean norms), then the reverse-diffusion predictor on SMLD's sigma levels, on
    linspace(1, eps, N), returning the last predictor mean. Draws as the library does."""
    sigmas = torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), N, dtype=torch.float64))
    B = x.shape[0]
    for t in torch.linspace(1.0, eps, N, dtype=torch.float64):
        vec_t = torch.full((B,), t.item(), dtype=x.dtype)
        grad, noise = score_fn(x, vec_t), torch.randn(x.shape, generator=generator, dtype=x.dtype)
        grad_norm = grad.reshape(B, -1).norm(dim=-1).mean()
        noise_norm = noise.reshape(B, -1).norm(dim=-1).mean()
        step = 2 * (snr * noise_norm / grad_norm) ** 2
        x = x + step * grad + torch.sqrt(2 * step) * noise
        i = int(t.item() * (N - 1))
        var = sigmas[i] ** 2 - (sigmas[i - 1] ** 2 if i > 0 else 0.0)
        x_mean = x + var * score_fn(x, vec_t)
        x = x_mean + var.sqrt() * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x_mean


def test_official_pc_sampler_is_available_exactly():
    """corrector_update="euler_maruyama", the uniform grid and denoise="mean" are the official
    reverse diffusion + Langevin sampler, step for step."""
    sde, N, shape = VESDE(), 50, (6, 3, 4, 4)

    def score_fn(x, t):  # exact score of N(0, I) data, plus a non-linear term
        return -x / (1.0 + sde.marginal_std(t).to(x.dtype) ** 2)[:, None, None, None] + 0.1 * torch.sin(x)

    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 50.0
    ref = official_ve_pc(score_fn, x_T.clone(), torch.Generator().manual_seed(5), N)
    ours, nfe = sample(sde, score_fn, shape, method="pc", N=N, x_T=x_T, denoise="mean", schedule="uniform",
                       corrector_update="euler_maruyama", generator=torch.Generator().manual_seed(5))
    assert nfe == 2 * N
    assert (ours - ref).abs().max() <= 1e-9 * ref.abs().max()
    default, _ = sample(sde, score_fn, shape, method="pc", N=N, x_T=x_T, denoise="mean",
                        generator=torch.Generator().manual_seed(5))
    assert (default - ref).abs().max() > 1e-3  # the default Langevin update is not the official one


def _quadratic_score(x, t):
    return -x


@pytest.mark.parametrize(
    "method, options, expected",
    [
        ("pc", dict(corrector="none"), 25),  # the official code reports 50 here
        ("pc", dict(corrector="langevin", n_steps=2), 75),
        ("pc", dict(predictor="none", corrector="ald"), 25),
        ("ddpm", {}, 25),
        ("ddim", {}, 25),
        ("ddim", dict(eta=0.5, denoise=False), 25),
        ("langevin", dict(n_steps_each=3, denoise=False), 75),
        ("langevin", dict(n_steps_each=3, denoise=True), 76),
    ],
)
def test_nfe_counts_score_calls_exactly(method, options, expected):
    calls = []
    def score_fn(x, t):
        calls.append(1)
        return -x
    _, nfe = sample(VPSDE(), score_fn, (3, 2), method=method, N=25, **options)
    assert nfe == len(calls) == expected


@pytest.mark.parametrize("method", sorted(METHODS))
def test_same_generator_same_samples(method):
    sde = VESDE(sigma_max=5.0)
    opts = dict(N=10) if method != "ode" else {}
    a, _ = sample(sde, _quadratic_score, (5, 2), method=method, generator=torch.Generator().manual_seed(3), **opts)
    b, _ = sample(sde, _quadratic_score, (5, 2), method=method, generator=torch.Generator().manual_seed(3), **opts)
    assert torch.equal(a, b)


def test_time_grids():
    sde = VPSDE()
    g = time_grid(sde, 1e-3, 5)
    assert g.shape == (6,) and g[0] == 1.0 and g[-2] == 1e-3 and g[-1] == 0.0
    for schedule in ("uniform", "logsnr", "edm"):
        t = time_points(sde, 1e-3, 50, schedule)
        assert t[0] == 1.0 and t[-1] == 1e-3 and torch.all(torch.diff(t) < 0)
    lam = sde.log_snr(time_points(sde, 1e-3, 50, "logsnr"))
    torch.testing.assert_close(torch.diff(lam), torch.full((49,), (lam[-1] - lam[0]).item() / 49, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="magic"), "method='magic' is not one of"),
        (dict(method="pc", predictor="rk4"), "predictor='rk4' is not one of"),
        (dict(method="pc", corrector="hmc"), "corrector='hmc' is not one of"),
        (dict(N=0), "N=0"),
        (dict(eps=0.0), "eps=0.0"),
        (dict(eps=1.0), "eps=1.0"),
        (dict(method="ddim", eta=1.5), "eta=1.5"),
        (dict(method="ddim", predictor="x"), "unknown option"),
        (dict(method="pc", schedule="cosine", predictor="euler_maruyama"), "schedule='cosine' is not one of"),
        (dict(x_T=torch.zeros(4, 2)), "x_T has shape"),
        (dict(x_T=torch.full((3, 2), float("nan"))), "x_T holds 6 non-finite"),
        (dict(method="sde_solver", solver="rk4"), "solver='rk4'"),
    ],
)
def test_bad_arguments_raise_before_work(kwargs, match):
    calls = []
    def score_fn(x, t):
        calls.append(1)
        return -x
    with pytest.raises(ValueError, match=match):
        sample(VPSDE(), score_fn, (3, 2), **kwargs)
    assert not calls


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        sample(VPSDE(), _quadratic_score, (3,))


@pytest.mark.parametrize("solver, per_step", [("euler", 1), ("milstein", 1), ("heun", 2), ("srk", None)])
def test_torchsde_solvers_run_and_count(solver, per_step):
    sde = VPSDE()
    x, nfe = sample(sde, _quadratic_score, (4, 2), method="sde_solver", solver=solver, N=50,
                    generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    if per_step is not None:  # N steps, torchsde's one shape check, and the final step to t = 0
        assert nfe == 50 * per_step + 2
