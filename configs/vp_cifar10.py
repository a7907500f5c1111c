"""DDPM++ cont. (VP): Song et al. (2021), Table 3; official `configs/vp/cifar10_ddpmpp_continuous.py`.

The network predicts epsilon (score = -output / std(t)), time labels 999 t.
"""
from configs import default_config


def ddpmpp_model(model):
    """The DDPM++ network fields of the official configs (NCSN++ code, DDPM-style choices)."""
    model.name = "ncsnpp"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 4
    model.attn_resolutions = (16,)
    model.dropout = 0.1
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = False
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "none"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.init_scale = 0.0
    model.embedding_type = "positional"
    model.fourier_scale = 16.0
    model.conv_size = 3
    model.nonlinearity = "swish"
    model.normalization = "GroupNorm"
    model.scale_by_sigma = False
    model.num_classes = 0
    model.image_size = 32
    model.num_channels = 3
    return model


def get_config():
    config = default_config()
    config.sde.name = "vpsde"
    ddpmpp_model(config.model)
    config.model.prediction = "eps"
    config.model.ema_rate = 0.9999
    config.training.reduce_mean = True
    config.data.dataset = "cifar10"
    config.data.centered = True
    config.sampling.method = "pc"
    config.sampling.pc.predictor = "euler_maruyama"
    config.sampling.pc.corrector = "none"
    return config
