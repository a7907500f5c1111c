"""One adapter from a network's output to the score, the canonical quantity of every sampler.

Parameterisations (`prediction`):
  * "score":        the network outputs grad_x log p_t(x) directly (NCSN++ with its own
                    scale-by-sigma, official VE configs).
  * "eps":          the network predicts the noise eps of x_t = alpha x_0 + std eps; the score is
                    -eps / std (Ho et al. 2020; official VP and sub-VP configs).
  * "scaled_score": the network outputs std * score and the adapter divides by std (VE
                    "scale by sigma" done outside the network; equal to -eps).
  * "x0":           the network predicts x_0; score = (alpha x0 - x) / std^2 (Tweedie).

Time labels (`time_labels`) are the SDE's own (`SDE.network_time_label`), matching the official
code so that its checkpoints see what they were trained with:
  * "continuous": VP and sub-VP 999 t, VE sigma(t).
  * "discrete":   VP the DDPM timestep i(t) (std from DDPM's alpha_bar_i), VE the NCSN
                  sigma index round((T - t)(N - 1) / T) (std = sigma_i).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .utils import batch_broadcast, check_choice

Tensor = torch.Tensor

PREDICTIONS = ("score", "eps", "scaled_score", "x0")
TIME_LABELS = ("continuous", "discrete")


class CountingScore:
    """Wraps score_fn(x, t) and counts its calls in `.nfe` (the honest cost of a sampler)."""

    def __init__(self, score_fn: Callable[[Tensor, Tensor], Tensor]):
        self.score_fn = score_fn
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        return self.score_fn(x, t)


class NetworkScore:
    """score_fn(x, t, y=None) from a network net(x, labels[, y]).

    Args:
      net: callable net(x, labels) -> tensor shaped like x; `labels` (B,) in x's dtype. When a
        class label `y` is given it is passed as net(x, labels, y).
      sde: the SDE the network was trained for (gives std(t), alpha(t) and time labels).
      prediction: one of PREDICTIONS (see module docstring).
      time_labels: "continuous" or "discrete".
    """

    def __init__(self, net: Callable, sde, prediction: str = "eps", time_labels: str = "continuous"):
        check_choice("prediction", prediction, PREDICTIONS)
        check_choice("time_labels", time_labels, TIME_LABELS)
        self.net = net
        self.sde = sde
        self.prediction = prediction
        self.discrete = time_labels == "discrete"

    def coeffs(self, t: Tensor):
        """(alpha, std) the network's output is scaled with: discrete levels or continuous time."""
        if self.discrete:
            return self.sde.discrete_marginal_coeffs(self.sde.discrete_index(t))
        return self.sde.marginal_coeffs(t)

    def __call__(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        labels = self.sde.network_time_label(t, discrete=self.discrete).to(x.dtype)
        out = self.net(x, labels) if y is None else self.net(x, labels, y)
        if self.prediction == "score":
            return out
        alpha, std = self.coeffs(t)
        std = batch_broadcast(std, x)
        if self.prediction == "eps":
            return -out / std
        if self.prediction == "scaled_score":
            return out / std
        return (batch_broadcast(alpha, x) * out - x) / std.square()

