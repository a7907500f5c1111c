"""Controllable generation with an unconditional score: inpainting and colorization
(Song et al. 2021, Sec. 5 and App. I; the official `controllable_generation.py`).

    samples, nfe = inpaint(sde, score_fn, x_known, mask, method="replacement", sampler="pc")
    samples, nfe = colorize(sde, score_fn, gray, method="replacement", sampler="pc")

The known coordinates y = x_known[mask == 1] condition the sample; the returned samples carry y
exactly and `nfe` counts the calls of `score_fn` (for "smc" each call is on particles x B
examples).

Methods (`METHODS`, each a dataclass whose fields are its own options):
  * "replacement" (Song et al. 2021, App. I, the official method): after every predictor and
    corrector update the known coordinates are replaced by a fresh forward-diffused sample
    alpha(t) y + std(t) z of the known data at the time the state is at. With `sampler="ode"` it
    is deterministic: see `SAMPLERS`.
  * "repaint" (Lugmayr et al. 2022, Alg. 1 with jumps): replacement, and every `jump` steps the
    state is diffused forward by the SDE's kernel back over the last `jump` steps and those
    steps are redone, `resample` times in all, so that the unknown part can adjust to the known.
  * "smc" (SMCDiff, Trippe et al. 2023): a particle filter over DDPM posterior steps
    (`posterior_step`) on the N times of `schedule` (default "logsnr"). The known coordinates
    follow one sample path of the forward process started at y; each of `particles` copies per
    example proposes its unknown part with the model's step and is weighted by the model's
    density of the next known value, N(y_{k+1}; x_mean_known, std_k^2 I); particles are
    resampled (systematically) when the effective sample size falls below `ess_threshold` x
    particles, and one particle per example is drawn by weight at the end. The forward noise of
    the known coordinates is independent of the rest given y, so conditioning the model's chain
    on the whole known path is conditioning on y: as particles -> infinity it samples the
    chain's exact conditional, which for the exact score is p_0(x_u | y) up to discretisation.
    The bias at finite `particles` is O(1/particles); each score call is on particles x B.

Samplers (`SAMPLERS`) and their options, which are those of the same `sampling.METHODS` entry
(one declaration, `sampling.method_options(name)`):
  * "pc": predictor-corrector steps, the steps of `sampling.METHODS["pc"]` (reverse diffusion +
    Langevin, snr 0.16, on the official grid, as the official code; its Langevin update is
    corrector_update="euler_maruyama"). Corrector first, then predictor, as in the official code.
  * "ddpm": ancestral sampling down the SDE's chain, no corrector (Ho et al. 2020, Alg. 2); for
    "smc", DDPM posterior steps on any time grid (the method's option `schedule`).
  * "ode": the probability-flow ODE (eq. 13), `sampling.METHODS["ode"]` with its options
    ("replacement" only). The known coordinates follow their own probability-flow
    path alpha(t) y + std(t) z with one z drawn at the start (the probability-flow trajectory of
    the point mass at y, and the deterministic analogue of replacement): the model's score is
    evaluated with the known coordinates on that path, and on the known coordinates the score
    is replaced by the exact score of the diffused point mass, -(x - alpha(t) y) / std(t)^2, so
    any ODE solver, adaptive ones included, integrates one smooth ODE.

Options every sampler shares: eps, denoise, N, generator, progress, as `sampling.sample`.

Colorization is inpainting in an orthonormal colour basis whose first channel is the luminance
(R + G + B) / sqrt(3) (`COLOR_BASIS`, the official decoupling): the score of the decoupled image
is COLOR_BASIS^T applied to the score of the image, since the forward SDEs are isotropic.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, ClassVar, Optional, Tuple

import torch

from .grids import SCHEDULES, time_points
from .predictors import reverse_sde_final_step
from .progress import progress_bar
from .samplers.base import DEFAULT_EPS, DENOISE, Declaration, SamplingMethod
from .sampling import METHODS as SAMPLING_METHODS
from .sampling import build_method
from .score import CountingScore
from .utils import (batch_broadcast, check_choice, check_end_time, check_finite,
                    check_positive_int, flat_sum, randn_like)

Tensor = torch.Tensor

SAMPLERS = ("pc", "ddpm", "ode")

# Orthonormal colour basis (columns): luminance (1, 1, 1)/sqrt(3), then (-2, 1, 1)/sqrt(6) and
# (0, 1, -1)/sqrt(2); the official code's matrix M rounded to float32 is this one.
COLOR_BASIS = torch.tensor(
    [[1 / math.sqrt(3), -2 / math.sqrt(6), 0.0],
     [1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)],
     [1 / math.sqrt(3), 1 / math.sqrt(6), -1 / math.sqrt(2)]],
    dtype=torch.float64,
)


def decouple(x: Tensor) -> Tensor:
    """RGB (B, 3, ...) -> decoupled channels z = COLOR_BASIS^T x per pixel; z[:, 0] is the luminance."""
    return torch.einsum("bc...,cj->bj...", x, COLOR_BASIS.to(x))


def couple(z: Tensor) -> Tensor:
    """The inverse of `decouple`: x = COLOR_BASIS z per pixel."""
    return torch.einsum("bj...,cj->bc...", z, COLOR_BASIS.to(z))


class KnownData:
    """The known coordinates y (mask True) of a batch and their forward diffusion q(x_t | y).

    Args:
      sde: the forward SDE.
      x_known: (B, ...) data; values where the mask is 0 are ignored.
      mask: bool tensor of x_known's shape, True where known.
    """

    def __init__(self, sde, x_known: Tensor, mask: Tensor):
        self.sde = sde
        self.mask = mask
        self.y = torch.where(mask, x_known, torch.zeros_like(x_known))

    def mean_std(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        """alpha(t) y and std(t) (B,) of q(x_t | y)."""
        alpha, std = self.sde.marginal_coeffs(t)
        return batch_broadcast(alpha, self.y) * self.y, std.to(self.y.dtype)

    def replace(self, x: Tensor, t: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        """x with its known coordinates replaced by a fresh sample of q(x_t | y)."""
        mean, std = self.mean_std(t)
        return torch.where(self.mask, mean + batch_broadcast(std, x) * randn_like(x, generator), x)

    def finish(self, x: Tensor) -> Tensor:
        """The final samples carry the known data exactly."""
        return torch.where(self.mask, self.y, x)


def renoise(sde, x: Tensor, t: Tensor, t_later: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Diffuse x from time t forward to t_later >= t with the SDE's kernel p(x_t' | x_t) (RePaint's jump back).

    With (a, s) = marginal_coeffs: x' = (a' / a) x + sqrt(s'^2 - (a' / a)^2 s^2) z.
    """
    alpha, std = sde.marginal_coeffs(t)
    alpha_later, std_later = sde.marginal_coeffs(t_later)
    ratio = alpha_later / alpha
    var = (std_later.square() - ratio.square() * std.square()).clamp(min=0.0)
    return batch_broadcast(ratio, x) * x + batch_broadcast(var.sqrt(), x) * randn_like(x, generator)


