"""The VE SDE (Song et al. 2021, eq. 9) on the 2-D Gaussian-mixture toy.

sigma_max = 10 is about the largest distance between two data points (Song & Ermon 2020,
technique 1); the MLP embeds log sigma with Fourier features and divides its output by sigma
(`scale_by_sigma`), so it outputs the score. Sampled with the probability-flow ODE like `vp_toy`.
"""
from configs import vp_toy


def get_config():
    config = vp_toy.get_config()
    config.sde.name = "vesde"
    config.sde.sigma_min = 0.01
    config.sde.sigma_max = 10.0
    config.model.embedding_type = "fourier"   # of the labels sigma(t)
    config.model.scale_by_sigma = True
    config.model.prediction = "score"
    config.classifier.model.embedding_type = "fourier"   # of the labels sigma(t)
    return config
