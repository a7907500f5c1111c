"""One adapter from a network's output to the score, the canonical quantity of every sampler.

Parameterisations (`prediction`):
  * "score":        the network outputs grad_x log p_t(x) directly (NCSN++ with its own
                    scale-by-sigma, official VE configs).
  * "eps":          the network predicts the noise eps of x_t = alpha x_0 + std eps; the score is
                    -eps / std (Ho et al. 2020; official VP and sub-VP configs).
  * "scaled_score": the network outputs std * score and the adapter divides by std (VE
                    "scale by sigma" done outside the network; equal to -eps).
  * "x0":           the network predicts x_0; score = (alpha x0 - x) / std^2 (Tweedie).
  * "v":            the network predicts v = alpha eps - std x_0 (Salimans & Ho 2022, Sec. 4 and
                    App. D, written in the kernel's (alpha, std) so that it applies to every SDE);
                    eps = (std x + alpha v) / (alpha^2 + std^2).
  * "edm":          EDM's preconditioning (Karras et al. 2022, Table 1 and eq. 7) with
                    sigma = std / alpha on the scaled variable x / alpha: the denoiser is
                    D = c_skip x / alpha + c_out F(c_in x / alpha; c_noise), c_skip = sd^2 /
                    (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 /
                    sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4 (sd = sigma_data); the network
                    gets c_noise as its label, and score = (alpha D - x) / std^2.
  * "flow":         the network predicts the probability-flow velocity u = f(x, t) - g(t)^2 / 2
                    score (Song et al. 2021, eq. 13), which on the linear interpolant is the
                    flow-matching velocity E[z - x_0 | x_t] (Lipman et al. 2023; Liu et al. 2023);
                    score = 2 (f - u) / g^2.

Time labels (`time_labels`) are the SDE's own (`SDE.network_time_label`), matching the official
code so that its checkpoints see what they were trained with:
  * "continuous": VP and sub-VP 999 t, VE sigma(t).
  * "discrete":   VP the DDPM timestep i(t) (std from DDPM's alpha_bar_i), VE the NCSN
                  sigma index round((T - t)(N - 1) / T) (std = sigma_i).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .utils import batch_broadcast, check_choice, check_positive

Tensor = torch.Tensor

PREDICTIONS = ("score", "eps", "scaled_score", "x0", "v", "edm", "flow")
# Parameterisations that need continuous time: their own label (edm) or the SDE's g(t) (flow).
CONTINUOUS_ONLY = ("edm", "flow")
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
      time_labels: "continuous" or "discrete" ("edm" and "flow" need "continuous").
      sigma_data: the data's standard deviation of EDM's preconditioning (0.5 in Karras et al.
        2022 for images in [-1, 1]); used by prediction="edm" only.
    """

    def __init__(self, net: Callable, sde, prediction: str = "eps", time_labels: str = "continuous",
                 sigma_data: float = 0.5):
        check_choice("prediction", prediction, PREDICTIONS)
        check_choice("time_labels", time_labels, TIME_LABELS)
        if prediction in CONTINUOUS_ONLY and time_labels != "continuous":
            raise ValueError(f"prediction={prediction!r} needs time_labels='continuous' (it uses the"
                             f" continuous kernel), not {time_labels!r}")
        self.net = net
        self.sde = sde
        self.prediction = prediction
        self.discrete = time_labels == "discrete"
        self.sigma_data = check_positive("sigma_data", sigma_data)

    def coeffs(self, t: Tensor):
        """(alpha, std) the network's output is scaled with: discrete levels or continuous time."""
        if self.discrete:
            return self.sde.discrete_marginal_coeffs(self.sde.discrete_index(t))
        return self.sde.marginal_coeffs(t)

    def edm_coeffs(self, t: Tensor):
        """EDM's (c_skip, c_out, c_in, c_noise) at sigma = std / alpha (Karras et al. 2022,
        Table 1); (B,) float64 each."""
        alpha, std = self.coeffs(t)
        sigma, sd = std / alpha, self.sigma_data
        root = torch.sqrt(sigma.square() + sd**2)
        return sd**2 / root.square(), sigma * sd / root, 1.0 / root, 0.25 * torch.log(sigma)

    def _net(self, inp: Tensor, labels: Tensor, y: Optional[Tensor]) -> Tensor:
        labels = labels.to(inp.dtype)
        return self.net(inp, labels) if y is None else self.net(inp, labels, y)

    def __call__(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        if self.prediction == "edm":
            alpha = batch_broadcast(self.coeffs(t)[0], x)
            c_skip, c_out, c_in, c_noise = self.edm_coeffs(t)
            c_skip, c_out, c_in = (batch_broadcast(c, x) for c in (c_skip, c_out, c_in))
            x_hat = x / alpha  # the variance-exploding variable x_0 + sigma n
            denoised = c_skip * x_hat + c_out * self._net(c_in * x_hat, c_noise, y)  # eq. 7
            return self.score_from_x0(x, t, denoised)
        labels = self.sde.network_time_label(t, discrete=self.discrete)
        out = self._net(x, labels, y)
        if self.prediction == "score":
            return out
        if self.prediction == "flow":  # u = f - g^2 / 2 s  (eq. 13)
            drift, g = self.sde.sde(x, t)
            return 2.0 * (drift - out) / batch_broadcast(g.square(), x)
        alpha, std = (batch_broadcast(c, x) for c in self.coeffs(t))
        if self.prediction == "eps":
            return -out / std
        if self.prediction == "scaled_score":
            return out / std
        if self.prediction == "v":  # eps = (std x + alpha v) / (alpha^2 + std^2)
            eps = (std * x + alpha * out) / (alpha.square() + std.square())
            return -eps / std
        return self.score_from_x0(x, t, out)

    def score_from_x0(self, x: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """Tweedie's formula: score = (alpha x0 - x) / std^2."""
        alpha, std = (batch_broadcast(c, x) for c in self.coeffs(t))
        return (alpha * x0 - x) / std.square()

    def output_from_score(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """The network output this parameterisation would need to give `score` at (x, t): the
        inverse of `__call__`'s conversion (for EDM, F at the scaled input c_in x / alpha)."""
        if self.prediction == "score":
            return score
        if self.prediction == "flow":
            drift, g = self.sde.sde(x, t)
            return drift - 0.5 * batch_broadcast(g.square(), x) * score
        alpha, std = (batch_broadcast(c, x) for c in self.coeffs(t))
        eps = -std * score
        x0 = (x + std.square() * score) / alpha
        if self.prediction == "eps":
            return eps
        if self.prediction == "scaled_score":
            return std * score
        if self.prediction == "x0":
            return x0
        if self.prediction == "v":
            return alpha * eps - std * x0
        c_skip, c_out, _, _ = (batch_broadcast(c, x) for c in self.edm_coeffs(t))
        return (x0 - c_skip * x / alpha) / c_out
