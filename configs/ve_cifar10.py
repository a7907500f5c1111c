"""NCSN++ cont. (VE): Song et al. (2021), Table 3; official `configs/ve/cifar10_ncsnpp_continuous.py`.

The network divides its output by sigma(t) itself (`scale_by_sigma`) and so outputs the score;
time labels are sigma(t) (Fourier embedding of log sigma). Data in [0, 1] (not centred).
"""
from configs import default_config
from configs.vp_cifar10 import ddpmpp_model


def ncsnpp_model(model):
    """The NCSN++ network fields of the official VE configs."""
    ddpmpp_model(model)
    model.fir = True
    model.progressive_input = "residual"
    model.embedding_type = "fourier"
    model.scale_by_sigma = True
    return model


def get_config():
    config = default_config()
    config.sde.name = "vesde"
    config.sde.sigma_min = 0.01
    config.sde.sigma_max = 50.0
    ncsnpp_model(config.model)
    config.model.prediction = "score"
    config.model.ema_rate = 0.999
    config.training.reduce_mean = False
    config.data.dataset = "cifar10"
    config.data.centered = False
    config.sampling.method = "pc"
    config.sampling.pc.predictor = "reverse_diffusion"
    config.sampling.pc.corrector = "langevin"
    config.sampling.pc.snr = 0.16
    config.classifier.model.embedding_type = "fourier"   # of the labels sigma(t)
    return config
