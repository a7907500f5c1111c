"""EDM on the 2-D Gaussian-mixture toy (Karras et al. 2022, Table 1 "ours"): sigma(t) = t up to
sigma_max = 80 (sde_lib.EDMVESDE), the preconditioned network (model.prediction = "edm",
sigma_data = 1.7, the toy mixture's per-coordinate std), the loss weighting
lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 with ln sigma ~ N(-1.2, 1.2^2).
The network's label is c_noise = ln(sigma) / 4 (negative below sigma = 1), embedded by sinusoids
("positional", as EDM's DDPM++; the "fourier" embedding takes the log of its label). Everything
else is the default toy's (configs/vp_toy.py): the probability-flow ODE for samples and the
exact likelihood; `--config.sampling.method=edm` samples with EDM's Heun sampler.
"""
from configs import vp_toy


def get_config():
    config = vp_toy.get_config()
    config.sde.name = "edm_vesde"
    config.sde.sigma_max = 80.0
    config.model.prediction = "edm"
    config.model.sigma_data = 1.7
    config.model.embedding_type = "positional"
    config.training.weighting = "edm"
    config.training.proposal = "lognormal"
    config.training.P_mean = -1.2
    config.training.P_std = 1.2
    config.sampling.edm.S_churn = 0.0
    return config
