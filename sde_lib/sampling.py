"""Sampling from a score model: one entry point, `sample`, for every sampler.

    samples, nfe = sample(sde, score_fn, shape, method="pc", **options)
    sampler = build_sampler("ode", solver="dopri5")    # checked once, reused for many batches
    sampler.check(sde); samples, nfe = sampler(sde, score_fn, shape)

`nfe` counts the calls of `score_fn` exactly (every method runs through one counting wrapper).

Methods (`METHODS`; each a dataclass in `sde_lib.samplers` whose fields are its options):
  * "pc":         predictor-corrector sampling (Song et al. 2021, Alg. 1), any predictor from
                  `predictors.PREDICTORS` and corrector from `correctors.CORRECTORS`.
  * "ode":        the probability-flow ODE (eq. 13) with a black-box solver (scipy or torch).
  * "sde_solver": the reverse-time SDE (eq. 6) solved by torchsde.
  * "ddpm":       Algorithm 2 of Ho et al. (2020): ancestral sampling down the SDE's chain.
  * "ddim":       DDIM (Song, Meng & Ermon 2021) with eta in [0, 1] and any number of steps.
  * "dpm_solver": DPM-Solver++(2M) (Lu et al. 2022), a second-order multistep solver of the
                  probability-flow ODE for few steps (10-50); order=3: DPM-Solver++(3M).
  * "langevin":   annealed Langevin dynamics over the noise levels (NCSN, Song & Ermon 2019).
  * "edm":        Heun's method on EDM's grid with stochastic churn (Karras et al. 2022, Alg. 2).
  * "consistency": one-step / multistep consistency sampling (Song et al. 2023, Alg. 1) of a
                  consistency model given as a score (`consistency.ConsistencyFunction.as_score`).
  * "unipc":      UniPC (Zhao et al. 2023), a multistep predictor-corrector solver of the
                  probability-flow ODE whose corrector reuses the next evaluation (5-20 steps).
`method_options(name)` lists a method's options and defaults.

Options every method shares:
  eps:       last time the score is evaluated, in (0, T); the final step goes from eps to 0.
             Default 1e-3 (official). For the chain-based predictors, `SDE.chain_end_time()` is
             the time whose noise matches the chain's first level; it makes them converge as
             N grows (the fixed 1e-3 leaves an O(1e-3) floor) but, at N = 100 on the 3x8x8
             mixture, is far less accurate (see docs/sampling.md), so it is not the default.
  denoise:   how the final step (from eps to zero noise) is taken: "pf", a noise-free step along
             the probability flow (default; removes the noise std(eps), for VE the sigma_min blur
             too, without over-sharpening); "mean", the official denoising (about Tweedie's
             E[x_0 | x_eps]; Algorithm 2's z = 0; the default of "ddpm" and "langevin"); False, a
             noisy step to t = 0. True or None means the method's default. See
             `predictors.reverse_sde_final_step`.
  N:         number of steps for the stepping methods (default: the SDE's N).
  generator: a torch.Generator for every random draw (prior and noise), for reproducibility.
  progress:  False, True (a tqdm bar) or a caller's bar (`sde_lib.progress`).
  x_T:       start from this tensor instead of a prior sample; device, dtype: of the prior.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from .grids import SCHEDULES, steps, time_grid, time_points
from .samplers.base import DEFAULT_EPS, DENOISE, SamplingMethod
from .samplers.consistency import ConsistencySampling
from .samplers.ddim import DDIM
from .samplers.dpm_solver import DPMSolverPP
from .samplers.edm import EDMSampler
from .samplers.langevin import AnnealedLangevin
from .samplers.pc import AncestralSampling, PredictorCorrector
from .samplers.probability_flow import ProbabilityFlowODE
from .samplers.sde_solver import TorchSDESolver
from .samplers.unipc import UniPC
from .score import CountingScore
from .utils import check_choice, check_end_time, check_finite, check_positive_int, check_shape

Tensor = torch.Tensor

__all__ = ["METHODS", "Sampler", "build_sampler", "build_method", "method_options", "options_table", "sample",
           "DENOISE", "DEFAULT_EPS", "SCHEDULES", "time_points", "time_grid", "steps"]

METHODS = {
    "pc": PredictorCorrector,
    "ode": ProbabilityFlowODE,
    "sde_solver": TorchSDESolver,
    "ddpm": AncestralSampling,
    "ddim": DDIM,
    "dpm_solver": DPMSolverPP,
    "langevin": AnnealedLangevin,
    "edm": EDMSampler,
    "unipc": UniPC,
    "consistency": ConsistencySampling,
}


def method_options(method: str) -> Dict[str, Any]:
    """The own options of `method` with their defaults (its declaration's fields)."""
    check_choice("method", method, METHODS)
    return METHODS[method].option_defaults()


def build_method(method: str, **options) -> SamplingMethod:
    """The declaration of `method` with `options`, their values checked.

    Raises:
      ValueError: unknown method, an option it does not have, or a bad value.
    """
    check_choice("method", method, METHODS)
    own = method_options(method)
    unknown = sorted(set(options) - set(own))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method={method!r}; its options are {list(own)}")
    return METHODS[method](**options)


def options_table() -> str:
    """A markdown table of every method's own options and defaults, from the declarations
    (docs/sampling.md holds a copy; a test keeps it current)."""
    rows = ["| method | option | default |", "|---|---|---|"]
    for name, declaration in METHODS.items():
        options = declaration.option_defaults() or {"(none)": ""}
        for option, default in options.items():
            shown = "" if option == "(none)" else f"`{default!r}`"
            rows.append(f"| `{name}` | {option if option == '(none)' else f'`{option}`'} | {shown} |")
    return "\n".join(rows)


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A sampling method with its options and the settings every method shares, checked.

    Build it with `build_sampler`, call `check(sde)` once before any work, then call it for each
    batch. Attributes: `name` (the registry name), `method` (the declaration), `eps`, `denoise`
    (resolved: the method's default when None/True), `N` (None: the SDE's N).
    """

    name: str
    method: SamplingMethod
    eps: float = DEFAULT_EPS
    denoise: Any = None
    N: Optional[int] = None

    def __post_init__(self):
        if self.denoise is None or self.denoise is True:
            object.__setattr__(self, "denoise", type(self.method).default_denoise)
        check_choice("denoise", self.denoise, DENOISE)
        if self.N is not None:
            check_positive_int("N", self.N)
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)):
            raise ValueError(f"eps={self.eps!r}: expected a number in the interval (0, T)")

    def steps_for(self, sde) -> int:
        """The number of steps N on `sde`."""
        return sde.N if self.N is None else self.N

    def check(self, sde) -> None:
        """Everything that depends on the SDE: eps in (0, T) ([0, T) for the chain-based methods
        on an SDE with std(0) > 0), and the method's own checks at N steps.

        Raises:
          ValueError: naming the setting and the fix.
        """
        zero_ok = type(self.method).allows_zero_eps and float(sde.marginal_std(torch.zeros(1))) > 0
        check_end_time(self.eps, sde.T, allow_zero=zero_ok)
        self.method.check(sde, self.steps_for(sde), float(self.eps))

    def describe(self) -> Dict[str, Any]:
        """The settings, JSON-ready."""
        return {"method": self.name, "eps": self.eps, "denoise": self.denoise, "N": self.N,
                **self.method.options()}

    def __call__(self, sde, score_fn: Callable[[Tensor, Tensor], Tensor], shape, *,
                 generator: Optional[torch.Generator] = None, progress=False,
                 x_T: Optional[Tensor] = None, device=None,
                 dtype: torch.dtype = torch.float32) -> Tuple[Tensor, int]:
        """(samples of `shape`, nfe). Call `check(sde)` first (`sample` does)."""
        shape = check_shape(shape)
        if x_T is None:
            x_T = sde.prior_sampling(shape, generator=generator, device=device, dtype=dtype)
        else:
            if tuple(x_T.shape) != shape:
                raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={shape}")
            check_finite("x_T", x_T)
        counter = CountingScore(score_fn)
        with torch.no_grad():
            x = self.method.run(sde, counter, x_T, eps=float(self.eps), denoise=self.denoise,
                                N=self.steps_for(sde), generator=generator, progress=progress)
        return x, counter.nfe


def build_sampler(method: str = "pc", *, eps: float = DEFAULT_EPS, denoise=None, N: Optional[int] = None,
                  **options) -> Sampler:
    """A `Sampler`: `method` with its own `options` and the shared eps, denoise, N.

    Raises:
      ValueError: unknown method or option, or a bad value; before any work.
    """
    return Sampler(method, build_method(method, **options), eps=eps, denoise=denoise, N=N)


def sample(sde, score_fn: Callable[[Tensor, Tensor], Tensor], shape, method: str = "pc", *,
           eps: float = DEFAULT_EPS, denoise=None, N: Optional[int] = None,
           generator: Optional[torch.Generator] = None, progress=False,
           x_T: Optional[Tensor] = None, device=None, dtype: torch.dtype = torch.float32, **options):
    """Draw samples by reversing `sde` with `score_fn`.

    Args:
      sde: the forward SDE (sde_lib.VPSDE, subVPSDE, VESDE, CosineVPSDE, ...).
      score_fn: score_fn(x, t) -> grad_x log p_t(x), shape of x; x (B, ...), t (B,).
      shape: (batch, *data_shape) of the samples.
      method: a name in METHODS (see module docstring); its own options go in **options.
      eps, denoise, N, generator, progress, x_T, device, dtype: see module docstring.

    Returns:
      (samples of `shape`, nfe: the number of score_fn calls).

    Raises:
      ValueError: unknown method or option, a bad option value, N < 1, eps outside (0, T), a
        method that cannot run on this SDE (e.g. a chain with a step beta_i >= 1), a shape that
        disagrees with x_T, or a non-finite x_T; raised before any work starts.
    """
    sampler = build_sampler(method, eps=eps, denoise=denoise, N=N, **options)
    shape = check_shape(shape)
    sampler.check(sde)
    return sampler(sde, score_fn, shape, generator=generator, progress=progress, x_T=x_T, device=device,
                   dtype=dtype)
