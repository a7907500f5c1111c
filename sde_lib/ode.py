"""Integrating the probability-flow ODE (Song et al. 2021, eq. 13) and other ODEs dy/dt = f(t, y).

One entry point, `odeint(func, y0, t0, t1, method=...)`, with three families of methods:

  * scipy (`SCIPY_METHODS`: "RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA"): the solvers behind
    `scipy.integrate.solve_ivp`, stepped one by one. The state is flattened to a float64 numpy
    vector, as the official code does; every evaluation is a device -> host round trip.
  * adaptive torch (`ADAPTIVE_TABLEAUS`: "dopri5", "bosh3"): embedded explicit Runge-Kutta pairs
    with FSAL that keep the state on its device and in its dtype. With the default controller
    ("standard") they are scipy's RK45 and RK23 step for step (same embedded pair, initial step,
    error norm and step-size rule), with one host sync per attempted step; "pi" is Hairer's PI
    controller; "torchdiffeq" runs torchdiffeq's solver of the same name (its own error estimate
    and step-size rule; see `odeint`).
  * fixed-step torch (`FIXED_METHODS`: "euler", "heun", "midpoint", "rk4"): `n_steps` uniform
    steps of torchdiffeq's fixed-grid solvers, for fast sampling; no host sync at all.

Why the adaptive pairs are not torchdiffeq's by default: torchdiffeq's "dopri5" estimates its
error with Shampine's embedded solution instead of Dormand & Prince's, its step-size rule never
shrinks the step after an accepted step nor holds it after a rejection, and it cannot reproduce
scipy's steps; on the mixtures it takes about as many evaluations with mostly larger errors
(benchmarks/RESULTS.md, section 3, "The probability-flow ODE on torchdiffeq").

The error norm decides how the examples of a batch share the tolerance: "rms" (scipy's, and the
default of `odeint`, which does not know what a batch is) lets a hard example hide behind easy
ones, so its result depends on its batch; "per_example" makes every example meet the tolerance
and is the default of `probability_flow_sample` and `likelihood.log_likelihood` for the torch
methods (`batch_error_norm`).

The number of function evaluations is counted by wrapping `func`, so it is exact for every method
(scipy's implicit methods also spend evaluations on finite-difference Jacobians: those count).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch
import torchdiffeq

from .progress import progress_bar
from .score import CountingScore
from .utils import check_end_time, check_finite

Tensor = torch.Tensor
ODEFunc = Callable[[float, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------
# Methods


@dataclass(frozen=True)
class ButcherTableau:
    """An embedded explicit Runge-Kutta pair: stage i is evaluated at t + c_i h, y + h sum_j a_ij k_j.

    Attributes:
      c: nodes, one per stage.
      a: rows of the strictly lower-triangular matrix, row i has i entries.
      b: weights of the propagated solution y_new = y + h sum_i b_i k_i.
      order: order of the propagated solution.
      b_err: weights of the error estimate err = h sum_i e_i k_i over the stages plus one more
        entry for the FSAL stage k = f(t + h, y_new).
      error_order: order q of the embedded (lower-order) solution; the local error is O(h^(q+1)).
    """

    c: Tuple[float, ...]
    a: Tuple[Tuple[float, ...], ...]
    b: Tuple[float, ...]
    order: int
    b_err: Tuple[float, ...]
    error_order: int


# Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae", RK5(4)7M; the 7th stage is
# f(t + h, y_new) (first same as last), so an accepted step costs 6 evaluations.
DOPRI5 = ButcherTableau(
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    order=5,
    # b (5th order, with 0 for the FSAL stage) minus the 4th-order weights
    # (5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40).
    b_err=(71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40),
    error_order=4,
)

# Bogacki & Shampine (1989), "A 3(2) pair of Runge-Kutta formulas"; FSAL, 3 evaluations a step.
BOSH3 = ButcherTableau(
    c=(0.0, 1 / 2, 3 / 4),
    a=((), (1 / 2,), (0.0, 3 / 4)),
    b=(2 / 9, 1 / 3, 4 / 9),
    order=3,
    # b minus the 2nd-order weights (7/24, 1/4, 1/3, 1/8).
    b_err=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    error_order=2,
)


@dataclass(frozen=True)
class FixedStepMethod:
    """A fixed-step explicit Runge-Kutta method, run by torchdiffeq's fixed-grid solver `name`.

    Attributes:
      name: the torchdiffeq method.
      c: nodes of the stages (one evaluation each).
      order: order of the method (global error O(h^order)).
    """

    name: str
    c: Tuple[float, ...]
    order: int


SCIPY_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
ADAPTIVE_TABLEAUS = {"dopri5": DOPRI5, "bosh3": BOSH3}
FIXED_METHODS = {
    "euler": FixedStepMethod("euler", (0.0,), 1),
    "heun": FixedStepMethod("heun2", (0.0, 1.0), 2),  # explicit trapezoid
    "midpoint": FixedStepMethod("midpoint", (0.0, 0.5), 2),
    "rk4": FixedStepMethod("rk4", (0.0, 1 / 3, 2 / 3, 1.0), 4),  # Kutta's 3/8 rule
}
METHODS = SCIPY_METHODS + tuple(ADAPTIVE_TABLEAUS) + tuple(FIXED_METHODS)
ERROR_NORMS = ("rms", "per_example")
CONTROLLERS = ("standard", "pi", "torchdiffeq")

# Step-size control constants (Hairer, Norsett & Wanner, Solving ODEs I, sec. II.4; also scipy's).
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


def is_adaptive(method: str) -> bool:
    """Whether `method` chooses its own steps (rtol/atol) rather than taking `n_steps`."""
    _check_method(method)
    return method not in FIXED_METHODS


def batch_error_norm(method: str) -> str:
    """The error norm for a batch of independent examples: "per_example" for the torch adaptive
    methods (each example meets the tolerance, whatever else is in its batch), "rms" for the
    others (scipy's solvers have only their own RMS norm; fixed-step methods use none)."""
    _check_method(method)
    return "per_example" if method in ADAPTIVE_TABLEAUS else "rms"


def _check_method(method) -> None:
    if method not in METHODS:
        raise ValueError(
            f"method={method!r} is not a known ODE method; valid: scipy {list(SCIPY_METHODS)}, "
            f"adaptive torch {list(ADAPTIVE_TABLEAUS)}, fixed-step torch {list(FIXED_METHODS)}"
        )


# ---------------------------------------------------------------------------------------------
# The generic integrator


class _Counted:
    """Wraps func(t, y) and counts its calls; passes t on as a Python float."""

    def __init__(self, func: ODEFunc):
        self.func = func
        self.calls = 0

    def __call__(self, t, y: Tensor) -> Tensor:
        self.calls += 1
        return self.func(float(t), y)


def odeint(
    func: ODEFunc,
    y0: Tensor,
    t0: float,
    t1: float,
    *,
    method: str = "RK45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    progress=False,
    n_steps: Optional[int] = None,
    error_norm: str = "rms",
    controller: str = "standard",
    first_step: Optional[float] = None,
    max_steps: int = 100_000,
) -> Tuple[Tensor, int]:
    """Solve dy/dt = func(t, y) from t0 to t1 (t1 < t0 integrates backwards in time).

    Args:
      func: func(t, y) -> dy/dt with t a Python float and y, dy/dt tensors shaped like y0.
      y0: initial state, any shape. The torch methods keep its device and dtype (torchdiffeq's
        solvers hand `func` times rounded to that dtype); the scipy methods integrate in float64
        on the host and hand `func` tensors in y0's dtype and device.
      t0, t1: start and end times (floats), t0 != t1.
      method: one of `METHODS` (see the module docstring).
      rtol, atol: relative and absolute tolerances of the adaptive methods, > 0. The local error
        estimate err is accepted when norm(err / (atol + rtol * max(|y|, |y_new|))) < 1.
      progress: False, True (own tqdm bar) or an object with update(float) that receives the
        fractions of |t1 - t0| covered (`sde_lib.progress`).
      n_steps: number of uniform steps; required for the fixed-step methods, invalid otherwise.
      error_norm: torch adaptive methods only. "rms": root mean square over the whole state, as
        scipy (examples in a batch share one tolerance budget); "per_example": RMS over every
        dimension but the first, then the max over the first (batch) dimension, so every example
        meets the tolerance on its own (stricter, a few more steps).
      controller: torch adaptive methods only. "standard": h *= 0.9 err^(-1/(q+1)) clipped to
        [0.2, 10] and not above 1 right after a rejection, as scipy; "pi": the PI controller of
        Hairer & Wanner's DOPRI5, h *= 0.9 err^(-1/(q+1) + 0.75 beta) err_prev^beta,
        beta = 0.2 / (q + 1); "torchdiffeq": torchdiffeq's own solver of that name (its dopri5
        estimates the error with Shampine's embedded solution; its step-size rule keeps the step
        after an accepted step with err > 0.59 where scipy's shrinks it), landing on t1.
      first_step: initial step size of the adaptive methods; default chosen as in Hairer et al.,
        Solving ODEs I, sec. II.4 (one extra evaluation).
      max_steps: give up (RuntimeError) after this many steps (accepted ones; with
        controller="torchdiffeq" attempted ones).

    Returns:
      (y1, nfev): the state at t1 (shape, dtype and device of y0) and the exact number of calls
      of `func`.

    Raises:
      ValueError: unknown method, error_norm or controller; rtol or atol <= 0; t0 == t1; a bad
        n_steps; an error_norm or controller other than the defaults with a scipy method.
      TypeError: y0 is not a tensor.
      RuntimeError: the adaptive step size underflows or max_steps is exceeded.
    """
    _check_method(method)
    for name, tol in (("rtol", rtol), ("atol", atol)):
        is_number = isinstance(tol, (int, float)) and not isinstance(tol, bool)
        if not is_number or not math.isfinite(tol) or tol <= 0:
            raise ValueError(f"{name}={tol!r}: expected a finite number > 0")
    if error_norm not in ERROR_NORMS:
        raise ValueError(f"error_norm={error_norm!r} is not one of {list(ERROR_NORMS)}")
    if controller not in CONTROLLERS:
        raise ValueError(f"controller={controller!r} is not one of {list(CONTROLLERS)}")
    if not torch.is_tensor(y0):
        raise TypeError(f"y0 must be a torch.Tensor, got {type(y0).__name__}")
    t0, t1 = float(t0), float(t1)
    if t0 == t1 or not (math.isfinite(t0) and math.isfinite(t1)):
        raise ValueError(f"t0={t0!r}, t1={t1!r}: expected two different finite times")
    if method in FIXED_METHODS:
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(
                f"n_steps={n_steps!r}: method {method!r} needs an integer n_steps >= 1"
            )
    elif n_steps is not None:
        raise ValueError(
            f"n_steps={n_steps!r} applies only to the fixed-step methods {list(FIXED_METHODS)}"
        )
    if method in SCIPY_METHODS and (error_norm != "rms" or controller != "standard"):
        raise ValueError(
            f"scipy method {method!r} has its own step control: error_norm must be 'rms' and "
            "controller 'standard'; for other norms or controllers use 'dopri5' or 'bosh3'"
        )

    counted = _Counted(func)
    with progress_bar(progress, abs(t1 - t0), f"ODE {method}", unit="t") as bar:
        if method in SCIPY_METHODS:
            y1 = _solve_scipy(counted, y0, t0, t1, method, rtol, atol, first_step, max_steps, bar)
        elif method in FIXED_METHODS or controller == "torchdiffeq":
            y1 = _solve_torchdiffeq(
                counted, y0, t0, t1, method, rtol, atol, n_steps, error_norm, first_step,
                max_steps, bar,
            )
        else:
            y1 = _solve_adaptive(
                counted, y0, t0, t1, ADAPTIVE_TABLEAUS[method], rtol, atol, error_norm,
                controller, first_step, max_steps, bar,
            )
    return y1, counted.calls


# ---------------------------------------------------------------------------------------------
# Backends


def _solve_scipy(func, y0, t0, t1, method, rtol, atol, first_step, max_steps, bar) -> Tensor:
    """Step a scipy.integrate OdeSolver (what solve_ivp runs) on the flattened float64 state."""
    import scipy.integrate

    shape, dtype, device = y0.shape, y0.dtype, y0.device

    def fun(t, y_flat):
        # torch.tensor copies: scipy owns y_flat
        y = torch.tensor(y_flat, dtype=dtype, device=device).reshape(shape)
        return func(t, y).detach().reshape(-1).to("cpu", torch.float64).numpy()

    y0_flat = y0.detach().reshape(-1).to("cpu", torch.float64).numpy().copy()
    options = {} if first_step is None else {"first_step": first_step}
    solver = getattr(scipy.integrate, method)(fun, t0, y0_flat, t1, rtol=rtol, atol=atol, **options)
    steps = 0
    while solver.status == "running":
        t_prev = solver.t
        message = solver.step()
        if solver.status == "failed":
            raise RuntimeError(f"scipy {method} failed at t={solver.t}: {message}")
        bar.update(abs(solver.t - t_prev))
        steps += 1
        if steps > max_steps and solver.status == "running":
            raise RuntimeError(f"scipy {method}: more than max_steps={max_steps} steps")
    return torch.as_tensor(solver.y).reshape(shape).to(device=device, dtype=dtype)


class _TorchdiffeqFunc:
    """func for torchdiffeq: counts through `counted` and reports each step's length to `bar`
    by the callback torchdiffeq calls on it (per accepted step, or per step of a fixed grid)."""

    def __init__(self, counted: _Counted, bar, adaptive: bool):
        self.counted = counted
        report = lambda t0, y0, dt: bar.update(abs(float(dt)))  # noqa: E731
        setattr(self, "callback_accept_step" if adaptive else "callback_step", report)

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        return self.counted(t, y)


def _solve_torchdiffeq(func, y0, t0, t1, method, rtol, atol, n_steps, error_norm, first_step,
                       max_steps, bar) -> Tensor:
    """torchdiffeq.odeint from t0 to t1: a fixed grid of n_steps uniform steps, or an adaptive
    solver told to land on t1 (`step_t`) rather than to step past it and interpolate."""
    times = torch.tensor([t0, t1], dtype=torch.float64, device=y0.device)
    adaptive = method not in FIXED_METHODS
    if adaptive:
        name = method
        options = {"norm": functools.partial(_norm, per_example=error_norm == "per_example"),
                   "step_t": times[1:], "max_num_steps": max_steps}
        if first_step is not None:
            options["first_step"] = first_step
    else:
        name = FIXED_METHODS[method].name
        grid = torch.linspace(t0, t1, n_steps + 1, dtype=torch.float64, device=y0.device)
        # torchdiffeq negates times (and this grid) itself when t1 < t0
        options = {"grid_constructor": lambda f, y, t: grid}
    try:
        ys = torchdiffeq.odeint(_TorchdiffeqFunc(func, bar, adaptive), y0, times, rtol=rtol,
                                atol=atol, method=name, options=options)
    except AssertionError as error:  # torchdiffeq reports these two by assert
        message = str(error)
        if message.startswith("underflow in dt"):
            raise RuntimeError(f"step size underflow ({message}): the ODE may be stiff or blow up") from None
        if message.startswith("max_num_steps exceeded"):
            raise RuntimeError(f"more than max_steps={max_steps} steps before t1={t1}") from None
        raise
    return ys[-1]


def _rk_stages(func, t, y, h, tableau: ButcherTableau, k0: Tensor):
    """Stages k_i = func(t + c_i h, y + h sum_j a_ij k_j), given k_0 = func(t, y); and y_new."""
    ks = [k0]
    for c_i, a_i in zip(tableau.c[1:], tableau.a[1:]):
        y_i = y
        for a_ij, k_j in zip(a_i, ks):
            if a_ij != 0.0:
                y_i = y_i + (h * a_ij) * k_j
        ks.append(func(t + c_i * h, y_i))
    y_new = y
    for b_i, k_i in zip(tableau.b, ks):
        if b_i != 0.0:
            y_new = y_new + (h * b_i) * k_i
    return ks, y_new


def _norm(x: Tensor, per_example: bool) -> Tensor:
    """RMS of x (0-d tensor); with per_example, the max over dim 0 of the RMS over the others."""
    if per_example and x.ndim >= 1:
        return x.reshape(x.shape[0], -1).square().mean(dim=1).sqrt().max()
    return x.square().mean().sqrt()


def _initial_step(func, t0, y0, f0, direction, span, order, rtol, atol, per_example) -> float:
    """Starting step size, Hairer, Norsett & Wanner, Solving ODEs I, sec. II.4 (one evaluation)."""
    scale = atol + y0.abs() * rtol
    d0 = _norm(y0 / scale, per_example).item()
    d1 = _norm(f0 / scale, per_example).item()
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    h0 = min(h0, span)
    f1 = func(t0 + direction * h0, y0 + (direction * h0) * f0)
    d2 = _norm((f1 - f0) / scale, per_example).item() / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1, span)


