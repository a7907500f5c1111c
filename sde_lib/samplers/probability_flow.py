"""The probability-flow ODE (Song et al. 2021, eq. 13) solved by a black-box ODE solver."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..ode import CONTROLLERS, ERROR_NORMS, SCIPY_METHODS, is_adaptive, probability_flow_sample
from ..ode import METHODS as ODE_METHODS
from ..predictors import reverse_sde_final_step
from ..utils import check_choice, check_positive
from .base import SamplingMethod


@dataclasses.dataclass(frozen=True)
class ProbabilityFlowODE(SamplingMethod):
    """Probability-flow ODE (eq. 13) from T to eps with a black-box solver, then, with `denoise`,
    one more step from eps to 0 (one more score evaluation; "pf": an Euler step of the same ODE).

    Options:
      solver: a name in `sde_lib.ode.METHODS`: any scipy `solve_ivp` method ("RK45", "RK23",
        "DOP853", "Radau", "BDF", "LSODA"); "dopri5" or "bosh3", adaptive solvers that stay on
        the torch device; or a fixed-step method ("euler", "heun", "midpoint", "rk4") with N steps.
      rtol, atol: tolerances of adaptive solvers.
      error_norm: how an adaptive torch solver measures a step's error (`sde_lib.ode.odeint`);
        None: the solver's default (per example for dopri5/bosh3, so that a sample does not move
        with its batch; scipy's RMS for scipy's solvers).
      controller: step-size control of dopri5/bosh3: "standard" (scipy's, step for step),
        "pi", or "torchdiffeq" (torchdiffeq's own adaptive solver).
    """

    solver: str = "RK45"
    rtol: float = 1e-5
    atol: float = 1e-5
    error_norm: Optional[str] = None
    controller: str = "standard"

    def validate(self) -> None:
        check_choice("solver", self.solver, ODE_METHODS)
        check_positive("rtol", self.rtol)
        check_positive("atol", self.atol)
        check_choice("controller", self.controller, CONTROLLERS)
        if self.controller != "standard" and self.solver in SCIPY_METHODS:
            raise ValueError(f"controller={self.controller!r}: scipy's {self.solver} has its own step"
                             " control; use solver='dopri5' or 'bosh3'")
        if self.error_norm is not None:
            check_choice("error_norm", self.error_norm, ERROR_NORMS)
            if self.solver in SCIPY_METHODS and self.error_norm != "rms":
                raise ValueError(f"error_norm={self.error_norm!r}: scipy's {self.solver} has its own error"
                                 " norm ('rms'); use solver='dopri5' or 'bosh3' for another")

    def run(self, sde, score_fn, x, *, eps, denoise, N, generator, progress):
        n_steps = None if is_adaptive(self.solver) else N
        x, _ = probability_flow_sample(sde, score_fn, x, eps=eps, method=self.solver, rtol=self.rtol,
                                       atol=self.atol, progress=progress, n_steps=n_steps,
                                       error_norm=self.error_norm, controller=self.controller)
        if denoise:
            t = torch.full((x.shape[0],), eps, dtype=x.dtype, device=x.device)
            x = reverse_sde_final_step(sde, score_fn, x, t, torch.zeros_like(t), denoise, generator)
        return x
