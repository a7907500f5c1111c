"""DDPM (Ho et al. 2020) on CIFAR-10: the DDPM U-Net trained with L_simple on the VP chain of
N = 1000 levels (beta_1 = 1e-4 ... beta_N = 0.02), sampled with Algorithm 2 (method "ddpm").

Official `configs/vp/ddpm/cifar10.py` (training.continuous = False): epsilon prediction with
integer timestep labels.
"""
from configs import default_config


def get_config():
    config = default_config()
    config.sde.name = "vpsde"
    config.sde.N = 1000
    model = config.model
    model.name = "ddpm"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.dropout = 0.1
    model.resamp_with_conv = True
    model.conditional = True
    model.nonlinearity = "swish"
    model.normalization = "GroupNorm"
    model.embedding_type = "positional"
    model.scale_by_sigma = False
    model.num_classes = 0
    model.image_size = 32
    model.num_channels = 3
    model.prediction = "eps"
    model.time_labels = "discrete"
    model.ema_rate = 0.9999
    config.training.loss = "ddpm"
    config.training.reduce_mean = True
    config.data.dataset = "cifar10"
    config.data.centered = True
    config.sampling.method = "ddpm"
    return config