def _solve_adaptive(
    func, y0, t0, t1, tableau, rtol, atol, error_norm, controller, first_step, max_steps, bar
) -> Tensor:
    """An embedded FSAL Runge-Kutta pair with error-per-step control.

    The error of a step is err = h sum_i e_i k_i (the difference between the two embedded
    solutions), measured as norm(err / (atol + rtol max(|y|, |y_new|))) with the chosen norm; the
    step is accepted when that is < 1 and the solution is propagated with the higher-order weights
    (local extrapolation). With error_norm="rms" and controller="standard" this is scipy's RK45
    (dopri5) or RK23 (bosh3) step for step, only in torch.
    """
    per_example = error_norm == "per_example"
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    q = tableau.error_order
    exponent = -1.0 / (q + 1)
    beta = 0.2 / (q + 1) if controller == "pi" else 0.0
    t, y = t0, y0
    f = func(t, y)
    if first_step is None:
        h_abs = _initial_step(func, t, y, f, direction, span, q, rtol, atol, per_example)
    else:
        h_abs = float(first_step)
    err_prev = 1e-4  # Hairer's initialisation of the PI controller's memory
    steps = 0
    while direction * (t1 - t) > 0:
        min_step = 10 * abs(np.nextafter(t, direction * np.inf) - t)
        h_abs = max(h_abs, min_step)
        rejected = False
        while True:
            if h_abs < min_step:
                raise RuntimeError(f"step size underflow at t={t}: the ODE may be stiff or blow up")
            t_new = t + direction * h_abs
            if direction * (t_new - t1) > 0:
                t_new = t1
            h = t_new - t
            h_abs = abs(h)
            ks, y_new = _rk_stages(func, t, y, h, tableau, f)
            f_new = func(t_new, y_new)  # FSAL: the first stage of the next step
            err = sum((h * e) * k for e, k in zip(tableau.b_err, ks + [f_new]) if e != 0.0)
            scale = atol + torch.maximum(y.abs(), y_new.abs()) * rtol
            err_norm = _norm(err / scale, per_example).item()  # the one host sync of a step
            if not math.isfinite(err_norm):
                err_norm = math.inf
            if err_norm < 1:
                if err_norm == 0:
                    factor = _MAX_FACTOR
                else:
                    # beta = 0: the standard controller; beta > 0: PI (err < 1 keeps it > 0.2)
                    factor = _SAFETY * err_norm ** (exponent + 0.75 * beta) * err_prev**beta
                    factor = min(_MAX_FACTOR, max(_MIN_FACTOR, factor))
                if rejected:
                    factor = min(1.0, factor)
                h_abs *= factor
                err_prev = max(err_norm, 1e-4)
                break
            h_abs *= max(_MIN_FACTOR, _SAFETY * err_norm**exponent)
            rejected = True
        bar.update(abs(t_new - t))
        t, y, f = t_new, y_new, f_new
        steps += 1
        if steps > max_steps and direction * (t1 - t) > 0:
            raise RuntimeError(f"more than max_steps={max_steps} steps before t1={t1}")
    return y