# ------------------------------------------------------------------------------------ methods
@dataclasses.dataclass(frozen=True)
class InpaintingMethod(Declaration):
    """Base of the method declarations: fields are the method's own options.

    Class attributes:
      samplers: the samplers it runs with (`SAMPLERS`), the first being its default.
    """

    samplers: ClassVar[Tuple[str, ...]] = ("pc", "ddpm", "ode")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check the option values; raise ValueError naming the option."""

    def default_denoise(self, sampler: SamplingMethod):
        return type(sampler).default_denoise

    def check(self, sde, sampler: SamplingMethod, N: int, eps: float) -> None:
        """What depends on the SDE: the chain of the stepping samplers."""
        sampler.check(sde, N, eps)

    def run(self, sde, score_fn, known: "KnownData", x: Tensor, *, sampler: SamplingMethod, eps, denoise,
            N, generator, progress) -> Tensor:
        raise NotImplementedError


def _as_steps(sampler: SamplingMethod) -> SamplingMethod:
    """The predictor-corrector form of a stepping sampler ("ddpm" is ancestral PC)."""
    return getattr(sampler, "as_pc", sampler)


@dataclasses.dataclass(frozen=True)
class Replacement(InpaintingMethod):
    """Song et al. (2021), App. I: after every update the known coordinates are replaced by a
    fresh sample of q(x_t | y); with the "ode" sampler the deterministic analogue (module
    docstring)."""

    def run(self, sde, score_fn, known, x, *, sampler, eps, denoise, N, generator, progress):
        if isinstance(sampler, SAMPLING_METHODS["ode"]):
            return _ode(sde, score_fn, known, x, sampler=sampler, eps=eps, denoise=denoise, N=N,
                        generator=generator, progress=progress)
        return _stepping(sde, score_fn, known, x, _as_steps(sampler), eps=eps, denoise=denoise, N=N,
                         generator=generator, progress=progress)


@dataclasses.dataclass(frozen=True)
class RePaint(InpaintingMethod):
    """Lugmayr et al. (2022), Alg. 1 with jumps: replacement, and every `jump` steps the state is
    diffused back over the last `jump` steps and those are redone, `resample` times in all."""

    jump: int = 10
    resample: int = 10

    samplers: ClassVar[Tuple[str, ...]] = ("pc", "ddpm")

    def validate(self):
        check_positive_int("jump", self.jump)
        check_positive_int("resample", self.resample)

    def run(self, sde, score_fn, known, x, *, sampler, eps, denoise, N, generator, progress):
        return _stepping(sde, score_fn, known, x, _as_steps(sampler), eps=eps, denoise=denoise, N=N,
                         generator=generator, progress=progress, jump=self.jump, resample=self.resample)


@dataclasses.dataclass(frozen=True)
class SMC(InpaintingMethod):
    """SMCDiff (Trippe et al. 2023): a particle filter over DDPM posterior steps on the N times
    of `schedule` (module docstring); `particles` per example, resampled when the effective
    sample size falls below `ess_threshold` x particles."""

    particles: int = 16
    ess_threshold: float = 0.5
    schedule: str = "logsnr"

    samplers: ClassVar[Tuple[str, ...]] = ("ddpm",)

    def validate(self):
        check_positive_int("particles", self.particles)
        t = self.ess_threshold
        if isinstance(t, bool) or not (isinstance(t, (int, float)) and 0.0 <= t <= 1.0):
            raise ValueError(f"ess_threshold={t!r}: expected a number in [0, 1]")
        check_choice("schedule", self.schedule, SCHEDULES)

    def default_denoise(self, sampler):
        return "pf"

    def check(self, sde, sampler, N, eps):
        pass  # posterior steps between any two times: no chain

    def run(self, sde, score_fn, known, x, *, sampler, eps, denoise, N, generator, progress):
        return _smc(sde, score_fn, known, x, eps=eps, denoise=denoise, N=N, generator=generator,
                    progress=progress, particles=self.particles, ess_threshold=self.ess_threshold,
                    schedule=self.schedule)


METHODS = {"replacement": Replacement, "repaint": RePaint, "smc": SMC}


# ------------------------------------------------------------------------------------ runners
def _stepping(sde, score_fn, known: KnownData, x: Tensor, pc: SamplingMethod, *, eps, denoise, N, generator,
              progress, jump: int = 1, resample: int = 1) -> Tensor:
    """Predictor-corrector steps (`samplers.pc.PCSteps`) with replacement after every update;
    RePaint jumps when resample > 1.

    RePaint schedule: after reaching grid index k = jump, 2 jump, ... (up to N, i.e. t = 0), the
    state is diffused from t_k back to t_{k - jump} and the steps are redone, resample - 1 times
    per index, so a block of `jump` steps is run `resample` times. The known part is replaced at
    the time the state is at after each update (the official code replaces with time t_k after
    the predictor step too, one step behind).
    """
    steps = pc.build(sde, score_fn, N, eps, x.device)
    jumps_left = {k: resample - 1 for k in range(jump, N + 1, jump)} if resample > 1 else {}
    total = N + sum(jumps_left.values()) * jump

    def project(x, t):
        return known.replace(x, t, generator)

    k = 0
    x = project(x, steps.time(0, x))  # the official code starts from the clean known data
    with progress_bar(progress, total, "inpainting") as bar:
        for _ in range(total):
            x = steps.update(x, k, denoise=denoise, generator=generator, project=project)
            k += 1
            if jumps_left.get(k, 0) > 0:  # RePaint: diffuse back over the last `jump` steps
                jumps_left[k] -= 1
                x = renoise(steps.sde, x, steps.time(k, x), steps.time(k - jump, x), generator)
                k -= jump
            bar.update(1)
    return x


def _ode(sde, score_fn, known: KnownData, x: Tensor, *, sampler: SamplingMethod, eps, denoise, N, generator,
         progress) -> Tensor:
    """Probability-flow ODE with the known coordinates on their own flow path alpha y + std z."""
    z_known = randn_like(x, generator)

    def conditional_score(x: Tensor, t: Tensor) -> Tensor:
        mean, std = known.mean_std(t)
        path = mean + batch_broadcast(std, x) * z_known
        score = score_fn(torch.where(known.mask, path, x), t)
        point_mass = -(x - mean) / batch_broadcast(std.square(), x)
        return torch.where(known.mask, point_mass, score)

    T = torch.full((x.shape[0],), sde.T, dtype=x.dtype, device=x.device)
    mean_T, std_T = known.mean_std(T)
    x_T = torch.where(known.mask, mean_T + batch_broadcast(std_T, x) * z_known, x)
    return sampler.run(sde, conditional_score, x_T, eps=eps, denoise=denoise, N=N, generator=generator,
                       progress=progress)


def posterior_step(sde, x: Tensor, t: Tensor, t_next: Tensor, score: Tensor) -> Tuple[Tensor, Tensor]:
    """Mean and std (B,) of q(x_t' | x_t, x_0 = x0_hat): DDPM's posterior step (Ho et al. 2020,
    eqs. 6-7) between any two times t' < t of the kernel, with Tweedie's x0_hat from the score.

    With x_t = r x_t' + sqrt(q) z (r = alpha_t / alpha_t', q = std_t^2 - r^2 std_t'^2):
        mean = (r std_t'^2 x_t + alpha_t' q x0_hat) / std_t^2,   var = q std_t'^2 / std_t^2.
    """
    alpha, std = sde.marginal_coeffs(t)
    alpha_next, std_next = sde.marginal_coeffs(t_next)
    ratio = alpha / alpha_next
    q = (std.square() - ratio.square() * std_next.square()).clamp(min=0.0)
    x0 = (x + batch_broadcast(std.square(), x) * score) / batch_broadcast(alpha, x)
    mean = (
        batch_broadcast(ratio * std_next.square() / std.square(), x) * x
        + batch_broadcast(alpha_next * q / std.square(), x) * x0
    )
    return mean, (q * std_next.square() / std.square()).sqrt().to(x.dtype)


def _smc(sde, score_fn, known: KnownData, x: Tensor, *, eps, denoise, N, generator, progress,
         particles: int = 16, ess_threshold: float = 0.5, schedule: str = "logsnr") -> Tensor:
    """SMCDiff (Trippe et al. 2023) with DDPM posterior steps on the N times of `schedule` from T
    to eps; with `denoise` a final noise-free step to zero noise (N score calls in all)."""
    P = particles
    B, shape = x.shape[0], x.shape[1:]
    times = time_points(sde, eps, N if denoise else N + 1, schedule, x.device)
    if not denoise:
        times[-1] = 0.0
    # One forward path of the known data at those times, from t_last up to T.
    def vec(k: int, size: int) -> Tensor:
        return times[k].to(x.dtype).expand(size)

    path = [None] * len(times)
    mean, std = known.mean_std(vec(-1, B))
    path[-1] = mean + batch_broadcast(std, x) * randn_like(x, generator)
    for k in range(len(times) - 2, -1, -1):
        path[k] = torch.where(known.mask, renoise(sde, path[k + 1], vec(k + 1, B), vec(k, B), generator), known.y)

    def rep(v: Tensor) -> Tensor:  # (B, ...) -> (B * P, ...), the particles of an example adjacent
        return v.repeat_interleave(P, dim=0)

    mask = rep(known.mask)
    x = sde.prior_sampling((B * P, *shape), generator=generator, device=x.device, dtype=x.dtype)
    log_w = torch.zeros(B, P, dtype=torch.float64, device=x.device)
    rows = torch.arange(B, device=x.device)[:, None] * P
    with progress_bar(progress, len(times) - 1, "SMC inpainting") as bar:
        for k in range(len(times) - 1):
            t, t_next = vec(k, B * P), vec(k + 1, B * P)
            x = torch.where(mask, rep(path[k]), x)
            x_mean, std = posterior_step(sde, x, t, t_next, score_fn(x, t))
            std0 = float(std[0])
            if std0 > 0:  # weight: the model's density of the next known value, N(y'; x_mean, std^2)
                r = torch.where(mask, (rep(path[k + 1]) - x_mean) / std0, torch.zeros_like(x_mean))
                log_w = log_w - 0.5 * flat_sum(r.double().square()).view(B, P)
            x = x_mean + std0 * randn_like(x, generator)
            weights = torch.softmax(log_w, dim=1)
            ess = 1.0 / weights.square().sum(1)
            low = ess < ess_threshold * P
            if bool(low.any()):
                idx = torch.where(low[:, None], systematic_resample(weights, generator), torch.arange(P, device=x.device))
                x = x[(rows + idx).reshape(-1)]
                log_w = torch.where(low[:, None], torch.zeros_like(log_w), log_w)
            bar.update(1)
    pick = torch.multinomial(torch.softmax(log_w, dim=1), 1, replacement=True, generator=generator)
    x = x[(rows + pick)[:, 0]]
    if denoise:
        x = torch.where(known.mask, path[-1], x)
        t = vec(-1, B)
        x = reverse_sde_final_step(sde, score_fn, x, t, torch.zeros_like(t), denoise, generator)
    return x


def systematic_resample(weights: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Systematic resampling (Kitagawa 1996), one row per example: (B, P) weights -> (B, P) indices.

    Particle j is copied floor or ceil of P w_j times; lower variance than multinomial draws.
    """
    B, P = weights.shape
    u = torch.rand(B, 1, generator=generator, dtype=torch.float64, device=generator.device if generator else None)
    u = (u.to(weights.device) + torch.arange(P, dtype=torch.float64, device=weights.device)) / P
    cdf = torch.cumsum(weights.double(), dim=1)
    cdf[:, -1] = 1.0  # guard against rounding
    return torch.searchsorted(cdf, u).clamp(max=P - 1)


# ------------------------------------------------------------------------------------ entry points
@dataclasses.dataclass(frozen=True)
class Inpainter:
    """An inpainting method with its sampler and the shared settings, checked (`build_inpainter`).

    Call `check(sde)` once before any work, then `inpaint(...)` or `colorize(...)` per batch.
    """

    name: str
    method: InpaintingMethod
    sampler_name: str
    sampler: SamplingMethod
    eps: float = DEFAULT_EPS
    denoise: object = True
    N: Optional[int] = None

    def __post_init__(self):
        if self.denoise is True or self.denoise is None:  # each sampler's default final step
            object.__setattr__(self, "denoise", self.method.default_denoise(self.sampler))
        check_choice("denoise", self.denoise, DENOISE)
        if self.N is not None:
            check_positive_int("N", self.N)

    def check(self, sde) -> None:
        """eps in (0, T) and what the method and sampler need of the SDE at N steps."""
        check_end_time(self.eps, sde.T)
        self.method.check(sde, self.sampler, sde.N if self.N is None else self.N, float(self.eps))

    def describe(self):
        """The settings, JSON-ready."""
        return {"method": self.name, "sampler": self.sampler_name, "eps": self.eps, "denoise": self.denoise,
                "N": self.N, **self.method.options(), **self.sampler.options()}

    def inpaint(self, sde, score_fn: Callable[[Tensor, Tensor], Tensor], x_known: Tensor, mask: Tensor, *,
                generator: Optional[torch.Generator] = None, progress=False) -> Tuple[Tensor, int]:
        """See `inpaint`."""
        known = _known_data(sde, x_known, mask)
        x_T = sde.prior_sampling(x_known.shape, generator=generator, device=x_known.device, dtype=x_known.dtype)
        counter = CountingScore(score_fn)
        with torch.no_grad():
            x = self.method.run(sde, counter, known, x_T, sampler=self.sampler, eps=float(self.eps),
                                denoise=self.denoise, N=sde.N if self.N is None else self.N,
                                generator=generator, progress=progress)
        return known.finish(x), counter.nfe

    def colorize(self, sde, score_fn: Callable[[Tensor, Tensor], Tensor], gray: Tensor, *,
                 generator: Optional[torch.Generator] = None, progress=False) -> Tuple[Tensor, int]:
        """See `colorize`."""
        _check_gray(gray)
        g = gray.mean(dim=1, keepdim=True)
        z_known = torch.cat([math.sqrt(3.0) * g, torch.zeros_like(g), torch.zeros_like(g)], dim=1)
        mask = torch.zeros((1, 3) + (1,) * (gray.ndim - 2), dtype=torch.bool, device=gray.device)
        mask[:, 0] = True

        def decoupled_score(z: Tensor, t: Tensor) -> Tensor:
            return decouple(score_fn(couple(z), t))

        z, nfe = self.inpaint(sde, decoupled_score, z_known, mask, generator=generator, progress=progress)
        return couple(z), nfe


def _check_gray(gray) -> None:
    if not torch.is_tensor(gray) or gray.ndim < 2 or gray.shape[1] not in (1, 3):
        shape = tuple(gray.shape) if torch.is_tensor(gray) else type(gray).__name__
        raise ValueError(f"gray has shape {shape}; expected (B, 1, ...) or (B, 3, ...)")


def build_inpainter(method: str = "replacement", *, sampler: Optional[str] = None, eps: float = DEFAULT_EPS,
                    denoise=True, N: Optional[int] = None, **options) -> Inpainter:
    """An `Inpainter`: `method` (METHODS) with its options, run by `sampler` (one of the method's
    `samplers`, default its first) with that sampler's options (`sampling.method_options`).

    Raises:
      ValueError: unknown method, sampler or option, or a bad value; before any work.
    """
    check_choice("method", method, METHODS)
    cls = METHODS[method]
    sampler = cls.samplers[0] if sampler is None else sampler
    check_choice("sampler", sampler, cls.samplers)
    own = cls.option_defaults()
    # "ddpm" means the chain (or, for smc, posterior steps): none of its options to set
    sampler_own = {} if sampler == "ddpm" else SAMPLING_METHODS[sampler].option_defaults()
    unknown = sorted(set(options) - set(own) - set(sampler_own))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method={method!r}, sampler={sampler!r}; "
                         f"its options are {list(sampler_own) + list(own)}")
    method_obj = cls(**{k: v for k, v in options.items() if k in own})
    sampler_obj = build_method(sampler, **{k: v for k, v in options.items() if k in sampler_own})
    return Inpainter(method, method_obj, sampler, sampler_obj, eps=eps, denoise=denoise, N=N)


