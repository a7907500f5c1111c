"""Configurations: each `configs/<name>.py` has `get_config() -> ml_collections.ConfigDict`.

The groups mirror the objects they build (docs/app.md lists every field):
  config.sde       the forward SDE                 (sde_lib.build_sde)
  config.model     the network and its output      (models.build_model, sde_lib.NetworkScore)
  config.training  the loop, loss, checkpoints     (sde_app.training)
  config.optim     Adam, warm-up, clipping         (sde_app.training)
  config.sampling  the sampler (`method`, its options in `sampling.<method>`), class labels and
                   guidance (sde_app.sampling_run)
  config.classifier  the noise-conditional classifier for classifier guidance: its network
                   (`model`, models.build_classifier), loop (`training`) and Adam (`optim`)
  config.controllable  inpainting and colorization (sde_lib.controllable, sde_app.controllable_run)
  config.eval      test loss, likelihood, FID/IS/KID (sde_app.evaluation, sde_app.features)
  config.data      data sets and loaders           (sde_app.data)
  config.seed, config.threads

`default_config()` holds every field with the CIFAR-10 values of Song et al. (2021, App. H) and
the official score_sde_pytorch `configs/default_cifar10_configs.py`; the files override it.
"""
import ml_collections
from ml_collections import FieldReference
from ml_collections.config_dict import placeholder

from sde_lib.controllable import METHODS as INPAINTING_METHODS
from sde_lib.sampling import METHODS as SAMPLING_METHODS


def declared_group(declaration) -> ml_collections.ConfigDict:
    """A config group with one typed field per option of a method's declaration (a dataclass of
    sde_lib.sampling.METHODS or sde_lib.controllable.METHODS), at its default; None defaults
    become typed placeholders, so that `--config.sampling.pc.schedule=logsnr` parses."""
    group = ml_collections.ConfigDict()
    types = declaration.option_types()
    for name, default in declaration.option_defaults().items():
        group[name] = placeholder(types[name]) if default is None else default
    return group


def optim_group(*, lr: float = 2e-4, warmup: int = 5000, schedule: str = "constant",
                weight_decay: float = 0.0, grad_clip: float = 1.0) -> ml_collections.ConfigDict:
    """Adam with a linear warm-up, clipping and a schedule (sde_app.training.build_optimizer)."""
    optim = ml_collections.ConfigDict()
    optim.lr = lr
    optim.beta1 = 0.9
    optim.beta2 = 0.999
    optim.eps = 1e-8
    optim.weight_decay = weight_decay
    optim.warmup = warmup           # linear warm-up steps
    optim.grad_clip = grad_clip     # max global gradient norm; <= 0 disables
    optim.schedule = schedule       # after warm-up: constant | cosine (to 0 at n_iters)
    optim.implementation = "fused"  # Adam kernels: fused (one pass per tensor) | foreach | for_loop
    return optim


def add_loop_fields(group: ml_collections.ConfigDict, *, batch_size: int, n_iters: int, log_freq: int = 100,
                    eval_freq: int = 0, checkpoint_freq: int = 500, snapshot_freq: int = 0) -> None:
    """The training-loop fields of a mode that reuses the loop (sde_app.factory's `_loop`):
    global batch size, optimizer steps, and the log / test-loss / checkpoint / snapshot intervals."""
    group.batch_size = batch_size
    group.n_iters = n_iters
    group.log_freq = log_freq
    group.eval_freq = eval_freq
    group.checkpoint_freq = checkpoint_freq
    group.snapshot_freq = snapshot_freq


