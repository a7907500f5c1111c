"""Guided scores for class-conditional sampling: classifier-free and classifier guidance.

Both functions turn a model into a plain `score_fn(x, t)`, so every sampler in
`sde_lib.sampling` (PC, ODE, DDIM, DDPM, torchsde, annealed Langevin) samples with guidance
unchanged, and its `nfe` counts guided evaluations:

  * `classifier_free` (Ho & Salimans 2022): s_w = s(x, t, null) + w (s(x, t, y) - s(x, t, null)).
    One guided evaluation is one call of the conditional model on a batch of 2B examples.
  * `classifier` (Dhariwal & Nichol 2021; Song et al. 2021, eq. 14 and App. I):
    s = s(x, t) + scale grad_x log p_t(y | x). One guided evaluation is one score call plus one
    forward and backward pass of the classifier.

Training helpers: `drop_labels` (label dropout to the null label, Ho & Salimans 2022, Alg. 1)
for the one network that learns the conditional and unconditional scores, and
`NetworkClassifier`, the adapter from a noise-conditional classifier network to `log_prob_fn`.

For w = 1 (scale = 1) and exact ingredients both are the exact class-conditional score
grad_x log p_t(x | y), so the sampler reaches p_0(x | y). For w > 1 the guided score is
grad log p_t(x | y) + (w - 1) grad log p_t(y | x): the score of no diffused distribution in
general; samples become purer and, on the test mixtures, less spread (docs/guidance.md).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch

from .utils import check_choice

Tensor = torch.Tensor
Labels = Union[int, Tensor]


def _check_weight(name: str, value) -> float:
    """Guidance weights are finite numbers >= 0."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r}: expected a finite number >= 0")
    return float(value)


def _check_labels(y: Labels) -> Labels:
    if isinstance(y, bool) or not (isinstance(y, int) or torch.is_tensor(y)):
        raise TypeError(f"y must be an int or an integer tensor of shape (B,), got {type(y).__name__}")
    if torch.is_tensor(y) and (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.ndim > 1):
        raise ValueError(f"y has dtype {y.dtype} and shape {tuple(y.shape)}: expected integer labels of shape (B,)")
    return y


def batch_labels(y: Labels, x: Tensor) -> Tensor:
    """Labels (B,) long on x's device: an int is broadcast to the batch, a tensor must have B entries."""
    B = x.shape[0]
    if isinstance(y, int):
        return torch.full((B,), y, dtype=torch.long, device=x.device)
    y = y.to(device=x.device, dtype=torch.long)
    if y.ndim == 0:
        return y.expand(B)
    if y.shape[0] != B:
        raise ValueError(f"y has {y.shape[0]} labels but the batch has {B} examples")
    return y


