"""The sub-VP SDE (Song et al. 2021, eq. 12) on the 2-D Gaussian-mixture toy; otherwise as
`vp_toy` (epsilon-predicting MLP, likelihood weighting, probability-flow ODE sampling)."""
from configs import vp_toy


def get_config():
    config = vp_toy.get_config()
    config.sde.name = "subvpsde"
    return config
