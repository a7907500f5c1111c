"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, sec. 4.3, App. D.2).

Along the ODE dx/dt = f~(x, t) = f(x, t) - 1/2 g(t)^2 score(x, t) (eq. 13) densities obey the
instantaneous change of variables (Chen et al. 2018): d log p_t(x(t)) / dt = -div f~(x(t), t), so

    log p_eps(x) = log p_T(z) + int_eps^T div f~(x(t), t) dt,   x(eps) = x, z = x(T)   (eq. 39).

`log_likelihood` integrates x and the divergence jointly from eps to T and replaces the unknown
p_T by the prior. The divergence is exact (trace of the Jacobian from d vector-Jacobian products)
or the Hutchinson-Skilling estimate v^T (d f~ / dx) v with probes v held fixed over the solve.
The derivation, the prior term and the bits/dim offset are in docs/likelihood.md.
"""
from __future__ import annotations

import math
import operator
from typing import Callable, Optional, Sequence, Union

import torch

from .ode import batch_error_norm, is_adaptive, odeint
from .score import CountingScore
from .utils import check_end_time, check_finite, check_positive_int, data_dim

Tensor = torch.Tensor
DIVERGENCES = ("rademacher", "gaussian", "exact")

# How many numbers (vectors x batch x d) one vmapped VJP call may hold when vjp_chunk is None.
# On CPU a plain loop is as fast as vmap once a VJP holds ~1e4 numbers (measured on the peer
# mixtures: 16 probes at B = 1000, d = 192 take 0.48 s looped, 1.1 s in one vmap) while tiny
# problems gain up to 3x from vmap; accelerators gain from batching up to memory limits.
_VJP_BUDGET = {"cpu": 2**14}
_VJP_BUDGET_OTHER = 2**22


class LogLikelihood(tuple):
    """Result of `log_likelihood`: unpacks as the 3-tuple `(logp, z, nfe)`, with more attributes.

    Attributes:
      logp: (B,) float64, the log-likelihood in nats per example (mean over probes).
      z: the latent x(T), shape and dtype of the data.
      nfe: int, the exact number of score_fn calls.
      stderr: (B,) float64, standard error of `logp` from the probe noise alone (std over probes /
        sqrt(n_probes)); 0 for the exact divergence; NaN for a single Hutchinson probe. The ODE
        solver's own error is not included.
      per_probe: (n_probes, B) float64, the estimate of each probe (one row for "exact").
      prior_logp: (B,) float64, log prior(z).
      delta_logp: (B,) float64, int_eps^T div f~ dt (mean over probes).
    """

    def __new__(cls, logp, z, nfe, *, stderr, per_probe, prior_logp, delta_logp):
        self = super().__new__(cls, (logp, z, nfe))
        self.stderr = stderr
        self.per_probe = per_probe
        self.prior_logp = prior_logp
        self.delta_logp = delta_logp
        return self

    def __getnewargs_ex__(self):  # pickling / copying (torch.save) rebuild all attributes
        extras = ("stderr", "per_probe", "prior_logp", "delta_logp")
        return tuple(self), {k: getattr(self, k) for k in extras}

    logp = property(lambda self: self[0])
    z = property(lambda self: self[1])
    nfe = property(lambda self: self[2])

    def __repr__(self) -> str:
        return f"LogLikelihood(logp={self.logp}, nfe={self.nfe}, stderr={self.stderr})"


def _draw_probes(
    kind: str, n_probes: int, x: Tensor, generator: Optional[torch.Generator]
) -> Tensor:
    """Hutchinson probes with E[v v^T] = I, shape (n_probes, *x.shape), in x's dtype and device."""
    shape = (n_probes, *x.shape)
    device = generator.device if generator is not None else x.device
    if kind == "rademacher":
        v = torch.randint(0, 2, shape, generator=generator, device=device).to(x.dtype) * 2 - 1
    else:
        v = torch.randn(shape, generator=generator, device=device, dtype=x.dtype)
    return v.to(x.device)


