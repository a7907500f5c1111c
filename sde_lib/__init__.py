"""score-sde: score-based generative modelling through SDEs (Song et al., ICLR 2021).

The mathematics only: no configuration, no files, no data sets (the application around it is
the package `sde_app`, used by main.py).

Public names:
  SDEs:        VPSDE, subVPSDE, VESDE, CosineVPSDE, LinearInterpolantSDE, EDMVESDE, SDE,
               ReverseSDE, build_sde, SDES
  scores:      NetworkScore, CountingScore
  oracle:      GaussianMixture (exact scores, marginals and log-densities under every SDE)
  submodules:  sampling (sample, build_sampler, METHODS), samplers (one module per method),
               grids (time grids), likelihood (log_likelihood, bits_per_dim), losses, ode,
               predictors, correctors, guidance (classifier_free, classifier), controllable
               (inpaint, colorize), metrics (FID, Inception Score, KID), progress,
               learned_variance (improved DDPM's variances, the discrete VLB, the hybrid loss)
"""
from . import (controllable, correctors, grids, guidance, likelihood, losses, metrics, ode, oracle,
               predictors, progress, samplers, sampling)
from . import learned_variance
from .oracle import GaussianMixture
from .reverse import ReverseSDE
from .score import CountingScore, NetworkScore
from .sdes import SDE, SDES, CosineVPSDE, EDMVESDE, LinearInterpolantSDE, VESDE, VPSDE, build_sde, subVPSDE

__all__ = [
    "SDE", "SDES", "VPSDE", "subVPSDE", "VESDE", "CosineVPSDE", "LinearInterpolantSDE", "EDMVESDE",
    "ReverseSDE", "build_sde",
    "NetworkScore", "CountingScore", "GaussianMixture",
    "controllable", "correctors", "grids", "guidance", "likelihood", "losses", "metrics", "ode", "oracle",
    "predictors", "progress", "samplers", "sampling",
    "learned_variance",
]