def default_config() -> ml_collections.ConfigDict:
    """Every field of every group, with the paper's CIFAR-10 defaults."""
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.threads = 0              # torch CPU threads; 0 = torch's default (all cores)

    config.sde = sde = ml_collections.ConfigDict()
    sde.name = "vpsde"              # sde_lib.SDES: vpsde, subvpsde, vesde, cosine_vpsde, linear, edm_vesde
    sde.beta_min = 0.1              # VP, sub-VP
    sde.beta_max = 20.0
    sde.sigma_min = 0.01            # VE
    sde.sigma_max = 50.0
    sde.N = 1000                    # levels of the discrete chain (official num_scales)

    config.model = model = ml_collections.ConfigDict()
    model.name = "ncsnpp"           # models.MODELS: mlp, ddpm, ncsnpp
    model.prediction = "eps"        # NetworkScore: eps, score, scaled_score, x0, v, edm, flow
    model.time_labels = "continuous"  # or "discrete" (DDPM timestep / NCSN sigma index)
    model.ema_rate = 0.9999
    model.sigma_data = 0.5          # data std of EDM's preconditioning (prediction=edm) and loss
    model.learned_variance = False  # 2 C outputs: eps and improved DDPM's variance v (loss="hybrid")

    config.training = training = ml_collections.ConfigDict()
    training.batch_size = 128       # global: split over the ranks
    training.n_iters = 1_300_000    # optimizer steps
    training.loss = "dsm"           # dsm (continuous, eq. 7) | ddpm (L_simple) | smld | hybrid
    training.hybrid_lambda = 0.001  # loss="hybrid": L_simple + lambda L_vlb (Nichol & Dhariwal 2021)
    training.reduce_mean = True
    training.likelihood_weighting = False
    training.importance_sampling = False
    training.eps = 1e-5             # smallest training time
    # loss="dsm": weighting (sde_lib.losses.WEIGHTINGS: eps, likelihood, x0, v, edm, min_snr, flow)
    # and noise-level proposal (uniform, importance, lognormal: EDM's ln sigma ~ N(P_mean, P_std^2)).
    training.weighting = "eps"
    training.proposal = "uniform"
    training.P_mean = -1.2
    training.P_std = 1.2
    training.min_snr_gamma = 5.0
    training.log_freq = 50
    training.eval_freq = 100        # test loss on one test batch
    training.checkpoint_freq = 10_000   # resume checkpoint (official snapshot_freq_for_preemption)
    training.snapshot_freq = 50_000     # numbered snapshots + snapshot sampling
    training.snapshot_sampling = True
    training.mixed_precision = "none"   # none | bf16 (autocast)
    training.compile = False        # torch.compile the network
    training.deterministic = False  # deterministic kernels (bitwise-reproducible resumes on GPU)
    training.channels_last = False  # channels-last (NHWC) weights and images for image networks
    # Activation checkpointing: the U-Net levels at these resolutions (e.g. (32, 16)) keep no
    # activations in the forward pass and recompute them in the backward pass (less memory).
    training.checkpoint_resolutions = ()
    # Class conditioning: the network gets model.num_classes = the data's classes, and each
    # training label is replaced by the null label with probability p_uncond (label dropout), so
    # one network learns the conditional and the unconditional score (classifier-free guidance).
    training.conditional = False
    training.p_uncond = 0.1

    config.optim = optim_group(lr=2e-4, warmup=5000)

    # The sampler: `method` and its options in `sampling.<method>`, one group per method of
    # sde_lib.sampling.METHODS generated from its declaration (its dataclass fields and defaults).
    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"          # sde_lib.sampling.METHODS
    sampling.eps = 1e-3             # end time of the reverse process
    sampling.denoise = True         # the final step: True (the method's default), "pf", "mean", False
    sampling.N = placeholder(int)   # steps; None = sde.N
    for name, declaration in SAMPLING_METHODS.items():
        sampling[name] = declared_group(declaration)
    sampling.pc.predictor = "euler_maruyama"
    sampling.pc.corrector = "none"
    sampling.num_samples = 64
    sampling.batch_size = 64        # per rank; 0: the largest that fits in free memory
    sampling.compile = False        # torch.compile the score network (once per batch shape)
    # A student of --mode distill samples (sample, eval) with the DDIM steps it learnt (its step
    # count, grid and eps, read from its checkpoint); False: with this group's method as set.
    sampling.student_sampler = True
    sampling.seed = placeholder(int)  # None = config.seed
    # Class labels: None (unconditional), an int, a list (cycled over the samples) or -1 (all
    # classes cycled: sample i gets class i % num_classes).
    sampling.class_label = FieldReference(None, field_type=object)
    sampling.guidance = "none"      # none | classifier_free (w) | classifier (scale s)
    # w or s, or a list of them: one run per value and a guidance grid (samples/guidance_grid.png).
    sampling.guidance_scale = FieldReference(1.0, field_type=object)

    # The noise-conditional classifier p_t(y | x_t) of classifier guidance (--mode train_classifier),
    # trained with cross-entropy on data perturbed by the SDE's kernel at t ~ U[eps, T].
    config.classifier = classifier = ml_collections.ConfigDict()
    classifier.model = clf_model = ml_collections.ConfigDict()
    clf_model.name = "conv"         # models.CLASSIFIERS: mlp, conv
    clf_model.nf = 64
    clf_model.ch_mult = (1, 2, 2)
    clf_model.num_res_blocks = 1
    clf_model.embedding_type = "positional"  # of the time labels 999 t (VP); fourier for VE sigmas
    clf_model.dropout = 0.0
    classifier.training = clf_training = ml_collections.ConfigDict()
    clf_training.batch_size = 128   # global
    clf_training.n_iters = 20_000
    clf_training.eps = 1e-5         # smallest training time
    clf_training.log_freq = 100
    clf_training.eval_freq = 500    # test cross-entropy on one test batch
    clf_training.checkpoint_freq = 2000
    clf_training.snapshot_freq = 0  # numbered snapshots; 0: only the last step
    clf_training.ema_rate = 0.999   # guidance uses the EMA weights
    classifier.optim = optim_group(lr=3e-4, warmup=500, schedule="cosine")

    # Inpainting and colorization (--mode inpaint / colorize): `method` with its options in
    # `controllable.<method>` (generated from sde_lib.controllable.METHODS), run by `sampler` with
    # that sampler's options from config.sampling.<sampler> (and eps, denoise, N from
    # config.sampling); class label and guidance are this group's own (one of each).
    config.controllable = controllable = ml_collections.ConfigDict()
    controllable.method = "replacement"   # sde_lib.controllable.METHODS: replacement, repaint, smc
    controllable.sampler = "pc"           # pc | ddpm | ode (smc: ddpm; ode: replacement only)
    for name, declaration in INPAINTING_METHODS.items():
        controllable[name] = declared_group(declaration)
    controllable.num_samples = 8          # samples per input
    controllable.known_dim = 0            # 2-D toys: the known coordinate ...
    controllable.known_value = 1.5        # ... and its value
    controllable.class_label = placeholder(int)  # None: unconditional; an int: that class ...
    controllable.guidance = "none"        # ... with its own guidance (as config.sampling)
    controllable.guidance_scale = 1.0

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.batch_size = 1024      # per rank, for the test loss and the likelihood
    evaluate.loss_batches = 10      # test batches for the test loss; 0 = the whole test split
    evaluate.num_points = 10_000    # test points for the likelihood; 0 = all, -1 = skip
    evaluate.divergence = "rademacher"  # rademacher | gaussian | exact
    evaluate.n_probes = 1
    evaluate.solver = "RK45"        # adaptive ODE solver for the likelihood
    evaluate.rtol = 1e-5
    evaluate.atol = 1e-5
    evaluate.eps = 1e-5
    # Snapshots to evaluate: every numbered snapshot with begin_ckpt <= step <= end_ckpt (FID
    # against training step); None: the weights --checkpoint names, or the latest.
    evaluate.begin_ckpt = placeholder(int)
    evaluate.end_ckpt = placeholder(int)
    # Sample quality (docs/evaluation.md): FID, Inception Score and KID of num_samples samples of
    # the configured sampler (config.sampling), drawn in rounds of batch_size per rank; each round
    # is written to <workdir>/eval/rounds_*/, so a killed evaluation resumes. 0: no samples.
    evaluate.num_samples = 50_000
    evaluate.features = "inception"         # sde_app.features.FEATURES: inception | digits_classifier
    evaluate.inception_weights = placeholder(str)  # None: torch-fidelity's cache file
    evaluate.download_inception = False     # let torch-fidelity download the weights when missing
    evaluate.stats = placeholder(str)       # a reference .npz (mu, sigma); None: the training split's
    evaluate.stats_dir = "~/.cache/score_sde/fid_stats"  # where those are cached
    evaluate.kid_subsets = 100              # KID: mean and std over subsets (Binkowski et al. 2018)
    evaluate.kid_subset_size = 1000
    evaluate.is_splits = 10                 # Inception Score: mean and std over splits
    evaluate.bootstrap = 0                  # resamples for standard errors of FID and KID; 0: none
    # Reference rows beside the model: "floor" (the test split against the training split),
    # "gaussian_mixture" (scikit-learn's GaussianMixture, components chosen on a validation split).
    evaluate.references = FieldReference((), field_type=object)
    evaluate.gmm_components = (1, 2, 3, 5, 8, 12)

    # Progressive distillation (--mode distill; Salimans & Ho 2022): from the trained model (the
    # teacher), round k trains a student of student_steps / 2^(k-1) deterministic DDIM steps that
    # does in one step what its teacher does in two, in <workdir>/distill/round_<k>/ (checkpoints,
    # TensorBoard, resumable). Sample a student with its checkpoint and its step count (printed).
    config.distill = distill = ml_collections.ConfigDict()
    distill.rounds = 3
    distill.student_steps = 8       # the first round's student; its teacher takes twice as many
    distill.schedule = "logsnr"     # the nested grids: logsnr | uniform
    distill.eps = 1e-3              # the last time of the grid (the student's samples end there)
    distill.weighting = "truncated_snr"  # of the x0 error: truncated_snr | snr_plus_one | output
    add_loop_fields(distill, batch_size=512, n_iters=2000)  # n_iters per round
    distill.optim = optim_group(lr=5e-4, warmup=0)

    # Consistency models (--mode consistency; Song et al. 2023): consistency distillation from the
    # trained model's probability flow (kind="distillation", the student starts from its weights)
    # or consistency training without a teacher (kind="training"), in <workdir>/consistency/<kind>/;
    # the target network is the loop's EMA (rate: mu for distillation, mu0 of mu(k) for training).
    # Sample with --checkpoint=<that run's checkpoint> --config.sampling.method=consistency.
    config.consistency = consistency = ml_collections.ConfigDict()
    consistency.kind = "distillation"   # distillation | training
    consistency.n_levels = 18           # distillation: the levels N; training: N(k) from s0 to s1
    consistency.s0 = 2
    consistency.s1 = 150
    consistency.rate = 0.95             # the target EMA: mu (distillation), mu0 (training, 0.9 in the paper)
    consistency.sigma_data = 0.5        # c_skip / c_out
    consistency.eps = 1e-3              # sigma_min = sigma(eps), where f is the identity
    add_loop_fields(consistency, batch_size=512, n_iters=2000)
    consistency.optim = optim_group(lr=5e-4, warmup=0)

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "cifar10"
    data.root = placeholder(str)
    data.download = False
    data.image_size = 32
    data.num_channels = 3
    data.centered = True
    data.random_flip = True
    data.uniform_dequantization = False
    data.num_train = 50_000         # toy sets
    data.num_test = 10_000
    data.num_workers = 0
    return config
