"""score-sde: score-based generative modelling through SDEs (Song et al., ICLR 2021).

Public names:
  SDEs:        VPSDE, subVPSDE, VESDE, CosineVPSDE, SDE, ReverseSDE, build_sde, SDES
  scores:      NetworkScore, CountingScore
  oracle:      GaussianMixture (exact scores, marginals and log-densities under every SDE)
  submodules:  sampling (sample), likelihood (log_likelihood, bits_per_dim), losses, ode,
               predictors, correctors, guidance (classifier_free, classifier), controllable
               (inpaint, colorize), data; the application (training, checkpoints, runs) is
               sde_lib.app, used by main.py
"""
from . import controllable, correctors, data, guidance, likelihood, losses, ode, oracle, predictors, sampling
from .oracle import GaussianMixture
from .reverse import ReverseSDE
from .score import CountingScore, NetworkScore
from .sdes import SDE, SDES, CosineVPSDE, VESDE, VPSDE, build_sde, subVPSDE

__all__ = [
    "SDE", "SDES", "VPSDE", "subVPSDE", "VESDE", "CosineVPSDE", "ReverseSDE", "build_sde",
    "NetworkScore", "CountingScore", "GaussianMixture",
    "controllable", "correctors", "data", "guidance", "likelihood", "losses", "ode", "oracle",
    "predictors", "sampling",
]
