"""The default: the VP SDE on the 2-D Gaussian-mixture toy, a residual MLP, about a minute of
training on two CPU cores, probability-flow ODE sampling and exact likelihoods next to the truth.

Tuned for the likelihood (see docs/app.md, "Toy acceptance"): likelihood weighting with
importance-sampled t (Song et al. 2021b) trains the bound on the NLL directly; the loss is summed
over the 2 dimensions; a short warm-up, lr 2e-3 with a cosine decay and an EMA rate 0.999.
"""
from configs import default_config


def get_config():
    config = default_config()
    config.seed = 0

    config.sde.name = "vpsde"
    config.sde.beta_min = 0.1
    config.sde.beta_max = 20.0

    model = config.model
    model.name = "mlp"
    model.hidden_dim = 128
    model.num_blocks = 3
    model.embedding_type = "positional"   # of the labels 999 t
    model.dropout = 0.0
    model.prediction = "eps"
    model.time_labels = "continuous"
    model.ema_rate = 0.999

    training = config.training
    training.batch_size = 512
    training.n_iters = 4000
    training.loss = "dsm"
    training.reduce_mean = False
    training.likelihood_weighting = True
    training.importance_sampling = True
    training.eps = 1e-5
    training.log_freq = 100
    training.eval_freq = 500
    training.checkpoint_freq = 1000
    training.snapshot_freq = 0            # only the final step's snapshot
    training.snapshot_sampling = False    # --mode sample draws the picture

    optim = config.optim
    optim.lr = 2e-3
    optim.warmup = 100
    optim.grad_clip = 1.0
    optim.schedule = "cosine"

    sampling = config.sampling
    sampling.method = "ode"
    sampling.solver = "RK45"
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    sampling.eps = 1e-3
    sampling.num_samples = 2000
    sampling.batch_size = 2000

    evaluate = config.eval
    evaluate.batch_size = 1000
    evaluate.loss_batches = 0             # the whole test split
    evaluate.num_points = 1000
    evaluate.divergence = "exact"         # 2 vector-Jacobian products: cheap in 2-D
    evaluate.rtol = 1e-5
    evaluate.atol = 1e-5
    evaluate.eps = 1e-5

    data = config.data
    data.dataset = "gaussian_mixture"
    data.num_train = 50_000
    data.num_test = 2000
    return config
