"""A class-conditional VP model of the 8-component Gaussian-mixture toy (the components are the
classes), for classifier-free guidance (Ho & Salimans 2022).

`vp_toy` with class conditioning: the MLP adds a class embedding (8 classes and the null label)
to its time embedding, and each training label is replaced by the null label with probability
p_uncond = 0.2, so one network learns the 8 conditional scores and the unconditional one. Twice
vp_toy's steps (8000; with the sampling below 2 min 40 s on one idle CPU core): at 4000 the exact
class-conditional NLL of the w = 1 samples was 0.16 nats above the class entropy, at 8000 0.04
(docs/app.md).
`--mode sample` draws every class (class_label = -1, cycled: 250 samples per class) with
classifier-free guidance at w = 0, 1, 2, 4 and writes samples/guidance_grid.png; on this toy the
sample JSONs hold the exact class-conditional NLL next to each class's entropy, and the purity.
"""
from configs import vp_toy


def get_config():
    config = vp_toy.get_config()
    config.training.conditional = True
    config.training.p_uncond = 0.2
    config.training.n_iters = 8000
    sampling = config.sampling
    sampling.class_label = -1
    sampling.guidance = "classifier_free"
    sampling.guidance_scale = (0.0, 1.0, 2.0, 4.0)
    return config
