"""The reverse-time SDE (Song et al. 2021, eq. 6) solved by torchsde.

torchsde integrates forward in time, so the reverse process is written in s = T - t:
    dx = [g(t)^2 s(x, t) - f(x, t)] ds + g(t) dW_s,   t = T - s,   s from 0 to T - eps.
The noise is additive (g does not depend on x), so Ito and Stratonovich solutions coincide and
every torchsde solver applies; the SDE object declares the type each solver needs.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..predictors import reverse_sde_final_step
from ..progress import progress_bar
from ..utils import check_choice, check_positive
from .base import SamplingMethod

Tensor = torch.Tensor

# solver name -> SDE type torchsde requires for it
SOLVERS = {
    "euler": "ito",
    "milstein": "ito",
    "srk": "ito",
    "euler_heun": "stratonovich",
    "heun": "stratonovich",
    "midpoint": "stratonovich",
    "reversible_heun": "stratonovich",
}


class _ReverseTimeSDE(torch.nn.Module):
    """torchsde's f(s, y), g(s, y) for the flattened reverse SDE in forward time s = T - t."""

    noise_type = "diagonal"

    def __init__(self, sde, score_fn, data_shape, sde_type, bar):
        super().__init__()
        self.sde, self.score_fn, self.data_shape = sde, score_fn, data_shape
        self.sde_type = sde_type
        self.bar, self.s_reported = bar, 0.0

    def _t(self, s, y):
        return (self.sde.T - s).to(y.dtype).expand(y.shape[0])

    def f(self, s, y):
        x = y.reshape(-1, *self.data_shape)
        t = self._t(s, y)
        drift, _ = self.sde.reverse(self.score_fn).sde(x, t)
        if float(s) > self.s_reported:
            self.bar.update(float(s) - self.s_reported)
            self.s_reported = float(s)
        return -drift.reshape(y.shape)

    def g(self, s, y):
        t = self._t(s, y)
        return self.sde.diffusion(t).to(y.dtype)[:, None].expand_as(y)


@dataclasses.dataclass(frozen=True)
class TorchSDESolver(SamplingMethod):
    """Solve the reverse SDE from T to eps with `torchsde.sdeint` and a `BrownianInterval`, then
    take the final step from eps to 0 (`predictors.reverse_sde_final_step`).

    Options:
      solver: a torchsde method name (SOLVERS).
      adaptive, rtol, atol: torchsde's adaptive stepping (for the solvers that support it).
      dt: step size; default (T - eps) / N.
    The generator seeds the BrownianInterval (its `entropy`), so the Brownian path, and the
    samples, are reproducible.
    """

    solver: str = "euler"
    adaptive: bool = False
    rtol: float = 1e-5
    atol: float = 1e-4
    dt: Optional[float] = None

    def validate(self) -> None:
        check_choice("solver", self.solver, SOLVERS)
        check_choice("adaptive", self.adaptive, (False, True))
        check_positive("rtol", self.rtol)
        check_positive("atol", self.atol)
        if self.dt is not None:
            check_positive("dt", self.dt)

    def run(self, sde, score_fn, x: Tensor, *, eps, denoise, N, generator, progress):
        import torchsde

        B, data_shape = x.shape[0], tuple(x.shape[1:])
        entropy = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
        # Output times one step apart and dt a hair longer, so that a fixed-step solver takes
        # exactly N steps (torchsde would otherwise add a sliver of a step where N dt rounds below
        # the span). torchsde also evaluates the drift once before integrating to check shapes:
        # nfe = N + 2.
        n_out = N if self.dt is None and not self.adaptive else 1
        dt = (sde.T - eps) / N if self.dt is None else self.dt
        ts = torch.linspace(0.0, sde.T - eps, n_out + 1, dtype=x.dtype, device=x.device)
        span = float(ts[-1])  # in x's precision, so that the Brownian interval covers ts exactly
        levy = "space-time" if self.solver == "srk" else "none"  # SRK needs space-time Levy area
        bm = torchsde.BrownianInterval(t0=0.0, t1=span, size=(B, x[0].numel()), dtype=x.dtype,
                                       device=x.device, entropy=entropy, levy_area_approximation=levy)
        with progress_bar(progress, span, "torchsde", unit="t") as bar:
            rev = _ReverseTimeSDE(sde, score_fn, data_shape, SOLVERS[self.solver], bar)
            ys = torchsde.sdeint(rev, x.reshape(B, -1), ts, method=self.solver, dt=dt * (1 + 1e-4), bm=bm,
                                 adaptive=self.adaptive, rtol=self.rtol, atol=self.atol)
        x = ys[-1].reshape(B, *data_shape)
        t = torch.full((B,), eps, dtype=x.dtype, device=x.device)
        return reverse_sde_final_step(sde, score_fn, x, t, torch.zeros_like(t), denoise, generator)