def _vjps(out: Tensor, x: Tensor, vs: Tensor) -> Tensor:
    """v^T (d out / d x) for a stack of vectors vs (n, *x.shape); the graph is kept."""
    if vs.shape[0] == 1:
        return torch.autograd.grad(out, x, vs[0], retain_graph=True)[0][None]
    return torch.autograd.grad(out, x, vs, retain_graph=True, is_grads_batched=True)[0]


def _hutchinson(out: Tensor, x: Tensor, probes: Tensor, chunk: int) -> Tensor:
    """v^T J v per probe and example, (n_probes, B); J the per-example Jacobian of out wrt x."""
    rows = []
    for vs in probes.split(chunk):
        rows.append((_vjps(out, x, vs) * vs).flatten(2).sum(-1))
    return torch.cat(rows)


def _exact_trace(out: Tensor, x: Tensor, chunk: int) -> Tensor:
    """tr J per example, (1, B), from d vector-Jacobian products with the basis vectors e_i."""
    batch, d = x.shape[0], data_dim(x)
    trace = torch.zeros(batch, dtype=out.dtype, device=out.device)
    for start in range(0, d, chunk):
        idx = torch.arange(start, min(start + chunk, d), device=x.device)
        basis = torch.zeros(len(idx), batch, d, dtype=x.dtype, device=x.device)
        basis[torch.arange(len(idx)), :, idx] = 1.0
        vjp = _vjps(out, x, basis.reshape(len(idx), *x.shape)).reshape(len(idx), batch, d)
        trace = trace + vjp[torch.arange(len(idx)), :, idx].sum(0)  # sum_i (e_i^T J)_i
    return trace[None]


