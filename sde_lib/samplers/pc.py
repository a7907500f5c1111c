"""Predictor-corrector sampling (Song et al. 2021, Alg. 1; Alg. 2-3 for VE/VP with Alg. 4-5), and
ancestral sampling down the SDE's chain (Ho et al. 2020, Alg. 2) as its special case."""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Optional

import torch

from .. import correctors as correctors_lib
from .. import predictors as predictors_lib
from ..grids import SCHEDULES, time_grid
from ..learned_variance import DiscreteChain, interpolated_log_variance, variance_output
from ..progress import progress_bar
from ..utils import check_choice, check_positive, check_positive_int, randn_like
from .base import SamplingMethod

Tensor = torch.Tensor


class PCSteps:
    """The predictor and corrector of one run, built once, and the grid they step on.

    `update(x, k)` is one step of Alg. 1 at grid index k: the corrector at t_k, then the
    predictor to t_{k+1} (the last step, k = N - 1, as `denoise` says). `project(x, t)`, if given,
    is applied after each of the two updates (inpainting replaces the known coordinates there).
    """

    def __init__(self, sde, predictor, corrector, grid: Tensor, N: int):
        self.sde, self.predictor, self.corrector, self.grid, self.N = sde, predictor, corrector, grid, N

    def time(self, k: int, x: Tensor) -> Tensor:
        """Grid time t_k as a (B,) tensor in x's dtype."""
        return self.grid[k].to(x.dtype).expand(x.shape[0])

    def update(self, x: Tensor, k: int, *, denoise, generator: Optional[torch.Generator],
               project: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> Tensor:
        t, t_next = self.time(k, x), self.time(k + 1, x)
        x, _ = self.corrector.correct(x, t, generator)
        if project is not None:
            x = project(x, t)
        if k == self.N - 1:
            x = self.predictor.final_step(x, t, t_next, denoise, generator)
        else:
            x, _ = self.predictor.step(x, t, t_next, generator)
        if project is not None:
            x = project(x, t_next)
        return x


@dataclasses.dataclass(frozen=True)
class PredictorCorrector(SamplingMethod):
    """Predictor-corrector sampling (Song et al. 2021, Alg. 1).

    Order: at each grid time t_k the corrector runs first, then the predictor steps to t_{k+1}
    (as in the official code). Correcting first also corrects the prior sample, which is only an
    approximation of p_T, and the final predictor step lands on t = 0, where no corrector could
    run (the score is never evaluated at t = 0).

    The Langevin step rule, and the chain-based predictors (reverse_diffusion,
    ancestral_sampling) on the uniform grid, use the SDE's chain with N levels
    (`SDE.with_num_levels(N)`), so fewer steps mean coarser levels of the same schedule, as the
    official configs do with `num_scales`.

    Options:
      predictor, corrector: names in `predictors.PREDICTORS` and `correctors.CORRECTORS`.
      snr: signal-to-noise ratio of the Langevin step rule (0.16, official for VE).
      n_steps: corrector steps per time.
      probability_flow: predict with the probability-flow ODE instead of the reverse SDE.
      step_size_rule: "batch" (official) or "per_example" Langevin step sizes.
      corrector_update: "leimkuhler_matthews" (default) or "euler_maruyama" (official): how the
        Langevin step uses its noise (`correctors`); the same cost, and the first has no O(step)
        bias for Gaussian targets.
      schedule: the time grid (`grids.time_points`); None: "uniform" for the chain-based
        predictors, the official grid, on which they walk the SDE's N levels (DDPM's betas,
        SMLD's sigmas), and "logsnr" for Euler-Maruyama, far more accurate at small N (VP,
        3x8x8 mixture, N = 100: NLL gap +12 against +110). On any other grid the chain-based
        predictors take the kernel's step between consecutive times (docs/sampling.md).
    The last step (`denoise`): "pf" its probability-flow form, "mean" its noise-free mean (for
    the ancestral predictor Algorithm 2's z = 0 at t = 1), False as is.
    """

    predictor: str = "reverse_diffusion"
    corrector: str = "langevin"
    snr: float = 0.16
    n_steps: int = 1
    probability_flow: bool = False
    step_size_rule: str = "batch"
    corrector_update: str = "leimkuhler_matthews"
    schedule: Optional[str] = None

    allows_zero_eps: ClassVar[bool] = True
    title: ClassVar[str] = "PC sampling"

    def validate(self) -> None:
        check_choice("predictor", self.predictor, predictors_lib.PREDICTORS)
        check_choice("corrector", self.corrector, correctors_lib.CORRECTORS)
        check_positive("snr", self.snr)
        check_positive_int("n_steps", self.n_steps)
        check_choice("probability_flow", self.probability_flow, (False, True))
        check_choice("step_size_rule", self.step_size_rule, correctors_lib.STEP_SIZE_RULES)
        check_choice("corrector_update", self.corrector_update, correctors_lib.UPDATES)
        check_choice("schedule", self.resolved_schedule, SCHEDULES)
        if self.probability_flow and self.predictor == "ancestral_sampling":
            raise ValueError("the ancestral predictor has no probability-flow form; use"
                             " predictor='reverse_diffusion' or method='ddim'")

    @property
    def chain_based(self) -> bool:
        return predictors_lib.PREDICTORS[self.predictor].chain_based

    @property
    def resolved_schedule(self) -> str:
        return self.schedule or ("uniform" if self.chain_based else "logsnr")

    def uses_chain(self) -> bool:
        """Whether the SDE's N-level chain is walked (chain-based predictor on the uniform grid)
        or read (the Langevin step rule's alpha_i)."""
        return (self.chain_based and self.resolved_schedule == "uniform") or self.corrector != "none"

    def check(self, sde, N: int, eps: float) -> None:
        if self.uses_chain():
            sde.with_num_levels(N).check_chain()

    def build(self, sde, score_fn, N: int, eps: float, device=None) -> PCSteps:
        """The predictor, corrector and grid of one run (the SDE with N levels)."""
        sde = sde.with_num_levels(N)
        schedule = self.resolved_schedule
        # Chain-based predictors walk the SDE's N levels on the uniform grid (DDPM's betas: the
        # official algorithms, Algorithm 2 exactly) and the kernel's steps on any other grid.
        predictor = predictors_lib.PREDICTORS[self.predictor](
            sde, score_fn, self.probability_flow, levels=schedule == "uniform")
        kwargs = {"step_size_rule": self.step_size_rule} if self.corrector == "langevin" else {}
        corrector = correctors_lib.CORRECTORS[self.corrector](
            sde, score_fn, snr=self.snr, n_steps=self.n_steps, update=self.corrector_update, **kwargs)
        return PCSteps(sde, predictor, corrector, time_grid(sde, eps, N, schedule, device), N)

    def run(self, sde, score_fn, x, *, eps, denoise, N, generator, progress):
        pc = self.build(sde, score_fn, N, eps, x.device)
        with progress_bar(progress, N, self.title) as bar:
            for k in range(N):
                x = pc.update(x, k, denoise=denoise, generator=generator)
                bar.update(1)
        return x


VARIANCES = ("transition", "posterior", "learned")


@dataclasses.dataclass(frozen=True)
class AncestralSampling(SamplingMethod):
    """Ancestral sampling down the SDE's N-level chain: Algorithm 2 of Ho et al. (2020) on VP.

    x_{i-1} = (x_i + beta_i s(x_i, t_i)) / sqrt(1 - beta_i) + sqrt(beta_i) z, i = N-1 ... 0,
    with the score at the official grid times linspace(T, eps, N) (level i = N-1-k), z = 0 at
    the last step when `denoise` ("mean", the default). For an epsilon network
    s = -eps_theta / sqrt(1 - alpha_bar_i) and this is the paper's update exactly.

    Options:
      variance: the noise variance of each step: "transition" (DDPM's sigma_i^2 = beta_i, the
        step's own), "posterior" (sigma_i^2 = beta~_i = beta_i (1 - alpha_bar_{i-1}) / (1 -
        alpha_bar_i), the posterior of x_{i-1} given x_i and x_0; Ho et al. 2020, Sec. 3.2);
        None: the SDE's own (`SDE.ancestral_variance`: transition for VP, posterior for VE);
        "learned": improved DDPM's log sigma_i^2 = v log beta_i + (1 - v) log beta~_i (Nichol &
        Dhariwal 2021, eq. 15; beta~_0 clipped to beta~_1), v the network's second output (the
        score must be a `learned_variance.LearnedVarianceScore`). Inpainting with "ddpm" uses
        the SDE's own.
      respace: K, to skip along the trained N-level chain (the SDE's own N; leave N unset) in K
        steps at the levels `learned_variance.respaced_levels(N, K)`, with the steps' betas
        recomputed from alpha_bar at the kept levels (Nichol & Dhariwal 2021, Sec. 4); None: step
        through every level of the chain of N levels (`N` fewer than the SDE's rebuilds a coarser
        chain of the same schedule instead). Noise-free levels at the chain's start (the cosine
        chain's level 0) are the data and take no step here.
    """

    variance: Optional[str] = None
    respace: Optional[int] = None

    default_denoise: ClassVar = "mean"
    allows_zero_eps: ClassVar[bool] = True

    def validate(self) -> None:
        if self.variance is not None:
            check_choice("variance", self.variance, VARIANCES)
        if self.respace is not None:
            check_positive_int("respace", self.respace)

    @property
    def on_chain(self) -> bool:
        """Whether the run walks a `learned_variance.DiscreteChain` (learned or respaced)."""
        return self.variance == "learned" or self.respace is not None

    @property
    def as_pc(self) -> PredictorCorrector:
        """The same sampler as a predictor-corrector configuration."""
        return PredictorCorrector(predictor="ancestral_sampling", corrector="none", schedule="uniform")

    def check(self, sde, N, eps):
        if self.respace is not None:
            if N != sde.N:
                raise ValueError(f"respace={self.respace} skips along the trained chain of the SDE's N={sde.N}"
                                 f" levels; leave the sampler's N unset (got N={N})")
            DiscreteChain(sde, self.respace)
            sde.check_chain()
        else:
            self.as_pc.check(sde, N, eps)

    def run(self, sde, score_fn, x, *, eps, denoise, N, generator, progress):
        if self.on_chain:
            return self.run_chain(sde, score_fn, x, eps=eps, denoise=denoise, N=N, generator=generator,
                                  progress=progress)
        pc = self.as_pc.build(sde, score_fn, N, eps, x.device)
        pc.predictor.variance = self.variance
        with progress_bar(progress, N, self.as_pc.title) as bar:
            for k in range(N):
                x = pc.update(x, k, denoise=denoise, generator=generator)
                bar.update(1)
        return x

    def run_chain(self, sde, score_fn, x, *, eps, denoise, N, generator, progress):
        """Algorithm 2 on a `DiscreteChain` (respaced and/or with learned variances):
        x_{k-1} = (x_k + beta_k s) / r_k + sigma_k z, z = 0 at the last step unless denoise=False."""
        if denoise == "pf":
            raise ValueError("method='ddpm' with variance='learned' or respace has no probability-flow"
                             " last step; use denoise='mean' or False")
        if self.respace is None:  # the N-level chain on today's grid (the official times)
            chain = DiscreteChain(sde.with_num_levels(N))  # grid time k is level N - 1 - k
            times = time_grid(chain.sde, eps, N, "uniform", x.device)[:chain.K]
        else:
            chain = DiscreteChain(sde, self.respace)
            times = chain.times.flip(0).to(x.device)
        variance = self.variance or sde.ancestral_variance
        B = x.shape[0]
        with progress_bar(progress, chain.K, self.as_pc.title) as bar:
            for step in range(chain.K):
                k = chain.K - 1 - step
                score = score_fn(x, times[step].to(x.dtype).expand(B))
                beta, ratio = chain.beta[k].to(x.dtype), chain.ratio[k].to(x.dtype)
                x_mean = (x + beta * score) / ratio
                if k == 0 and denoise == "mean":
                    x = x_mean
                else:
                    if variance == "learned":  # eq. 15
                        log_var = interpolated_log_variance(variance_output(score_fn), chain.log_beta[k].to(x.dtype),
                                                            chain.log_beta_tilde_clipped[k].to(x.dtype))
                        std = torch.exp(0.5 * log_var)
                    else:
                        std = (chain.beta if variance == "transition" else chain.beta_tilde)[k].sqrt().to(x.dtype)
                    x = x_mean + std * randn_like(x, generator)
                bar.update(1)
        return x
