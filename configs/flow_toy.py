"""Flow matching / rectified flow on the 2-D Gaussian-mixture toy: the linear interpolant
x_t = (1 - t) x_0 + t z (sde_lib.LinearInterpolantSDE), a network predicting the velocity
(model.prediction = "flow": the probability-flow velocity, here E[z - x_0 | x_t]) and the
flow-matching loss ||v_theta(x_t, t) - (z - x_0)||^2 with t ~ U[eps, T] (Lipman et al. 2023;
Liu et al. 2023). Everything else (network, optimiser, ODE sampling, exact likelihood) is the
default toy's (configs/vp_toy.py).
"""
from configs import vp_toy


def get_config():
    config = vp_toy.get_config()
    config.sde.name = "linear"
    config.sde.T = 0.999                  # alpha(T) = 1e-3; the drift -x / (1 - t) is infinite at 1
    config.model.prediction = "flow"
    config.training.weighting = "flow"
    config.training.proposal = "uniform"
    return config
