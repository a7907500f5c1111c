"""DDPM++ cont. (sub-VP): Song et al. (2021), Table 3; official
`configs/subvp/cifar10_ddpmpp_continuous.py` (the VP network and settings on the sub-VP SDE)."""
from configs import vp_cifar10


def get_config():
    config = vp_cifar10.get_config()
    config.sde.name = "subvpsde"
    return config
