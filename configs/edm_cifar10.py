"""EDM-style training of DDPM++ on CIFAR-10 (Karras et al. 2022, Table 1 and config F of Table 2
for "VP"-architecture DDPM++, with EDM's preconditioning, loss and sampler):

* process: sigma(t) = t up to sigma_max = 80 (sde_lib.EDMVESDE); sampling ends at sigma_min =
  0.002 (sampling.eps, since t = sigma);
* network: DDPM++ (128 channels, multipliers 2-2-2, 4 blocks per resolution, attention at 16x16,
  dropout 0.13), preconditioned: model.prediction = "edm", sigma_data = 0.5, label c_noise =
  ln(sigma) / 4 through positional embeddings;
* loss: lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 with ln sigma ~
  N(-1.2, 1.2^2); Adam lr 1e-3, warm-up 10 Mimg / 512 ~ 20k steps, batch 512, 200 Mimg ~ 390k steps;
  EMA half-life 0.5 Mimg (rate 0.5^(512 / 500000) ~ 0.99929 per step);
* sampler: Algorithm 1, N = 18 (35 score evaluations).
EDM's geometric augmentation is not implemented here (random flips only).
"""
from configs import default_config
from configs.vp_cifar10 import ddpmpp_model


def get_config():
    config = default_config()
    config.sde.name = "edm_vesde"
    config.sde.sigma_max = 80.0
    model = ddpmpp_model(config.model)
    model.ch_mult = (2, 2, 2)
    model.dropout = 0.13
    model.prediction = "edm"
    model.sigma_data = 0.5
    model.ema_rate = 0.99929
    training = config.training
    training.batch_size = 512
    training.n_iters = 390_000
    training.loss = "dsm"
    training.reduce_mean = True
    training.weighting = "edm"
    training.proposal = "lognormal"
    training.P_mean = -1.2
    training.P_std = 1.2
    config.optim.lr = 1e-3
    config.optim.warmup = 20_000
    config.data.dataset = "cifar10"
    config.data.centered = True
    sampling = config.sampling
    sampling.method = "edm"
    sampling.N = 18
    sampling.eps = 0.002
    sampling.edm.S_churn = 0.0
    return config