def inpaint(sde, score_fn: Callable[[Tensor, Tensor], Tensor], x_known: Tensor, mask: Tensor,
            method: str = "replacement", *, sampler: Optional[str] = None, eps: float = DEFAULT_EPS,
            denoise=True, N: Optional[int] = None, generator: Optional[torch.Generator] = None,
            progress=False, **options) -> Tuple[Tensor, int]:
    """Sample x ~ p_0(x | x[mask] = x_known[mask]) with an unconditional score (see module docstring).

    Args:
      sde: the forward SDE the score belongs to.
      score_fn: score_fn(x, t) -> grad_x log p_t(x).
      x_known: (B, ...) data; only the entries where mask is 1 are read (others may be anything).
      mask: 1 where known, 0 where to fill in; x_known's shape or broadcastable to it (e.g. one
        (1, C, H, W) mask for the batch, or (B, 1, H, W) for all channels); bool or numbers.
      method: one of METHODS.
      sampler: one of the method's samplers; default its first.
      eps, denoise, N, generator, progress: as `sampling.sample` (N defaults to the SDE's N).
      **options: the sampler's options (`sampling.method_options(sampler)`) and the method's
        (its dataclass fields): repaint: jump (10), resample (10), the j and r of Lugmayr et
        al.; smc: particles (16), ess_threshold (0.5), schedule ("logsnr").

    Returns:
      (samples of x_known's shape and dtype, equal to x_known where known; nfe: score_fn calls).

    Raises:
      ValueError: unknown method, sampler or option; a mask that does not broadcast to x_known
        or holds values other than 0 and 1; non-finite known data; bad N or eps; a chain that is
        invalid at N levels.
    """
    inpainter = build_inpainter(method, sampler=sampler, eps=eps, denoise=denoise, N=N, **options)
    _known_data(sde, x_known, mask)
    inpainter.check(sde)
    return inpainter.inpaint(sde, score_fn, x_known, mask, generator=generator, progress=progress)


