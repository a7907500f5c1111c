"""Improved DDPM (Nichol & Dhariwal 2021) on CIFAR-10: the cosine schedule, learned variances and
the hybrid objective, as their CIFAR-10 model (Sec. 3-4, App. A):

* process: the cosine VP chain of N = 4000 levels (sde_lib.CosineVPSDE: alpha_bar from
  cos^2(((t + s) / (1 + s)) pi / 2), s = 0.008, betas clipped at 0.999);
* network: the DDPM U-Net (128 channels, 3 residual blocks per resolution, attention at 16x16 and
  8x8, dropout 0.3) with 2 C outputs, eps and v (model.learned_variance), integer timestep labels;
* loss: L_simple + 0.001 L_vlb with the mean's output detached in L_vlb (training.loss = "hybrid"),
  uniform timesteps; Adam lr 1e-4, batch 128, 500k steps, EMA 0.9999;
* sampler: Algorithm 2 with the learned variances, log sigma^2 = v log beta + (1 - v) log beta~
  (sampling.ddpm.variance = "learned"); --config.sampling.ddpm.respace=K samples in K steps
  along the trained chain (their Sec. 4; e.g. 100 or 250);
* evaluation: --mode eval reports the discrete VLB in bits/dim beside the ODE likelihood.
Their U-Net's multi-head attention and BigGAN-style resampling are not reproduced (DDPM's U-Net).
"""
from configs.ddpm_cifar10 import get_config as ddpm_config


def get_config():
    config = ddpm_config()
    config.sde.name = "cosine_vpsde"
    config.sde.N = 4000
    model = config.model
    model.num_res_blocks = 3
    model.attn_resolutions = (16, 8)
    model.dropout = 0.3
    model.learned_variance = True
    model.prediction = "eps"
    model.time_labels = "discrete"
    model.ema_rate = 0.9999
    training = config.training
    training.loss = "hybrid"
    training.hybrid_lambda = 0.001
    training.batch_size = 128
    training.n_iters = 500_000
    config.optim.lr = 1e-4
    config.data.dataset = "cifar10"
    config.data.centered = True
    config.data.uniform_dequantization = False
    config.sampling.method = "ddpm"
    config.sampling.ddpm.variance = "learned"
    return config
