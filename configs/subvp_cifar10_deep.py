"""DDPM++ cont. (deep, sub-VP): Song et al. (2021), Table 3; official
`configs/subvp/cifar10_ddpmpp_deep_continuous.py`: 8 residual blocks per level, 950k steps."""
from configs import subvp_cifar10


def get_config():
    config = subvp_cifar10.get_config()
    config.model.num_res_blocks = 8
    config.training.n_iters = 950_000
    return config
