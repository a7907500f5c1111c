"""The reverse-time SDE (Song et al. 2021, eq. 6) solved by torchsde.

torchsde integrates forward in time, so the reverse process is written in s = T - t:
    dx = [g(t)^2 s(x, t) - f(x, t)] ds + g(t) dW_s,   t = T - s,   s from 0 to T - eps.
The noise is additive (g does not depend on x), so Ito and Stratonovich solutions coincide and
every torchsde solver applies; the SDE object declares the type each solver needs.
"""
from __future__ import annotations

import torch

from .predictors import reverse_sde_final_step
from .utils import check_choice, check_positive

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

    def __init__(self, sde, score_fn, data_shape, sde_type, progress_bar=None):
        super().__init__()
        self.sde, self.score_fn, self.data_shape = sde, score_fn, data_shape
        self.sde_type = sde_type
        self.progress_bar = progress_bar

    def _t(self, s, y):
        return (self.sde.T - s).to(y.dtype).expand(y.shape[0])

    def f(self, s, y):
        x = y.reshape(-1, *self.data_shape)
        t = self._t(s, y)
        drift, _ = self.sde.reverse(self.score_fn).sde(x, t)
        if self.progress_bar is not None:
            self.progress_bar.n = round(float(s), 4)
            self.progress_bar.refresh()
        return -drift.reshape(y.shape)

    def g(self, s, y):
        t = self._t(s, y)
        return self.sde.diffusion(t).to(y.dtype)[:, None].expand_as(y)


def torchsde_sampler(sde, score_fn, x: Tensor, *, eps, denoise, N, generator, progress,
                     solver: str = "euler", adaptive: bool = False, rtol: float = 1e-5,
                     atol: float = 1e-4, dt=None):
    """Solve the reverse SDE from T to eps with `torchsde.sdeint` and a `BrownianInterval`.

    Args:
      solver: a torchsde method name (SOLVERS).
      dt: step size; default (T - eps) / N.
      adaptive, rtol, atol: torchsde's adaptive stepping (for the solvers that support it).
      generator: seeds the BrownianInterval (its `entropy`), so the Brownian path, and the
        samples, are reproducible.
      denoise: the final step from eps to 0 (see `predictors.reverse_sde_final_step`).
    """
    import torchsde
    from tqdm.auto import tqdm


    check_choice("solver", solver, SOLVERS)
    if dt is not None:
        check_positive("dt", dt)
    B, data_shape = x.shape[0], tuple(x.shape[1:])
    entropy = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
    # Output times one step apart and dt a hair longer, so that a fixed-step solver takes exactly
    # N steps (torchsde would otherwise add a sliver of a step where N dt rounds below the span).
    # torchsde also evaluates the drift once before integrating to check shapes: nfe = N + 2.
    n_out = N if dt is None and not adaptive else 1
    dt = (sde.T - eps) / N if dt is None else dt
    ts = torch.linspace(0.0, sde.T - eps, n_out + 1, dtype=x.dtype, device=x.device)
    span = float(ts[-1])  # in x's precision, so that the Brownian interval covers ts exactly
    levy = "space-time" if solver == "srk" else "none"  # SRK needs space-time Levy area
    bm = torchsde.BrownianInterval(t0=0.0, t1=span, size=(B, x[0].numel()), dtype=x.dtype,
                                   device=x.device, entropy=entropy, levy_area_approximation=levy)
    bar = tqdm(total=round(span, 4), desc="torchsde", disable=not progress, leave=False)
    rev = _ReverseTimeSDE(sde, score_fn, data_shape, SOLVERS[solver], bar if progress else None)
    ys = torchsde.sdeint(rev, x.reshape(B, -1), ts, method=solver, dt=dt * (1 + 1e-4), bm=bm,
                         adaptive=adaptive, rtol=rtol, atol=atol)
    bar.close()
    x = ys[-1].reshape(B, *data_shape)
    t = torch.full((B,), eps, dtype=x.dtype, device=x.device)
    return reverse_sde_final_step(sde, score_fn, x, t, torch.zeros_like(t), denoise, generator)
