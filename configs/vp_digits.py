"""VP SDE on scikit-learn's 8x8 digits (17 grey levels, 1,500 training images): a real image data
set that trains, samples and evaluates on 2 CPU cores in minutes.

A small DDPM++ (NCSN++ code, DDPM-style choices as `vp_cifar10`; nf 32, one residual block per
level, 8x8 -> 4x4 with attention at 4x4: 0.75 M parameters), trained for 1500 steps of 128 on
uniformly dequantised data with the paper's loss, Adam 2e-3 with a cosine decay, EMA 0.999. `--mode eval` reports test bits/dim, and FID,
KID and IS of `eval.num_samples` samples in the feature space of the shipped digits classifier
(`eval.features = "digits_classifier"`), beside the floor (test split against training split) and
a scikit-learn Gaussian mixture (docs/evaluation.md).
"""
from configs import default_config
from configs.vp_cifar10 import ddpmpp_model


def get_config():
    config = default_config()
    config.seed = 0
    # One thread: on a busy 2-core machine a second one spins and loses several times over
    # (measured, as vp_toy); on an idle one it would gain less than 2x.
    config.threads = 1

    config.sde.name = "vpsde"

    model = ddpmpp_model(config.model)
    model.nf = 32
    model.ch_mult = (1, 2)
    model.num_res_blocks = 1
    model.attn_resolutions = (4,)
    model.dropout = 0.1
    model.prediction = "eps"
    model.ema_rate = 0.999

    training = config.training
    training.batch_size = 128
    training.n_iters = 1500
    training.reduce_mean = True
    training.log_freq = 100
    training.eval_freq = 500
    training.checkpoint_freq = 500
    training.snapshot_freq = 0
    training.snapshot_sampling = False

    optim = config.optim
    optim.lr = 2e-3
    optim.warmup = 100
    optim.schedule = "cosine"

    sampling = config.sampling
    # DPM-Solver++(2M) with 25 score evaluations: on exact scores of a 3x8x8 mixture within 1.6
    # nats of exact samples from 15 evaluations on (benchmarks/RESULTS.md); RK45 takes ~100 here.
    sampling.method = "dpm_solver"
    sampling.N = 25
    sampling.num_samples = 100
    sampling.batch_size = 100

    evaluate = config.eval
    evaluate.batch_size = 500
    evaluate.loss_batches = 0
    evaluate.num_points = 0               # all 297 test digits
    evaluate.num_samples = 1500           # as many samples as training images
    evaluate.features = "digits_classifier"
    evaluate.kid_subset_size = 1000
    evaluate.bootstrap = 50
    evaluate.references = ("floor", "gaussian_mixture")

    data = config.data
    data.dataset = "digits"
    data.image_size = 8
    data.num_channels = 1
    data.centered = True
    data.random_flip = False
    data.uniform_dequantization = True
    return config