# ---------------------------------------------------------------------------------------------
# The probability-flow ODE


def probability_flow_sample(
    sde,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x_T: Tensor,
    *,
    eps: float = 1e-3,
    method: str = "RK45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    progress=False,
    n_steps: Optional[int] = None,
    error_norm: Optional[str] = None,
    controller: str = "standard",
) -> Tuple[Tensor, int]:
    """Integrate the probability-flow ODE dx = [f(x, t) - 1/2 g(t)^2 score(x, t)] dt (eq. 13)
    from t = T down to t = eps.

    The solver state is float64 (cheap next to a score evaluation); the score is evaluated on the
    state cast to x_T's dtype, with a time tensor (B,) of that dtype. No final denoising step.

    Args:
      sde: the forward SDE (`sde_lib.sdes.SDE`).
      score_fn: score_fn(x, t) -> grad_x log p_t(x), shape of x; t is (B,).
      x_T: samples of the prior, (B, *data_shape).
      eps: end time, in (0, T); 1e-3 for sampling as in Song et al.
      method, rtol, atol, progress, n_steps, controller: see `odeint`.
      error_norm: see `odeint`; default `batch_error_norm(method)`: "per_example" for the torch
        adaptive methods, so that a sample does not depend on the rest of its batch beyond the
        solver's tolerance, "rms" for scipy's.

    Returns:
      (x_eps, nfe): samples at t = eps (shape, dtype and device of x_T) and the exact number of
      score_fn calls.

    Raises:
      ValueError: eps outside (0, T), a non-finite x_T, or a bad solver option (see `odeint`).
    """
    eps = check_end_time(eps, sde.T)
    check_finite("x_T", x_T)
    error_norm = batch_error_norm(method) if error_norm is None else error_norm
    counted = CountingScore(score_fn)
    reverse = sde.reverse(counted, probability_flow=True)
    batch, dtype, device = x_T.shape[0], x_T.dtype, x_T.device

    def drift(t: float, x: Tensor) -> Tensor:
        vec_t = torch.full((batch,), t, dtype=dtype, device=device)
        return reverse.sde(x.to(dtype), vec_t)[0].to(torch.float64)

    with torch.no_grad():
        x_eps, _ = odeint(
            drift, x_T.to(torch.float64), sde.T, eps, method=method, rtol=rtol, atol=atol,
            progress=progress, n_steps=n_steps, error_norm=error_norm, controller=controller,
        )
    return x_eps.to(dtype), counted.nfe
