"""The few-step exact-score solvers: DPM-Solver++(3M), UniPC and the optimised time grid.

Exact answers: for data N(mu, v) the probability-flow map x_T -> x_eps is affine and known in
closed form (tests/test_sampler_order.py's `exact_flow_map`); the solvers' score-evaluation counts
are exact; a quadratic data prediction is integrated exactly by the third-order step.
"""
import math

import pytest
import torch

from sde_lib import VESDE, VPSDE, GaussianMixture, subVPSDE
from sde_lib import grids
from sde_lib.samplers.dpm_solver import _third_order_step
from sde_lib.sampling import build_sampler, sample

from test_sampler_order import exact_flow_map, gaussian, observed_order


def flow_error(sde, method, N, eps, **options):
    """|a - a*| + |b - b*| of the sampler's affine map x_T -> x_eps on N(0.8, 0.5) data."""
    a_star, b_star = exact_flow_map(sde, sde.T, eps)
    x_T = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    out, _ = sample(sde, gaussian().score_fn(sde), (2, 1), method=method, N=N, eps=eps, denoise=False,
                    x_T=x_T, dtype=torch.float64, **options)
    return abs((out[1] - out[0]).item() - a_star) + abs(out[0].item() - b_star)


@pytest.mark.parametrize("sde_cls", [VPSDE, subVPSDE, VESDE])
@pytest.mark.parametrize(
    "method, options, order",
    [
        ("dpm_solver", dict(order=3), 3),
        ("unipc", dict(order=1), 2),  # UniC raises the predictor's order by one (paper Thm. 3.1)
        ("unipc", dict(order=2), 3),
        ("unipc", dict(order=3), 3),  # its first step (order 2 after correction) caps it at 3
    ],
)
def test_fast_solvers_converge_at_their_order(sde_cls, method, options, order):
    if sde_cls is VESDE and method == "dpm_solver":
        # The first (first-order) step's O(h^2) error caps DPM-Solver++(3M) at global order 2 when
        # the data prediction is not flat at T, as on VE (measured 2.07 at N = 32 -> 64); VP and
        # sub-VP start where it is flat (lambda_T = -5) and show order >= 3.
        order = 2
    sde = sde_cls() if sde_cls is not VESDE else VESDE(sigma_max=5.0)
    Ns = [16, 32, 64]
    errors = [flow_error(sde, method, N, 1e-2, **options) for N in Ns]
    orders = observed_order(errors, Ns)
    # Same rule as test_sampler_order: the asymptotic order, within the pre-asymptotic drift, or
    # higher (a higher observed order is the startup error not yet dominating).
    assert orders[-1] > order - 0.35 * order, (errors, orders)


def test_third_order_step_is_exact_for_quadratic_data_predictions():
    # If x0(lambda) = c0 + c1 lambda + c2 lambda^2 along the path, eq. 9 of DPM-Solver++ gives
    # x_next = (std_next / std) x + std_next int_lam^lam_next e^l x0(l) dl, with the integral in
    # closed form: int e^l l^k dl = e^l (l^2 - 2 l + 2), e^l (l - 1), e^l for k = 2, 1, 0.
    c0, c1, c2 = 0.3, -0.7, 0.4
    lams = torch.tensor([-1.0, -0.4, 0.1, 0.9], dtype=torch.float64)  # lambda_2, lambda_1, lambda_0, next

    def x0(lam):
        return torch.full((1, 1), c0 + c1 * lam + c2 * lam**2, dtype=torch.float64)

    def antiderivative(lam):
        return math.exp(lam) * (c0 + c1 * (lam - 1) + c2 * (lam**2 - 2 * lam + 2))

    lam_0, lam_next = lams[2].item(), lams[3].item()
    std, std_next = 0.8, 0.3
    alpha_next = std_next * math.exp(lam_next)
    x = torch.full((1, 1), 1.7, dtype=torch.float64)
    exact = std_next / std * 1.7 + std_next * (antiderivative(lam_next) - antiderivative(lam_0))
    out = _third_order_step(
        x, torch.tensor([std_next / std], dtype=torch.float64), torch.tensor([alpha_next], dtype=torch.float64),
        torch.tensor([lam_next - lam_0], dtype=torch.float64),
        (x0(lams[2].item()), x0(lams[1].item()), x0(lams[0].item())),
        (torch.tensor([lams[2].item() - lams[1].item()], dtype=torch.float64),
         torch.tensor([lams[1].item() - lams[0].item()], dtype=torch.float64)),
    )
    assert out.item() == pytest.approx(exact, rel=1e-12)


def test_unipc_predictor_of_order_two_is_dpm_solver_2m():
    # UniP-2 with a_1 = 1/2 is DPM-Solver++(2M) (UniPC paper, sec. 3.2): without the corrector the
    # two agree to rounding on any score.
    sde = VPSDE()
    gm = GaussianMixture([0.4, 0.6], [[-1.0, 0.5], [1.0, -0.5]], [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.4]]])
    x_T = sde.prior_sampling((64, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref, _ = sample(sde, gm.score_fn(sde), (64, 2), method="dpm_solver", order=2, N=8, x_T=x_T, dtype=torch.float64)
    out, _ = sample(sde, gm.score_fn(sde), (64, 2), method="unipc", order=2, corrector=False, N=8, x_T=x_T,
                    dtype=torch.float64)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method, options", [("dpm_solver", dict(order=3)), ("unipc", dict(order=3)),
                                             ("unipc", dict(order=2, corrector=False))])
