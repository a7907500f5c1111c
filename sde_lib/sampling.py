"""Sampling from a score model: one entry point, `sample`, for every sampler.

    samples, nfe = sample(sde, score_fn, shape, method="pc", **options)

`nfe` counts the calls of `score_fn` exactly (every method runs through one counting wrapper).

Methods (`METHODS`):
  * "pc":         predictor-corrector sampling (Song et al. 2021, Alg. 1), any predictor from
                  `predictors.PREDICTORS` and corrector from `correctors.CORRECTORS`.
  * "ode":        the probability-flow ODE (eq. 13) with a black-box solver (scipy or torch).
  * "sde_solver": the reverse-time SDE (eq. 6) solved by torchsde.
  * "ddpm":       Algorithm 2 of Ho et al. (2020): ancestral sampling down the SDE's chain.
  * "ddim":       DDIM (Song, Meng & Ermon 2021) with eta in [0, 1] and any number of steps.
  * "dpm_solver": DPM-Solver++(2M) (Lu et al. 2022), a second-order multistep solver of the
                  probability-flow ODE for few steps (10-50).
  * "langevin":   annealed Langevin dynamics over the noise levels (NCSN, Song & Ermon 2019).

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
             noisy step to t = 0. True means the method's default. See
             `predictors.reverse_sde_final_step`.
  N:         number of steps for the stepping methods (default: the SDE's N).
  generator: a torch.Generator for every random draw (prior and noise), for reproducibility.
  progress:  show a tqdm progress bar.
  x_T:       start from this tensor instead of a prior sample; device, dtype: of the prior.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from . import correctors as correctors_lib
from . import predictors as predictors_lib
from .score import CountingScore
from .grids import SCHEDULES, steps, time_grid, time_points  # noqa: F401 (re-exported)
from .utils import (check_choice, check_end_time, check_finite, check_positive,
                    check_positive_int, check_shape, randn_like)

Tensor = torch.Tensor


DENOISE = (False, "pf", "mean")
DEFAULT_EPS = 1e-3


# ------------------------------------------------------------------------------------ samplers
def pc_steppers(sde, score_fn, N: int, *, predictor: str = "reverse_diffusion", corrector: str = "langevin",
                snr: float = 0.16, n_steps: int = 1, probability_flow: bool = False,
                step_size_rule: str = "batch", corrector_update: str = "leimkuhler_matthews",
                schedule: Optional[str] = None):
    """Check the predictor-corrector options and build what a PC run steps with.

    Returns (sde with N levels, predictor object, corrector object, schedule). The options are
    those of `pc_sampler`; raises ValueError before any work for a bad one.
    """
    check_choice("predictor", predictor, predictors_lib.PREDICTORS)
    check_choice("corrector", corrector, correctors_lib.CORRECTORS)
    check_positive("snr", snr) if corrector != "none" else None
    chain_based = predictors_lib.PREDICTORS[predictor].chain_based
    schedule = schedule or ("uniform" if chain_based else "logsnr")
    check_choice("schedule", schedule, SCHEDULES)
    sde = sde.with_num_levels(N)
    if (chain_based and schedule == "uniform") or corrector != "none":  # these use the chain
        sde.check_chain()
    # Chain-based predictors walk the SDE's N levels on the uniform grid (DDPM's betas: the
    # official algorithms, Algorithm 2 exactly) and the kernel's steps on any other grid.
    predictor_obj = predictors_lib.PREDICTORS[predictor](sde, score_fn, probability_flow, levels=schedule == "uniform")
    kwargs = {"step_size_rule": step_size_rule} if corrector == "langevin" else {}
    corrector_obj = correctors_lib.CORRECTORS[corrector](
        sde, score_fn, snr=snr, n_steps=check_positive_int("n_steps", n_steps), update=corrector_update, **kwargs)
    return sde, predictor_obj, corrector_obj, schedule


def pc_sampler(sde, score_fn, x, *, eps, denoise, N, generator, progress, **options):
    """Predictor-corrector sampling (Song et al. 2021, Alg. 1; Alg. 2-3 for VE/VP with Alg. 4-5).

    Order: at each grid time t_k the corrector runs first, then the predictor steps to t_{k+1}
    (as in the official code). Correcting first also corrects the prior sample, which is only
    an approximation of p_T, and the final predictor step lands on t = 0, where no corrector
    could run anyway (the score is never evaluated at t = 0).

    The Langevin step rule, and the chain-based predictors (reverse_diffusion,
    ancestral_sampling) on the uniform grid, use the SDE's chain with N levels
    (`SDE.with_num_levels(N)`), so fewer steps mean coarser levels of the same schedule, as the
    official configs do with `num_scales`.

    Options (`pc_steppers`):
      predictor, corrector: names in PREDICTORS and CORRECTORS (default reverse_diffusion, langevin).
      snr: signal-to-noise ratio of the Langevin step rule (default 0.16, official for VE).
      n_steps: corrector steps per time (default 1).
      probability_flow: predict with the probability-flow ODE instead of the reverse SDE.
      step_size_rule: "batch" (official, default) or "per_example" Langevin step sizes.
      corrector_update: "leimkuhler_matthews" (default) or "euler_maruyama" (official): how the
        Langevin step uses its noise (see `correctors`); the same cost, and the first has no
        O(step) bias for Gaussian targets.
      schedule: the time grid (`time_points`). Default "uniform" for the chain-based predictors,
        the official grid, on which they walk the SDE's N levels (DDPM's betas, SMLD's sigmas;
        `method="ddpm"` is Algorithm 2 there), and "logsnr" for Euler-Maruyama, which is far
        more accurate at small N (VP, 3x8x8 mixture, N = 100: NLL gap +12 against +110). On any
        other grid the chain-based predictors take the kernel's step between consecutive times:
        with exact scores on the 3x8x8 mixture the log-SNR grid gets the components' spreads
        closer (VP, N = 1000: shape gap +0.1 against +4.1 nats) but, at small N, their weights
        further off (sub-VP, N = 100, three seeds: total variation 0.036-0.050 against
        0.005-0.012); see docs/sampling.md.
      denoise: the last step (eps -> 0): "pf" its probability-flow form, "mean" its noise-free
        mean (for the ancestral predictor Algorithm 2's z = 0 at t = 1), False as is.
    """
    sde, predictor_obj, corrector_obj, schedule = pc_steppers(sde, score_fn, N, **options)
    for k, (t, t_next) in enumerate(steps(time_grid(sde, eps, N, schedule, x.device), x, progress, "PC sampling")):
        x, _ = corrector_obj.correct(x, t, generator)
        if k == N - 1:
            return predictor_obj.final_step(x, t, t_next, denoise, generator)
        x, _ = predictor_obj.step(x, t, t_next, generator)


PC_OPTIONS = ("predictor", "corrector", "snr", "n_steps", "probability_flow", "step_size_rule",
              "corrector_update", "schedule")


def ddpm_sampler(sde, score_fn, x, *, eps, denoise, N, generator, progress):
    """Ancestral sampling down the SDE's N-level chain: Algorithm 2 of Ho et al. (2020) on VP.

    x_{i-1} = (x_i + beta_i s(x_i, t_i)) / sqrt(1 - beta_i) + sqrt(beta_i) z, i = N-1 ... 0,
    with the score at the official grid times linspace(T, eps, N) (level i = N-1-k), z = 0 at
    the last step when `denoise`. For an epsilon network s = -eps_theta / sqrt(1 - alpha_bar_i)
    and this is the paper's update exactly.
    """
    return pc_sampler(sde, score_fn, x, eps=eps, denoise=denoise, N=N, generator=generator,
                      progress=progress, predictor="ancestral_sampling", corrector="none", schedule="uniform")


def langevin_sampler(sde, score_fn, x, *, eps, denoise, N, generator, progress,
                     n_steps_each: int = 5, step_lr: float = 2e-5, schedule: str = "logsnr"):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) over N noise levels.

    For each level time t_i of linspace(T, eps, N) with noise std sigma_i = std(t_i), run
    `n_steps_each` steps x <- x + a_i / 2 s(x, t_i) + sqrt(a_i) z with a_i = step_lr
    (sigma_i / sigma_L)^2, sigma_L = std(eps) (NCSN: step_lr = 2e-5 with sigma_L = 0.01). With
    `denoise="mean"` (default), a final Tweedie step x + sigma_L^2 s(x, eps) (Jolicoeur-Martineau
    et al. 2021; for VP divided by alpha); "pf" takes half of it (see `reverse_sde_final_step`).
    Any SDE works (for VP the levels are its marginals); VE is the NCSN setting.
    """
    check_positive_int("n_steps_each", n_steps_each)
    check_positive("step_lr", step_lr)
    grid = time_points(sde, eps, N, schedule, x.device)
    sigmas = sde.marginal_std(grid)
    B = x.shape[0]
    for i in tqdm(range(N), desc="Annealed Langevin", disable=not progress, leave=False):
        t = grid[i].to(x.dtype).expand(B)
        a = (step_lr * (sigmas[i] / sigmas[-1]) ** 2).item()
        for _ in range(n_steps_each):
            x = x + 0.5 * a * score_fn(x, t) + math.sqrt(a) * randn_like(x, generator)
    if denoise:
        t = grid[-1].to(x.dtype).expand(B)
        x = predictors_lib.reverse_sde_final_step(sde, score_fn, x, t, torch.zeros_like(t), denoise, generator)
    return x


def ode_sampler(sde, score_fn, x, *, eps, denoise, N, generator, progress,
                solver: str = "RK45", rtol: float = 1e-5, atol: float = 1e-5, error_norm: str = "rms"):
    """Probability-flow ODE (eq. 13) from T to eps with a black-box solver, then, with `denoise`,
    one more step from eps to 0 (one more score evaluation; "pf": an Euler step of the same ODE).

    Args:
      solver: a name in `sde_lib.ode.METHODS`: any scipy `solve_ivp` method ("RK45", "RK23",
        "DOP853", "Radau", "BDF", "LSODA"); "dopri5" or "bosh3", adaptive solvers that stay on
        the torch device; or a fixed-step method ("euler", "heun", "midpoint", "rk4") with N steps.
      rtol, atol: tolerances of adaptive solvers.
      error_norm: "rms" (scipy's, over the whole batch) or "per_example" (each example's error
        must be small: costs a few more steps, no outliers) for the torch solvers.
    """
    from .ode import METHODS as ODE_METHODS, is_adaptive, probability_flow_sample

    check_choice("solver", solver, ODE_METHODS)
    n_steps = None if is_adaptive(solver) else N
    x, _ = probability_flow_sample(sde, score_fn, x, eps=eps, method=solver, rtol=rtol, atol=atol,
                                   progress=progress, n_steps=n_steps, error_norm=error_norm)
    if denoise:
        t = torch.full((x.shape[0],), eps, dtype=x.dtype, device=x.device)
        x = predictors_lib.reverse_sde_final_step(sde, score_fn, x, t, torch.zeros_like(t), denoise, generator)
    return x


def _ddim(*args, **kwargs):
    from .ddim import ddim_sampler

    return ddim_sampler(*args, **kwargs)


def _dpm_solver(*args, **kwargs):
    from .dpm_solver import dpm_solver_sampler

    return dpm_solver_sampler(*args, **kwargs)


def _sde_solver(*args, **kwargs):
    from .sde_solver import torchsde_sampler

    return torchsde_sampler(*args, **kwargs)


# name -> (function, its own options, default of `denoise`)
METHODS = {
    "pc": (pc_sampler, PC_OPTIONS, "pf"),
    "ode": (ode_sampler, ("solver", "rtol", "atol", "error_norm"), "pf"),
    "sde_solver": (_sde_solver, ("solver", "adaptive", "rtol", "atol", "dt"), "pf"),
    "ddpm": (ddpm_sampler, (), "mean"),
    "ddim": (_ddim, ("eta", "schedule"), "pf"),
    "dpm_solver": (_dpm_solver, ("order", "schedule"), "pf"),
    "langevin": (langevin_sampler, ("n_steps_each", "step_lr", "schedule"), "mean"),
}


def sample(sde, score_fn: Callable[[Tensor, Tensor], Tensor], shape, method: str = "pc", *,
           eps: float = DEFAULT_EPS, denoise=None, N: Optional[int] = None,
           generator: Optional[torch.Generator] = None, progress: bool = False,
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
      ValueError: unknown method or option, N < 1, eps outside (0, T), a shape that disagrees
        with x_T, or a non-finite x_T; raised before any work starts.
    """
    check_choice("method", method, METHODS)
    fn, own_options, default_denoise = METHODS[method]
    unknown = sorted(set(options) - set(own_options))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method={method!r}; its options are {list(own_options)}")
    shape = check_shape(shape)
    # eps = 0 is allowed where the score is never evaluated at 0: the chain-based samplers with
    # VE, whose chain_end_time() is 0 (sigma(0) = sigma_min > 0).
    check_end_time(eps, sde.T, allow_zero=method in ("pc", "ddpm") and float(sde.marginal_std(torch.zeros(1))) > 0)
    N = sde.N if N is None else check_positive_int("N", N)
    if denoise is None or denoise is True:
        denoise = default_denoise
    check_choice("denoise", denoise, DENOISE + (True, None))
    if x_T is None:
        x_T = sde.prior_sampling(shape, generator=generator, device=device, dtype=dtype)
    else:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={shape}")
        check_finite("x_T", x_T)
    counter = CountingScore(score_fn)
    with torch.no_grad():
        x = fn(sde, counter, x_T, eps=eps, denoise=denoise, N=N, generator=generator, progress=progress, **options)
    return x, counter.nfe