def log_likelihood(
    sde,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    divergence: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    method: str = "RK45",
    n_probes: int = 1,
    generator: Optional[torch.Generator] = None,
    progress=False,
    *,
    vjp_chunk: Optional[int] = None,
    error_norm: Optional[str] = None,
    controller: str = "standard",
) -> LogLikelihood:
    """log p(x) in nats by the probability-flow ODE from t = eps to T (eq. 39, App. D.2).

    The state (x(t), int div) is integrated jointly in float64; the score is evaluated on x(t)
    cast to x's dtype with a time tensor (B,) of that dtype, once per ODE evaluation (the drift
    and all vector-Jacobian products share one forward pass). Each example's score must depend on
    that example only (no batch statistics), as the divergence is taken per example.

    What the value targets: log p_eps(x) + log prior(z) - log p_T(z), because the prior stands in
    for p_T; `prior_mismatch` gives the last two terms when p_T is known.

    Args:
      sde: the forward SDE.
      score_fn: score_fn(x, t) -> grad_x log p_t(x), shape of x; t is (B,).
      x: data (B, *data_shape), finite. For image data in bits/dim, x must be dequantised and
        scaled first (see `bits_per_dim`).
      divergence: "rademacher" or "gaussian" (Hutchinson-Skilling probes drawn once and held
        fixed over the solve, as the official code), or "exact" (d vector-Jacobian products per
        evaluation: exact, d times the backward cost).
      rtol, atol: tolerances of the ODE solver (> 0).
      eps: start time in (0, T); 1e-5 as in Song et al.
      method: an adaptive `sde_lib.ode.odeint` method ("RK45" as the official code, or the
        on-device "dopri5"; fixed-step methods are refused).
      n_probes: number of Hutchinson probes (>= 1), all carried by the same solve: the ODE for x
        does not depend on them, so each probe costs one more vector-Jacobian product per
        evaluation and no score call. The result is their mean, with a standard error.
      generator: torch.Generator for the probes.
      progress: False, True (own tqdm bar) or an object with update(float) that receives the
        fractions of [eps, T] covered (`sde_lib.progress`).
      vjp_chunk: vector-Jacobian products batched per autograd call (`is_grads_batched`, i.e.
        vmap over the backward pass); 1 loops over them. Default: as many as keep one call under
        2^14 numbers on CPU (a loop for large batches, vmap for tiny ones) and 2^22 elsewhere;
        tune it for your model and device.
      error_norm: see `odeint` ("rms" over the whole batch, as scipy, or "per_example", every
        example meets the tolerance, torch methods only). Default `ode.batch_error_norm(method)`:
        "per_example" for the torch methods, so that a point's value does not depend on the rest
        of its batch beyond the solver's error; "rms" for scipy's.
      controller: step-size control of the torch methods (see `odeint`).

    Returns:
      `LogLikelihood`, which unpacks as (logp, z, nfe): logp (B,) float64 nats, z (shape and
      dtype of x), nfe the exact number of score_fn calls; also `.stderr`, `.per_probe`,
      `.prior_logp`, `.delta_logp`.

    Raises:
      ValueError: unknown divergence, method, error_norm or controller, eps outside (0, T),
        non-finite x, n_probes < 1, n_probes > 1 with the exact divergence, rtol or atol <= 0.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence={divergence!r} is not one of {list(DIVERGENCES)}")
    eps = check_end_time(eps, sde.T)
    check_finite("x", x)
    if x.ndim < 2:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected (batch, *data_shape)")
    check_positive_int("n_probes", n_probes)
    if vjp_chunk is None:
        vjp_chunk = max(1, _VJP_BUDGET.get(x.device.type, _VJP_BUDGET_OTHER) // x.numel())
    check_positive_int("vjp_chunk", vjp_chunk)
    if divergence == "exact" and n_probes != 1:
        raise ValueError(f"n_probes={n_probes}: the exact divergence takes no probes (n_probes=1)")
    if not is_adaptive(method):  # raises ValueError for an unknown method
        raise ValueError(
            f"method={method!r}: the likelihood needs an adaptive method, not a fixed-step one"
        )
    error_norm = batch_error_norm(method) if error_norm is None else error_norm

    batch, d, dtype, device = x.shape[0], data_dim(x), x.dtype, x.device
    probes = None if divergence == "exact" else _draw_probes(divergence, n_probes, x, generator)
    n_rows = 1 if probes is None else n_probes
    counted = CountingScore(score_fn)
    reverse = sde.reverse(counted, probability_flow=True)

    def joint_rhs(t: float, state: Tensor) -> Tensor:
        """d/dt of the state (B, d + n_rows): [drift f~ flattened, div f~ per probe] (eq. 39)."""
        vec_t = torch.full((batch,), t, dtype=dtype, device=device)
        x_t = state[:, :d].reshape(x.shape).to(dtype, copy=True).requires_grad_(True)
        with torch.enable_grad():
            drift = reverse.sde(x_t, vec_t)[0]
            if probes is None:
                div = _exact_trace(drift, x_t, vjp_chunk)
            else:
                div = _hutchinson(drift, x_t, probes, vjp_chunk)
        rate = torch.cat([drift.detach().reshape(batch, d), div.detach().T], dim=1)
        return rate.to(torch.float64)

    state0 = torch.cat(
        [x.detach().reshape(batch, d).to(torch.float64),
         torch.zeros(batch, n_rows, dtype=torch.float64, device=device)], dim=1,
    )
    with torch.no_grad():
        state1, _ = odeint(
            joint_rhs, state0, eps, sde.T, method=method, rtol=rtol, atol=atol, progress=progress,
            error_norm=error_norm, controller=controller,
        )
    z64 = state1[:, :d].reshape(x.shape)
    prior_logp = sde.prior_logp(z64)
    per_probe = prior_logp[None] + state1[:, d:].T  # (n_rows, B)
    logp = per_probe.mean(0)
    if divergence == "exact":
        stderr = torch.zeros_like(logp)
    elif n_rows == 1:
        stderr = torch.full_like(logp, math.nan)
    else:
        stderr = per_probe.std(0) / math.sqrt(n_rows)
    return LogLikelihood(
        logp, z64.to(dtype), counted.nfe, stderr=stderr, per_probe=per_probe,
        prior_logp=prior_logp, delta_logp=state1[:, d:].mean(1),
    )


def prior_mismatch(sde, z: Tensor, log_p_T: Union[Tensor, Callable[[Tensor], Tensor]]) -> Tensor:
    """log prior(z) - log p_T(z) per example, (B,) float64: what `log_likelihood` adds to log p_eps.

    The ODE carries p_eps to p_T exactly, and the prior stands in for p_T, so the returned logp
    targets log p_eps(x) + prior_mismatch(z). Subtract this term (when p_T is known, e.g. from
    `GaussianMixture.log_prob(z, sde, sde.T)`) to recover log p_eps(x).

    Args:
      sde: the forward SDE (for its prior).
      z: latents x(T), (B, *data_shape).
      log_p_T: log p_T(z) as a (B,) tensor, or a callable z -> (B,).
    """
    log_p = log_p_T(z) if callable(log_p_T) else log_p_T
    z64 = z.to(torch.float64)
    return sde.prior_logp(z64) - torch.as_tensor(log_p, dtype=torch.float64, device=z.device)


def dequantization_offset(*, centered: bool, num_bins: int = 256) -> float:
    """Bits per dimension added to -log p / (D ln 2) for data scaled from num_bins levels.

    Pixel space: a value k in {0, ..., num_bins - 1} is dequantised to y = k + u, u ~ U[0, 1),
    so y lies in [0, num_bins). Model space is x = s y + c with s = 1 / num_bins (data in [0, 1))
    or s = 2 / num_bins, c = -1 (centered data in [-1, 1)). Per dimension
    log p_y(y) = log p_x(x) + log s, hence bits/dim = -log p_x / (D ln 2) - log2(s):
    log2(num_bins) = 8 for [0, 1), log2(num_bins) - 1 = 7 for [-1, 1). (The official
    `7 - inverse_scaler(-1)` evaluates to these same 8 and 7.)
    """
    check_positive_int("num_bins", num_bins)
    if not isinstance(centered, bool):
        raise ValueError(
            f"centered={centered!r}: expected True ([-1, 1] data) or False ([0, 1] data)"
        )
    scale = (2.0 if centered else 1.0) / num_bins
    return -math.log2(scale)


def bits_per_dim(
    logp: Tensor,
    data_shape_or_dim: Union[int, Sequence[int]],
    *,
    centered: bool,
    num_bins: int = 256,
) -> Tensor:
    """Negative log-likelihood in bits per dimension of the dequantised pixel data.

    bpd = -logp / (D ln 2) + offset, with D the number of dimensions and offset =
    `dequantization_offset(centered=..., num_bins=...)` (8 for [0, 1) data, 7 for centered [-1, 1)
    data on 256 levels): logp is a density in model space, an affine image of the dequantised
    pixel space [0, num_bins)^D, and the offset is minus log2 of that map's per-dimension
    Jacobian. By Jensen's inequality the result is an upper bound on the discrete data's
    bits/dim (uniform dequantisation, Theis et al. 2016).

    Args:
      logp: log-likelihood in nats of the scaled, dequantised data, any shape (e.g. (B,)).
      data_shape_or_dim: D, or the shape of one example (e.g. (3, 32, 32)).
      centered: True if the model's data is in [-1, 1) (config.data.centered), False for [0, 1).
      num_bins: number of quantisation levels (256 for 8-bit images).

    Returns:
      bits/dim, shape of logp.
    """
    try:
        dim = operator.index(data_shape_or_dim)
    except TypeError:
        dim = math.prod(operator.index(s) for s in data_shape_or_dim)
    check_positive_int("data_shape_or_dim (its number of dimensions)", dim)
    offset = dequantization_offset(centered=centered, num_bins=num_bins)
    return -logp / (dim * math.log(2.0)) + offset
