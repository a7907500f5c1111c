"""Class-conditional DDPM++ cont. (VP) on CIFAR-10 for classifier-free guidance (Ho & Salimans 2022).

`vp_cifar10` with a class embedding (10 classes and the null label, added to the time embedding)
and label dropout p_uncond = 0.1. `--mode sample` draws every class in turn (class_label = -1)
with classifier-free guidance at w = 2 (w = 1 + the w of Ho & Salimans; not tuned here). For
classifier guidance instead, `--mode train_classifier` trains `config.classifier` (the encoder
half of a small DDPM U-Net) and `--config.sampling.guidance=classifier` uses it.
"""
from configs import vp_cifar10


def get_config():
    config = vp_cifar10.get_config()
    config.model.num_classes = 10
    config.training.conditional = True
    config.training.p_uncond = 0.1
    sampling = config.sampling
    sampling.class_label = -1
    sampling.guidance = "classifier_free"
    sampling.guidance_scale = 2.0
    return config
