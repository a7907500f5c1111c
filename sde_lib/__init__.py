"""score-sde: score-based generative modelling through SDEs (Song et al., ICLR 2021).

Public names:
  SDEs:            VPSDE, subVPSDE, VESDE, CosineVPSDE, SDE, ReverseSDE, build_sde, SDES
  scores:          NetworkScore
  oracle:          GaussianMixture (exact scores, marginals and log-densities)
  submodules:      sampling, likelihood, losses, oracle
"""
from .oracle import GaussianMixture
from .reverse import ReverseSDE
from .score import NetworkScore
from .sdes import SDE, SDES, CosineVPSDE, VESDE, VPSDE, build_sde, subVPSDE

__all__ = [
    "SDE", "SDES", "VPSDE", "subVPSDE", "VESDE", "CosineVPSDE", "ReverseSDE", "build_sde",
    "NetworkScore", "GaussianMixture",
]
