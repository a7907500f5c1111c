"""The built objects a run receives: what the factory (`sde_app.factory`) makes of a config.

Run modules (training, sampling, evaluation, controllable generation) take these typed records
and never read the config themselves. Each record documents the config group it comes from.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from sde_lib.controllable import Inpainter
from sde_lib.sampling import Sampler

from .data import DataSpec


# ------------------------------------------------------------------------------------ models
def lookup(tree: Dict[str, Any], dotted: str, default: Any):
    """tree["a"]["b"] for dotted "a.b" (nested dicts, e.g. a stored config), or `default` where a
    key is missing."""
    node = tree
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A network, how its output is read, and what makes a checkpoint of it the same model.

    Attributes:
      kind: "score model" or "classifier" (for messages).
      build_net: () -> a fresh network (CPU, training mode), built with its own keyword arguments.
      wrap: (net, sde) -> score_fn(x, t, y=None) (`sde_lib.NetworkScore`) of a score model, or
        log_prob_fn(x, t) (`sde_lib.guidance.NetworkClassifier`) of a classifier.
      ema_rate: the rate of the weights' exponential moving average.
      identity: {dotted config field: value} that a checkpoint must match (`differences`), with
        `identity_defaults` for fields (or fields of a group: "model.sigma_data") older
        checkpoints lack.
    """

    kind: str
    build_net: Callable[[], torch.nn.Module]
    wrap: Callable[[Any, Any], Callable]
    ema_rate: float
    identity: Dict[str, Any]
    identity_defaults: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def differences(self, stored_config_json: str) -> List[str]:
        """The identity fields in which a checkpoint's stored config differs from this model."""
        stored = json.loads(stored_config_json)
        diffs = []
        for name, mine in self.identity.items():
            theirs = lookup(stored, name, self.identity_defaults.get(name, {}))
            if isinstance(mine, dict) and isinstance(theirs, dict):
                for k in sorted(set(mine) | set(theirs)):
                    their = theirs.get(k, self.identity_defaults.get(f"{name}.{k}"))  # older: default
                    if mine.get(k) != their:
                        diffs.append(f"{name}.{k}: checkpoint {their!r}, config {mine.get(k)!r}")
            elif mine != theirs:
                diffs.append(f"{name}: checkpoint {theirs!r}, config {mine!r}")
        return diffs

    def check_checkpoint(self, stored_config_json: str) -> None:
        """Raise ValueError listing the differences if a checkpoint is of another model."""
        diffs = self.differences(stored_config_json)
        if diffs:
            raise ValueError(f"the checkpoint was trained with another {self.kind}; pass its config (the"
                             " run's config.json) or fix these fields: " + "; ".join(diffs))


# ---------------------------------------------------------------------------------- training
@dataclasses.dataclass(frozen=True)
class OptimSettings:
    """`config.optim` (or `config.classifier.optim`): Adam with a linear warm-up, clipping and a
    schedule; `n_iters` is the loop's, for the cosine schedule."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    warmup: int
    grad_clip: float
    schedule: str
    n_iters: int
    implementation: str = "fused"  # Adam kernels: "fused" | "foreach" | "for_loop"


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """`config.training` (or `config.classifier.training`): the loop's sizes and frequencies."""

    group: str               # the config group, for messages: "training" or "classifier.training"
    batch_size: int          # global, split over the ranks
    n_iters: int
    log_freq: int
    eval_freq: int
    checkpoint_freq: int
    snapshot_freq: int
    snapshot_sampling: bool
    mixed_precision: str     # "none" | "bf16"
    compile: bool
    deterministic: bool
    channels_last: bool = False            # NHWC weights and images (4-D tensors)
    checkpoint_resolutions: Tuple[int, ...] = ()  # U-Net levels with activation checkpointing


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """`config.sampling`: the sampler with its options bound, how many samples and which labels.

    Attributes:
      sampler: `sde_lib.sampling.Sampler` (method, its options, eps, denoise, N), checked.
      labels: the classes to sample (None: unconditional), cycled over the samples.
      guidance: "none" | "classifier_free" | "classifier"; scales: one run per value.
      null_label: the label meaning "no label" (the data's number of classes).
    """

    sampler: Sampler
    num_samples: int
    batch_size: int
    seed: int
    labels: Optional[List[int]] = None
    guidance: str = "none"
    scales: Tuple[float, ...] = (1.0,)
    null_label: int = 0
    compile: bool = False  # torch.compile the score network (`loading`)
    student_sampler: bool = True  # a distilled student samples with its own DDIM steps (`modes`)

    def class_labels(self, n: int) -> Optional[torch.Tensor]:
        """Labels (n,) long: sample i gets the (i mod L)-th of `labels`; None without labels."""
        if self.labels is None:
            return None
        return torch.tensor(self.labels, dtype=torch.long)[torch.arange(n) % len(self.labels)]


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    """One training loop: the score model (`--mode train`) or the classifier (`train_classifier`).

    Attributes:
      mode: "train" or "train_classifier"; subdir: its run directory under the workdir.
      objective: "score" (denoising score matching, `loss`) or "classifier" (cross-entropy).
      loss: per-example losses; loss(fn, x0, generator=...) for the score model,
        loss(log_prob_fn, x0, y, generator=...) for the classifier.
      conditional, p_uncond, null_label: class conditioning with label dropout.
      snapshot: the sampler of the snapshot samples (None: none drawn).
    """

    mode: str
    subdir: str
    objective: str
    model: ModelSpec
    loop: LoopSettings
    optim: OptimSettings
    loss: Callable
    conditional: bool = False
    p_uncond: float = 0.0
    null_label: Optional[int] = None
    snapshot: Optional[SamplingSettings] = None