@pytest.mark.parametrize("denoise", ["pf", False])
@pytest.mark.parametrize("N", [1, 2, 5, 10])
def test_fast_solvers_count_exactly_N_evaluations(method, options, denoise, N):
    sde = VPSDE()
    out, nfe = sample(sde, gaussian().score_fn(sde), (3, 1), method=method, N=N, denoise=denoise,
                      generator=torch.Generator().manual_seed(0), **options)
    assert nfe == N
    assert torch.isfinite(out).all()


def test_optimized_grid_beats_logsnr_on_its_objective_and_keeps_the_ends():
    # The optimised grid minimises the solver's error on Gaussian data of every scale; on a scale
    # inside that range its error at N = 6 must be below the log-SNR grid's (measured: see
    # grids.optimized_time_points), the ends must be T and eps, and the times must decrease.
    sde, eps, N = VPSDE(), 1e-3, 6
    sampler = build_sampler("dpm_solver", order=2, schedule="optimized", eps=eps, N=N)
    grid = grids.optimized_time_points(sde, eps, N, sampler.method, "pf")
    assert grid[0].item() == sde.T and grid[-1].item() == eps
    assert (grid[1:] < grid[:-1]).all()
    total = {}
    for schedule in ("logsnr", "optimized"):
        errors = []
        for v in (1e-3, 1e-2, 1e-1):
            gm = GaussianMixture([1.0], [[0.0]], [[[v]]])
            x_T = torch.ones(1, 1, dtype=torch.float64)
            out, nfe = sample(sde, gm.score_fn(sde), (1, 1), method="dpm_solver", order=2, schedule=schedule,
                              N=N, eps=eps, x_T=x_T, dtype=torch.float64)
            alpha, std = (c.item() for c in sde.marginal_coeffs(torch.tensor([sde.T], dtype=torch.float64)))
            a_e, s_e = (c.item() for c in sde.marginal_coeffs(torch.tensor([eps], dtype=torch.float64)))
            var_eps = a_e**2 * v + s_e**2
            exact = math.sqrt(var_eps / (alpha**2 * v + std**2)) * (1 - 0.5 * s_e**2 / var_eps) / a_e
            errors.append(math.log(out.item() / exact) ** 2)
            assert nfe == N
        total[schedule] = sum(errors)
    assert total["optimized"] < total["logsnr"], total


@pytest.mark.parametrize("method, options, message", [
    ("dpm_solver", dict(order=4), "order=4"),
    ("unipc", dict(order=0), "order=0"),
    ("unipc", dict(variant="bh3"), "variant"),
    ("unipc", dict(corrector="yes"), "corrector"),
    ("unipc", dict(schedule="cosine"), "schedule"),
    ("dpm_solver", dict(grid_max_scale=0.0), "grid_max_scale"),
    ("unipc", dict(grid_max_scale="big"), "grid_max_scale"),
])
def test_bad_options_are_rejected_before_work(method, options, message):
    with pytest.raises(ValueError, match=message):
        build_sampler(method, **options)


def test_optimized_grid_max_scale_fits_the_grid_to_coarser_data():
    # With max_scale = 3 the objective covers data std from std(eps) / alpha(eps) up to 3
    # (grids.optimized_time_points); on Gaussian data of std 0.01, 0.1, 1 and 3, whose flow is known
    # exactly, that grid's summed error at N = 6 must be below the default grid's (fitted only up
    # to std 1) and the log-SNR grid's; the ends stay T and eps and the times decrease.
    sde, eps, N = VPSDE(), 1e-3, 6
    alpha, std = (c.item() for c in sde.marginal_coeffs(torch.tensor([sde.T], dtype=torch.float64)))
    a_e, s_e = (c.item() for c in sde.marginal_coeffs(torch.tensor([eps], dtype=torch.float64)))
    total = {}
    for name, options in [("logsnr", dict(schedule="logsnr")), ("default", dict(schedule="optimized")),
                          ("max3", dict(schedule="optimized", grid_max_scale=3.0))]:
        total[name] = 0.0
        for v in (1e-4, 1e-2, 1.0, 9.0):
            gm = GaussianMixture([1.0], [[0.0]], [[[v]]])
            x_T = torch.ones(1, 1, dtype=torch.float64)
            out, nfe = sample(sde, gm.score_fn(sde), (1, 1), method="dpm_solver", order=2, N=N, eps=eps, x_T=x_T,
                              dtype=torch.float64, **options)
            var_eps = a_e**2 * v + s_e**2
            exact = math.sqrt(var_eps / (alpha**2 * v + std**2)) * (1 - 0.5 * s_e**2 / var_eps) / a_e
            total[name] += math.log(out.item() / exact) ** 2
            assert nfe == N
    assert total["max3"] < total["default"] and total["max3"] < total["logsnr"], total
    sampler = build_sampler("dpm_solver", order=2, schedule="optimized", grid_max_scale=3.0, eps=eps, N=N)
    grid = grids.optimized_time_points(sde, eps, N, sampler.method, "pf", max_scale=3.0)
    assert grid[0].item() == sde.T and grid[-1].item() == eps and (grid[1:] < grid[:-1]).all()