def classifier_free(score_fn_y: Callable[[Tensor, Tensor, Tensor], Tensor], y: Labels, w: float,
                    null_label: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6 in score form).

    s_w(x, t) = s(x, t, null) + w (s(x, t, y) - s(x, t, null)), from ONE call of `score_fn_y` on
    the batch concatenated with itself, labels [y, null]. For w = 0 (unconditional) and w = 1
    (conditional) the unused half is skipped: one call on the batch itself.

    Args:
      score_fn_y: score_fn_y(x, t, labels) with per-example integer labels (B,); `null_label`
        means "no label" (the unconditional score of a model trained with label dropout).
      y: the class to sample, an int for the whole batch or a LongTensor (B,).
      w: guidance weight >= 0; 0 unconditional, 1 conditional, > 1 sharper.
      null_label: the label that makes `score_fn_y` unconditional.

    Returns:
      A plain score_fn(x, t) for any sampler.

    Raises:
      ValueError: w negative or not finite; labels of the wrong shape (at call time for B).
      TypeError: y or null_label not an integer.
    """
    w = _check_weight("w", w)
    y = _check_labels(y)
    if isinstance(null_label, bool) or not isinstance(null_label, int):
        raise TypeError(f"null_label must be an int, got {type(null_label).__name__}")

    def guided_score(x: Tensor, t: Tensor) -> Tensor:
        labels = batch_labels(y, x)
        null = torch.full_like(labels, null_label)
        if w == 0.0:
            return score_fn_y(x, t, null)
        if w == 1.0:
            return score_fn_y(x, t, labels)
        s_cond, s_uncond = score_fn_y(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        return s_uncond + w * (s_cond - s_uncond)

    return guided_score


def classifier(score_fn: Callable[[Tensor, Tensor], Tensor], log_prob_fn: Callable[[Tensor, Tensor], Tensor],
               y: Labels, scale: float) -> Callable[[Tensor, Tensor], Tensor]:
    """Classifier guidance: s(x, t) + scale grad_x log p_t(y | x) (Song et al. 2021, eq. 14;
    Dhariwal & Nichol 2021, Alg. 1 with s = scale).

    The gradient is taken with autograd under `torch.enable_grad()` (samplers run under
    `no_grad`) and detached. The classifier must treat examples independently (no batch
    statistics), since the gradient of the batch sum is taken.

    Args:
      score_fn: the unconditional score_fn(x, t).
      log_prob_fn: log_prob_fn(x, t) -> (B, K) normalised class log-probabilities of a
        noise-conditional classifier p_t(y | x_t), i.e. log_softmax of its logits (raw logits
        would miss the gradient of the log-normaliser).
      y: the class, an int for the whole batch or a LongTensor (B,).
      scale: guidance scale >= 0; 1 gives the exact conditional score for an exact classifier.

    Returns:
      A plain score_fn(x, t) for any sampler.

    Raises:
      ValueError: scale negative or not finite; log_prob_fn output not (B, K); bad labels.
      TypeError: y not an integer.
    """
    scale = _check_weight("scale", scale)
    y = _check_labels(y)

    def guided_score(x: Tensor, t: Tensor) -> Tensor:
        score = score_fn(x, t)
        if scale == 0.0:
            return score
        labels = batch_labels(y, x)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_p = log_prob_fn(x_in, t)
            if log_p.ndim != 2 or log_p.shape[0] != x.shape[0]:
                raise ValueError(f"log_prob_fn returned shape {tuple(log_p.shape)}; expected (B={x.shape[0]}, K)")
            (grad,) = torch.autograd.grad(log_p.gather(1, labels[:, None]).sum(), x_in)
        return score + scale * grad.detach().to(score.dtype)

    return guided_score


def drop_labels(y: Tensor, p_uncond: float, null_label: int,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """Label dropout for classifier-free guidance (Ho & Salimans 2022, Alg. 1): each label is
    replaced by `null_label` with probability `p_uncond`, independently.

    Args:
      y: (B,) integer labels.
      p_uncond: dropout probability in [0, 1] (Ho & Salimans use 0.1 or 0.2).
      null_label: the label meaning "no label" (num_classes for the networks in `models`).
      generator: draws the B uniforms (on the CPU, in float64, like the losses' t).

    Returns:
      (B,) labels on y's device.

    Raises:
      ValueError: p_uncond outside [0, 1].
    """
    if isinstance(p_uncond, bool) or not (isinstance(p_uncond, (int, float)) and 0.0 <= p_uncond <= 1.0):
        raise ValueError(f"p_uncond={p_uncond!r}: expected a probability in [0, 1]")
    u = torch.rand(y.shape[0], generator=generator, dtype=torch.float64).to(y.device)
    return torch.where(u < p_uncond, torch.full_like(y, null_label), y)


class NetworkClassifier:
    """log_prob_fn(x, t) = log_softmax(net(x, sde.network_time_label(t))): normalised class
    log-probabilities (B, K) of a noise-conditional classifier network, for `classifier`.

    Args:
      net: callable net(x, labels) -> logits (B, K), labels (B,) in x's dtype.
      sde: the SDE whose perturbed data the classifier was trained on (gives the time labels).
      time_labels: "continuous" (999 t for VP, sigma(t) for VE) or "discrete".
    """

    def __init__(self, net: Callable[[Tensor, Tensor], Tensor], sde, time_labels: str = "continuous"):
        check_choice("time_labels", time_labels, ("continuous", "discrete"))
        self.net, self.sde = net, sde
        self.discrete = time_labels == "discrete"

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        labels = self.sde.network_time_label(t, discrete=self.discrete).to(x.dtype)
        return torch.log_softmax(self.net(x, labels), dim=-1)
