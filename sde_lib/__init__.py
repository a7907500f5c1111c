"""score-sde: score-based generative modelling through SDEs (Song et al., ICLR 2021).

Public names:
  SDEs:        VPSDE, subVPSDE, VESDE, CosineVPSDE, SDE, ReverseSDE, build_sde, SDES
  scores:      NetworkScore, CountingScore
  oracle:      GaussianMixture (exact scores, marginals and log-densities under every SDE)
  submodules:  sampling (sample), likelihood (log_likelihood, bits_per_dim), losses, ode,
               predictors, correctors, data
"""
from . import correctors, data, likelihood, losses, ode, oracle, predictors, sampling
from .oracle import GaussianMixture
from .reverse import ReverseSDE
from .score import CountingScore, NetworkScore
from .sdes import SDE, SDES, CosineVPSDE, VESDE, VPSDE, build_sde, subVPSDE

__all__ = [
    "SDE", "SDES", "VPSDE", "subVPSDE", "VESDE", "CosineVPSDE", "ReverseSDE", "build_sde",
    "NetworkScore", "CountingScore", "GaussianMixture",
    "correctors", "data", "likelihood", "losses", "ode", "oracle", "predictors", "sampling",
]
