"""Class-conditional `vp_digits` for classifier-free guidance (Ho & Salimans 2022).

The network adds a class embedding (10 digits and the null label) to its time embedding and
each training label is replaced by the null label with probability p_uncond = 0.2, so one
network learns the 10 conditional scores and the unconditional one. `--mode sample` draws every
digit in turn (class_label = -1) at guidance weights w = 0, 1, 2, 4 and writes
samples/guidance_grid.png (one row per w). `--mode eval` draws with the first weight (w = 0: the
unconditional score of the same network), so its figures compare with `vp_digits`.
"""
from configs import vp_digits


def get_config():
    config = vp_digits.get_config()
    config.model.num_classes = 10
    config.training.conditional = True
    config.training.p_uncond = 0.2
    sampling = config.sampling
    sampling.class_label = -1
    sampling.guidance = "classifier_free"
    sampling.guidance_scale = (0.0, 1.0, 2.0, 4.0)
    return config