@dataclasses.dataclass(frozen=True)
class DistillSettings:
    """`config.distill`: progressive distillation (`--mode distill`, `sde_app.distill_run`).

    Attributes:
      rounds: number of halvings; round k's student takes student_steps / 2^(k-1) steps.
      student_steps: the first round's student (its teacher, the trained model, takes twice as many).
      schedule, eps: the nested time grids from T to eps (`sde_lib.distillation`).
      weighting: the loss weight of the student's x0 error (`sde_lib.distillation.loss_weight`).
      loop, optim: each round's training loop and optimizer.
    """

    rounds: int
    student_steps: int
    schedule: str
    eps: float
    weighting: str
    loop: LoopSettings
    optim: OptimSettings

    def steps_of_round(self, k: int) -> int:
        """The student's step count in round k (1-based)."""
        return self.student_steps // 2 ** (k - 1)


@dataclasses.dataclass(frozen=True)
class ConsistencySettings:
    """`config.consistency`: consistency distillation or training (`--mode consistency`,
    `sde_app.consistency_run`); see `sde_lib.consistency`.

    Attributes:
      kind: "distillation" (from the trained model) or "training" (no teacher).
      n_levels: distillation's number of levels N; training's N(k) runs from s0 to s1.
      rate: the target EMA's decay (mu; for training mu0 of mu(k)).
      sigma_data, eps: the boundary parameterisation's sigma_data and smallest time.
    """

    kind: str
    n_levels: int
    s0: int
    s1: int
    rate: float
    sigma_data: float
    eps: float
    loop: LoopSettings
    optim: OptimSettings


# ---------------------------------------------------------------------------- the other modes
@dataclasses.dataclass(frozen=True)
class SampleQualitySettings:
    """`config.eval` (sample quality): FID, IS and KID of `num_samples` samples drawn with the
    configured sampler (`config.sampling`) in rounds of `round_size` per rank, in the feature
    space of `features` (`sde_app.features.FEATURES`), against the training split's statistics
    (cached in `stats_dir`) or a user's `stats` file.

    Attributes:
      num_samples: samples to draw (0: no sample-quality metrics).
      round_size: samples per rank and round (`eval.batch_size`); each round is written to disk.
      features: the feature network; inception_weights, download_inception: its weights.
      stats: a user's .npz (mu, sigma), or None: computed from the training split and cached.
      kid_subsets, kid_subset_size, is_splits: the metrics' own settings.
      bootstrap: resamples for the standard errors of FID and KID (0: none).
      references: "floor" (the test split against the training split) and/or "gaussian_mixture"
        (scikit-learn's GaussianMixture with `gmm_components` tried on a validation split).
      seed: the samples' seed (`config.sampling.seed`, else `config.seed`).
    """

    num_samples: int
    round_size: int
    features: str
    inception_weights: Optional[str]
    download_inception: bool
    stats: Optional[str]
    stats_dir: str
    kid_subsets: int
    kid_subset_size: int
    is_splits: int
    bootstrap: int
    references: Tuple[str, ...]
    gmm_components: Tuple[int, ...]
    seed: int


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """`config.eval`: the test loss, the likelihood (`sde_lib.likelihood.log_likelihood`), sample
    quality (`quality`, None when `eval.num_samples = 0`), and which snapshots to evaluate
    (`begin_ckpt` .. `end_ckpt` training steps; None: the chosen weights only)."""

    batch_size: int
    loss_batches: int        # 0: the whole test split
    num_points: int          # likelihood points; 0: all, -1: skip
    likelihood: Dict[str, Any]
    quality: Optional[SampleQualitySettings] = None
    begin_ckpt: Optional[int] = None
    end_ckpt: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class ControllableSettings:
    """`config.controllable` (and the sampler's options from `config.sampling`): inpainting and
    colorization."""

    inpainter: Inpainter
    num_samples: int
    batch_size: int
    seed: int
    known_dim: int = 0
    known_value: float = 0.0
    class_label: Optional[int] = None
    guidance: str = "none"
    scale: float = 1.0
    null_label: int = 0


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything the modes of one `main.py` run need, built and checked by the factory.

    Attributes:
      config_json: the configuration as JSON (stored in checkpoints and `<workdir>/config.json`).
      seed, threads: `config.seed`, `config.threads`.
      sde: the forward SDE; data: the data set.
      score_model: the score network and its adapter; train: its training loop.
      classifier: the noise-conditional classifier's loop (None for unlabelled data).
      sampling, controllable, evaluation: the settings of those modes.
    """

    config_json: str
    seed: int
    threads: int
    sde: Any
    data: DataSpec
    score_model: ModelSpec
    train: TrainingJob
    classifier: Optional[TrainingJob]
    sampling: SamplingSettings
    controllable: ControllableSettings
    evaluation: EvalSettings
    distill: Optional[DistillSettings] = None
    consistency: Optional[ConsistencySettings] = None
