"""The reverse-time SDE (Song et al. 2021, eq. 6) and probability-flow ODE (eq. 13)."""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from .utils import batch_broadcast

Tensor = torch.Tensor


class ReverseSDE:
    """dx = [f(x, t) - c g(t)^2 score(x, t)] dt + g_rev(t) dw_bar, run from t = T down to 0.

    c = 1 and g_rev = g for the reverse SDE (eq. 6); c = 1/2 and g_rev = 0 for the
    probability-flow ODE (eq. 13). Methods take an optional precomputed `score` so that a step
    never evaluates the score twice.

    Args:
      sde: the forward SDE.
      score_fn: score_fn(x, t) -> grad_x log p_t(x), shape of x.
      probability_flow: build the ODE instead of the SDE.
    """

    def __init__(self, sde, score_fn: Callable, probability_flow: bool = False):
        self.forward_sde = sde
        self.score_fn = score_fn
        self.probability_flow = bool(probability_flow)
        self.score_weight = 0.5 if self.probability_flow else 1.0

    @property
    def T(self) -> float:
        return self.forward_sde.T

    @property
    def N(self) -> int:
        return self.forward_sde.N

    def _score(self, x, t, score):
        return self.score_fn(x, t) if score is None else score

    def sde(self, x: Tensor, t: Tensor, score: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Reverse drift (shape of x, to be multiplied by a negative dt) and diffusion (B,)."""
        drift, diffusion = self.forward_sde.sde(x, t)
        score = self._score(x, t, score)
        drift = drift - batch_broadcast(diffusion.square() * self.score_weight, x) * score
        diffusion = torch.zeros_like(diffusion) if self.probability_flow else diffusion
        return drift, diffusion

    def discretize(self, x: Tensor, t: Tensor, score: Optional[Tensor] = None,
                   t_next: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Reverse of the chain step into level i(t): x_{i-1} = x_i - rev_f + rev_G z (eq. 46).

        Given t_next, the forward step is the kernel's from t_next to t (`transition_between`)."""
        if t_next is None:
            f, G = self.forward_sde.discretize(x, t)
        else:
            ratio, var, _, _ = self.forward_sde.transition_between(t, t_next)
            f, G = batch_broadcast(ratio - 1.0, x) * x, var.sqrt().to(x.dtype)
        score = self._score(x, t, score)
        rev_f = f - batch_broadcast(G.square() * self.score_weight, x) * score
        rev_G = torch.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G
