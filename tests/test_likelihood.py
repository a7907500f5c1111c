"""Tests of sde_lib.likelihood against the Gaussian-mixture oracle's exact log-densities.

The ODE carries p_eps to p_T and the prior stands in for p_T, so `log_likelihood` targets
    log p_eps(x) + log prior(z) - log p_T(z)          (`prior_mismatch` is the last two terms)
exactly; the tests compare with that, and with log p_eps alone only to show the term matters.
"""
import math
import pickle

import pytest
import torch

from sde_lib import VESDE, VPSDE, GaussianMixture, subVPSDE
from sde_lib.likelihood import (
    DIVERGENCES, LogLikelihood, bits_per_dim, dequantization_offset, log_likelihood, prior_mismatch,
)

F64 = torch.float64
SDES = {"vp": VPSDE, "subvp": subVPSDE, "ve": VESDE}
EPS = 1e-5


def _mixture(shape, n_components=3, seed=0):
    dim = math.prod(shape)
    base = GaussianMixture.random(dim=dim, n_components=n_components, seed=seed, scale=1.0)
    return GaussianMixture(base.weights, base.means, base.covs, event_shape=shape)


def _data(gm, n, seed=0, dtype=F64):
    return gm.sample(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _target(gm, sde, x, z):
    """Exact value targeted by the solver, and the prior-mismatch term in it (both (B,))."""
    mismatch = prior_mismatch(sde, z, lambda z_: gm.log_prob(z_, sde, sde.T))
    return gm.log_prob(x, sde, EPS) + mismatch, mismatch


# ---------------------------------------------------------------------------------------------
# Exact divergence


@pytest.mark.parametrize("sde_name", SDES)
def test_exact_divergence_2d(sde_name):
    """200 points of a 2-D, 3-component mixture. At rtol = atol = 1e-5:
    official settings (RK45, scipy's RMS norm over the batch): mean error / dim < 1e-3 [measured
    <= 6e-5] but the batch norm lets single points be off by up to 6e-3 / dim [measured];
    dopri5 with the per-example norm: every point within 1e-3 / dim [measured <= 3e-4]."""
    sde = SDES[sde_name]()
    gm = _mixture((2,))
    x = _data(gm, 200)
    logp, z, nfe = log_likelihood(sde, gm.score_fn(sde), x, "exact")
    target, mismatch = _target(gm, sde, x, z)
    err = (logp - target).abs() / 2
    assert err.mean().item() < 1e-3
    # The prior-mismatch term (mean |.| 0.004 nats VP / sub-VP, 0.012 VE [measured]) is larger
    # than the error left: comparing with log p_eps alone would measure mostly the prior.
    assert (logp - target).abs().mean() < mismatch.abs().mean() / 4
    strict = log_likelihood(
        sde, gm.score_fn(sde), x, "exact", method="dopri5", error_norm="per_example"
    )
    assert ((strict.logp - target).abs() / 2).max().item() < 1e-3
    assert strict.nfe > nfe  # stricter control costs more evaluations


@pytest.mark.parametrize("sde_name", SDES)
def test_exact_divergence_image_shaped(sde_name):
    """16 images 3x4x4 (d = 48): every point within 1e-3 nats / dim [measured <= 7e-5]."""
    sde = SDES[sde_name]()
    gm = _mixture((3, 4, 4), seed=1)
    x = _data(gm, 16)
    res = log_likelihood(
        sde, gm.score_fn(sde), x, "exact", method="dopri5", error_norm="per_example"
    )
    target, _ = _target(gm, sde, x, res.z)
    assert ((res.logp - target).abs() / 48).max().item() < 1e-3
    assert res.z.shape == x.shape and torch.equal(res.stderr, torch.zeros(16, dtype=F64))


def test_exact_trace_192d():
    """The exact trace at d = 192 (3x8x8), batched or looped VJPs, equals the trace of the full
    Jacobian. (A whole 192-D solve costs 192 VJPs x ~90 evaluations, ~10 s here: the benchmark
    runs it on 1000 points against the exact target; this test checks the trace itself.)"""
    from sde_lib.likelihood import _exact_trace

    sde = VPSDE()
    gm = _mixture((3, 8, 8), n_components=2, seed=2)
    x = _data(gm, 3)
    t = torch.full((3,), 0.01, dtype=F64)
    drift_fn = sde.reverse(gm.score_fn(sde), probability_flow=True).sde
    # Examples are independent: the Jacobian of the batch sum is (3, 8, 8, B, 3, 8, 8).
    jac = torch.autograd.functional.jacobian(lambda y: drift_fn(y, t)[0].sum(0), x)
    expected = jac.reshape(192, 3, 192).diagonal(dim1=0, dim2=2).sum(-1)  # (B,)
    x_in = x.clone().requires_grad_(True)
    drift = drift_fn(x_in, t)[0]
    for chunk in (192, 50, 1):  # one vmap, 4 chunks (the last short), a plain loop
        trace = _exact_trace(drift, x_in, chunk)[0]
        torch.testing.assert_close(trace, expected, rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Hutchinson-Skilling estimates


def test_hutchinson_unbiased_with_calibrated_stderr():
    """64 points of a 3x4x4 mixture, 16 probes each, VP. The estimate's error is probe noise only
    (the solver error, <= 7e-5 nats / dim, is 1e3 times smaller), so its mean over points must be
    within 4 standard errors of 0, the SE computed from the reported per-point stderr."""
    sde = VPSDE()
    gm = _mixture((3, 4, 4), seed=1)
    x = _data(gm, 64, seed=3)
    g = torch.Generator().manual_seed(0)
    mean_se = {}
    for divergence in ("rademacher", "gaussian"):
        res = log_likelihood(sde, gm.score_fn(sde), x, divergence, method="dopri5", n_probes=16,
                             generator=g)
        target, _ = _target(gm, sde, x, res.z)
        diff = res.logp - target
        se_of_mean = res.stderr.square().sum().sqrt().item() / len(x)
        bias = diff.mean().item()
        assert abs(bias) < 4 * se_of_mean, (divergence, bias, se_of_mean)
        # stderr is calibrated: with 16 probes, (diff / stderr)^2 has mean 15/13 = 1.15 (t with
        # 15 degrees of freedom) and an SE of about 0.2 over 64 points; [0.5, 2] is ~4 SE wide.
        assert 0.5 < (diff / res.stderr).square().mean().item() < 2.0
        mean_se[divergence] = res.stderr.mean().item()
    # Rademacher drops the diagonal of the (symmetric) Jacobian from the variance: smaller SE.
    assert mean_se["rademacher"] < mean_se["gaussian"]


def test_probes_share_one_solve():
    """Probes cost vector-Jacobian products, not score calls: one score call per ODE evaluation."""
    sde = VESDE()
    gm = _mixture((2,))
    x = _data(gm, 50)
    calls = []
    score = gm.score_fn(sde)

    def score_fn(x_, t_):
        calls.append(1)
        return score(x_, t_)

    res = log_likelihood(sde, score_fn, x, "rademacher", n_probes=8,
                         generator=torch.Generator().manual_seed(0))
    assert res.nfe == len(calls)
    single = log_likelihood(
        sde, score_fn, x, "rademacher", generator=torch.Generator().manual_seed(0)
    )
    assert res.nfe < 1.5 * single.nfe  # same trajectory; only the error norm sees 8 more columns
    assert res.per_probe.shape == (8, 50)
    torch.testing.assert_close(res.logp, res.per_probe.mean(0))
    torch.testing.assert_close(res.logp, res.prior_logp + res.delta_logp)
    torch.testing.assert_close(res.stderr, res.per_probe.std(0) / math.sqrt(8))


def test_result_unpacks_as_three_and_is_reproducible():
    sde = VPSDE()
    gm = _mixture((2,))
    x = _data(gm, 10)
    res = log_likelihood(sde, gm.score_fn(sde), x, generator=torch.Generator().manual_seed(5))
    assert isinstance(res, LogLikelihood) and isinstance(res, tuple) and len(res) == 3
    logp, z, nfe = res
    assert logp is res.logp and z is res.z and nfe == res.nfe and isinstance(nfe, int)
    assert logp.shape == (10,) and logp.dtype == F64 and z.shape == x.shape
    assert torch.isnan(res.stderr).all()  # one probe: no estimate of its own noise
    again = log_likelihood(sde, gm.score_fn(sde), x, generator=torch.Generator().manual_seed(5))
    other = log_likelihood(sde, gm.score_fn(sde), x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(again.logp, logp) and not torch.equal(other.logp, logp)
    assert "LogLikelihood" in repr(res)
    copied = pickle.loads(pickle.dumps(res))
    assert torch.equal(copied.logp, logp) and torch.equal(copied.per_probe, res.per_probe)


def test_float32_data_and_other_scipy_method():
    """float32 data and score: logp stays float64, z float32; the float32 score evaluations
    move the result by <= 1e-3 nats / dim from float64 (round-off ~1e-7, far below rtol)."""
    sde = subVPSDE()
    gm = _mixture((2,))
    x = _data(gm, 20)
    ref = log_likelihood(sde, gm.score_fn(sde), x, "exact", method="DOP853")
    res = log_likelihood(sde, gm.score_fn(sde), x.float(), "exact", method="DOP853")
    assert res.logp.dtype == F64 and res.z.dtype == torch.float32
    assert ((res.logp - ref.logp).abs() / 2).max().item() < 1e-3


def test_torch_methods_default_to_the_per_example_norm():
    """dopri5 without an error_norm is dopri5 with error_norm="per_example" (`ode.batch_error_norm`),
    and each point meets its target alone as in a batch: 1e-3 nats / dim, as the per-example rows
    of test_exact_divergence_2d [measured <= 3e-4]. torchdiffeq's own solver meets it too."""
    sde = VPSDE()
    gm = _mixture((2,))
    x = _data(gm, 40)
    default = log_likelihood(sde, gm.score_fn(sde), x, "exact", method="dopri5")
    explicit = log_likelihood(sde, gm.score_fn(sde), x, "exact", method="dopri5", error_norm="per_example")
    assert torch.equal(default.logp, explicit.logp) and default.nfe == explicit.nfe
    library = log_likelihood(sde, gm.score_fn(sde), x, "exact", method="dopri5", controller="torchdiffeq")
    for res in (default, library):
        target, _ = _target(gm, sde, x, res.z)
        assert ((res.logp - target).abs() / 2).max().item() < 1e-3


def test_prior_mismatch():
    sde = VESDE()
    z = sde.prior_sampling((5, 3), generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.equal(prior_mismatch(sde, z, sde.prior_logp), torch.zeros(5, dtype=F64))
    lp = torch.arange(5, dtype=F64)
    torch.testing.assert_close(prior_mismatch(sde, z, lp), sde.prior_logp(z) - lp)


def test_errors():
    sde = VPSDE()
    gm = _mixture((2,))
    x = _data(gm, 4)
    score = gm.score_fn(sde)
    with pytest.raises(ValueError, match="divergence.*rademacher"):
        log_likelihood(sde, score, x, "Rademacher")
    for eps in (0.0, 1.0, -1e-5, 2.0):
        with pytest.raises(ValueError, match="eps"):
            log_likelihood(sde, score, x, eps=eps)
    bad = x.clone()
    bad[1, 0] = float("inf")
    with pytest.raises(ValueError, match="x holds 1 non-finite"):
        log_likelihood(sde, score, bad)
    for n in (0, -1, 1.5):
        with pytest.raises(ValueError, match="n_probes"):
            log_likelihood(sde, score, x, n_probes=n)
    with pytest.raises(ValueError, match="n_probes"):
        log_likelihood(sde, score, x, "exact", n_probes=2)
    with pytest.raises(ValueError, match="method.*dopri5"):
        log_likelihood(sde, score, x, method="rk45")
    with pytest.raises(ValueError, match="adaptive"):
        log_likelihood(sde, score, x, method="rk4")
    with pytest.raises(ValueError, match="rtol"):
        log_likelihood(sde, score, x, rtol=0.0)
    with pytest.raises(ValueError, match="error_norm"):
        log_likelihood(sde, score, x, error_norm="per_example")  # scipy RK45 has its own norm
    with pytest.raises(ValueError, match="controller"):
        log_likelihood(sde, score, x, method="dopri5", controller="fast")
    with pytest.raises(ValueError, match="batch"):
        log_likelihood(sde, score, x[0])
    assert DIVERGENCES == ("rademacher", "gaussian", "exact")


# ---------------------------------------------------------------------------------------------
# Bits per dimension


def test_bits_per_dim_of_uniform_densities():
    """Hand-computed: the uniform distribution over 256 levels carries exactly 8 bits per dim.
    Dequantised and scaled to [0, 1)^D its density is 1 (logp = 0); scaled to [-1, 1)^D it is
    2^-D (logp = -D ln 2). Both must give 8 bits/dim."""
    D = 3 * 4 * 4
    zero = torch.zeros(2, dtype=F64)
    eight = torch.full((2,), 8.0, dtype=F64)
    torch.testing.assert_close(bits_per_dim(zero, (3, 4, 4), centered=False), eight)
    logp_c = torch.full((2,), -D * math.log(2.0), dtype=F64)
    torch.testing.assert_close(bits_per_dim(logp_c, D, centered=True), eight)
    # Binary data (2 levels): 1 bit.
    one_bit = bits_per_dim(torch.tensor(0.0), 5, centered=False, num_bins=2)
    assert one_bit.item() == pytest.approx(1.0)


def test_bits_per_dim_is_invariant_to_the_scaling():
    """The same model seen on [-1, 1) or [0, 1): densities differ by 2^D, bits/dim must agree."""
    D = 12
    logp_centered = torch.tensor([-30.0, 5.0], dtype=F64)
    logp_unit = logp_centered + D * math.log(2.0)  # x01 = (xc + 1) / 2: p01 = 2^D pc
    torch.testing.assert_close(
        bits_per_dim(logp_centered, D, centered=True), bits_per_dim(logp_unit, D, centered=False)
    )


@pytest.mark.parametrize("centered", [False, True])
def test_bits_per_dim_is_the_pixel_space_density(centered):
    """Closed form for a non-uniform density: let the dequantised pixels y = k + u in [0, 256)^D
    have density p_y = prod_j N(y_j; 100, 40^2) (any density works). The application's transforms
    map y to model space x = scaler(y / 256) (x = y / 256, or 2 y / 256 - 1 when centered), so
    log p_x(x) = log p_y(y) - D log(dx/dy) and the bits/dim of the pixels is -log2 p_y(y) / D.
    `bits_per_dim` of log p_x must give exactly that: what the application's `bpd_offset`
    (7 centered, 8 in [0, 1], nats in model space) computes."""
    from sde_app.data.transforms import scaler

    D, shape = 48, (3, 4, 4)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (5, *shape), generator=g).to(F64)
    y = pixels + torch.rand(pixels.shape, generator=g, dtype=F64)
    log_p_y = torch.distributions.Normal(100.0, 40.0).log_prob(y).flatten(1).sum(1)
    dx_dy = (2.0 if centered else 1.0) / 256.0
    x = scaler(centered)(y / 256.0)
    torch.testing.assert_close(x, dx_dy * y - (1.0 if centered else 0.0))  # the map is affine
    log_p_x = log_p_y - D * math.log(dx_dy)
    expected = -log_p_y / (D * math.log(2.0))
    torch.testing.assert_close(bits_per_dim(log_p_x, shape, centered=centered), expected,
                               rtol=0, atol=1e-12)
    assert dequantization_offset(centered=centered) == (7.0 if centered else 8.0)


def test_offset_matches_the_official_formula():
    """Official: offset = 7 - inverse_scaler(-1); centered: inverse_scaler(x) = (x + 1) / 2 gives 7,
    otherwise the identity gives 8."""
    assert dequantization_offset(centered=True) == pytest.approx(7.0 - (-1.0 + 1.0) / 2.0)
    assert dequantization_offset(centered=False) == pytest.approx(7.0 - (-1.0))
    with pytest.raises(ValueError, match="centered"):
        dequantization_offset(centered=1)
    with pytest.raises(ValueError, match="num_bins"):
        dequantization_offset(centered=True, num_bins=0)
    with pytest.raises(ValueError, match="dimensions"):
        bits_per_dim(torch.zeros(1), 0, centered=True)
    with pytest.raises(TypeError):
        bits_per_dim(torch.zeros(1), (3, 4.5), centered=True)