def _known_data(sde, x_known: Tensor, mask: Tensor) -> KnownData:
    if not torch.is_tensor(x_known) or not x_known.is_floating_point() or x_known.ndim < 2:
        raise ValueError("x_known must be a floating-point tensor of shape (B, ...)")
    if not torch.is_tensor(mask):
        raise ValueError(f"mask must be a tensor of 0/1 values, got {type(mask).__name__}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, x_known.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != x_known.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, which does not broadcast to x_known's "
                         f"shape {tuple(x_known.shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 and 1 (1 = known), got other values")
    mask = mask.to(device=x_known.device).bool().expand(x_known.shape)
    check_finite("x_known where mask is 1", torch.where(mask, x_known, torch.zeros_like(x_known)))
    return KnownData(sde, x_known, mask)


def colorize(sde, score_fn: Callable[[Tensor, Tensor], Tensor], gray: Tensor, method: str = "replacement",
             *, generator: Optional[torch.Generator] = None, progress=False, **options) -> Tuple[Tensor, int]:
    """Sample colour images x ~ p_0(x | grey level) with an unconditional score of RGB images.

    The grey level g = (R + G + B) / 3 fixes the luminance channel sqrt(3) g of the decoupled
    image (`decouple`); the two chroma channels are inpainted there and the result is mapped
    back (`couple`), as the official colorizer does.

    Args:
      sde, score_fn: as `inpaint`; score_fn takes RGB images (B, 3, ...).
      gray: (B, 1, ...) grey levels, or (B, 3, ...) images whose channel mean is the grey level
        (a grey image has three equal channels, the official input).
      method, **options: as `inpaint` (sampler, eps, denoise, N and the options).

    Returns:
      (colour images (B, 3, ...) whose channel mean is `gray`, nfe).

    Raises:
      ValueError: gray without 1 or 3 channels; as `inpaint`.
    """
    inpainter = build_inpainter(method, **options)
    _check_gray(gray)
    inpainter.check(sde)
    return inpainter.colorize(sde, score_fn, gray, generator=generator, progress=progress)
