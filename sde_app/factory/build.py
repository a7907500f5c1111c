"""The one reader of the configuration: config groups in, built and checked objects out.

`build_experiment(config, modes)` turns every group into what the runs receive (`sde_app.specs`):
the SDE (`config.sde`), the score network and its adapter (`config.model`), the loss and the
training loop (`config.training`, `config.optim`), the classifier (`config.classifier`), the
sampler with its options bound (`config.sampling`), inpainting (`config.controllable`), the
evaluation settings (`config.eval`) and the data (`config.data`). It checks every name and value,
and what the modes about to run need of each other (a sampler that cannot run on the SDE at its
step count, guidance on an unconditional model, ...), so that every mistake is one line before
any work starts. Networks receive their own keyword arguments only.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ml_collections
import torch

from sde_lib import controllable as controllable_lib
from sde_lib import sampling as sampling_lib
from sde_lib.distillation import DISTILL_SCHEDULES, DISTILL_WEIGHTINGS
from sde_lib.guidance import NetworkClassifier
from sde_lib.learned_variance import HybridLoss, LearnedVarianceScore
from sde_lib.likelihood import DIVERGENCES
from sde_lib.losses import PROPOSALS, WEIGHTINGS, DenoisingScoreMatching, NoisyClassifierLoss, discrete_dsm_loss
from sde_lib.ode import METHODS as ODE_METHODS
from sde_lib.ode import is_adaptive
from sde_lib.score import CONTINUOUS_ONLY, PREDICTIONS, TIME_LABELS, NetworkScore
from sde_lib.sdes import SDES

from .. import features as features_lib
from ..data import DATASETS, DataSpec
from ..specs import (ConsistencySettings, ControllableSettings, DistillSettings, EvalSettings, Experiment, LoopSettings, ModelSpec,
                     OptimSettings, SampleQualitySettings, SamplingSettings, TrainingJob, lookup)
from .config_files import config_to_json

# Fields of config.model that configure the score adapter and the EMA, not the network.
SCORE_FIELDS = ("prediction", "time_labels", "ema_rate", "sigma_data")
# What makes two checkpoints the same model (whole groups or single fields), and the value of a
# field for checkpoints written before it existed.
SCORE_MODEL_FIELDS = ("sde", "model", "training.conditional")
CLASSIFIER_MODEL_FIELDS = ("sde", "classifier.model")
FIELD_DEFAULTS = {"training.conditional": False, "model.sigma_data": 0.5}

# Training objectives. "ddpm" and "smld" are the same chain loss (`discrete_dsm_loss`) under the
# names of the papers that introduced them; each is only meaningful on its family of SDEs.
LOSSES = ("dsm", "ddpm", "smld", "hybrid")
DISCRETE_LOSS_SDES = {"ddpm": ("vpsde", "subvpsde", "cosine_vpsde"), "smld": ("vesde",),
                      "hybrid": ("vpsde", "subvpsde", "cosine_vpsde")}
MIXED_PRECISION = ("none", "bf16")
ADAM_IMPLEMENTATIONS = ("fused", "foreach", "for_loop")  # torch.optim.Adam's kernels
LR_SCHEDULES = ("constant", "cosine")

# config.sampling.guidance: none (the model's own score: unconditional, or conditional when class
# labels are given), classifier_free (Ho & Salimans 2022), classifier (Song et al. 2021, eq. 14).
GUIDANCE = ("none", "classifier_free", "classifier")
ALL_CLASSES = -1  # config.sampling.class_label = -1: every class, cycled over the samples
SAMPLING_MODES = ("sample",)
CONTROLLABLE_MODES = ("inpaint", "colorize")


def _choice(field: str, value, allowed) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"config.{field}={value!r} is not one of {allowed}; set --config.{field}=...")


def _as_dict(group) -> Dict[str, Any]:
    return dict(group.to_dict()) if isinstance(group, ml_collections.ConfigDict) else dict(group)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(field: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"config.{field}={value!r}: expected an integer >= 1")
    return value


def _nonnegative_int(field: str, value) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"config.{field}={value!r}: expected an integer >= 0")
    return value


def _in_group(group: str, err: ValueError) -> ValueError:
    """A library ValueError ("snr=-1: ...") with the config group named ("config.sampling.pc: ...")."""
    return ValueError(f"config.{group}: {err}")


# ------------------------------------------------------------------------------------- the SDE
def _sde_options(name: str) -> Dict[str, Any]:
    params = inspect.signature(SDES[name].__init__).parameters
    return {p: v.default for p, v in params.items() if p != "self"}


def build_sde(config):
    """The forward SDE of `config.sde`: `name` picks it from `sde_lib.SDES`; the fields its
    constructor takes are passed (fields of other SDEs, e.g. sigma_max for a VP SDE, are ignored).

    Raises:
      ValueError: unknown name, or a field no SDE takes (a typo).
    """
    fields = _as_dict(config.sde)
    name = str(fields.pop("name", "")).lower()
    _choice("sde.name", name, SDES)
    known = set().union(*(_sde_options(n) for n in SDES))
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"config.sde has unknown field(s) {unknown}; fields of {name!r}:"
                         f" {sorted(_sde_options(name))}")
    options = _sde_options(name)
    try:
        return SDES[name](**{k: v for k, v in fields.items() if k in options})
    except ValueError as err:
        raise _in_group("sde", err) from None


# -------------------------------------------------------------------------------------- data
def build_data(config) -> DataSpec:
    """The data of `config.data` (`sde_app.data.DataSpec`).

    Raises:
      ValueError: an unknown field or data set, or a bad value.
    """
    return data_spec(config.data)


def data_spec(group) -> DataSpec:
    """A `DataSpec` from a `config.data` group (ConfigDict or mapping; missing fields take the
    spec's defaults, fields set to None too).

    Raises:
      ValueError: no `dataset`, an unknown field or data set, or a bad value.
    """
    fields = {k: v for k, v in _as_dict(group).items() if v is not None}
    if "dataset" not in fields:
        raise ValueError("config.data has no field 'dataset'; set it to one of"
                         f" {list(DATASETS)}")
    known = {f.name for f in dataclasses.fields(DataSpec)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"config.data has unknown field(s) {unknown}; its fields: {sorted(known)}")
    return DataSpec(**fields)


def is_conditional(config) -> bool:
    """True for a class-conditional score model (`config.training.conditional`)."""
    return bool(config.training.get("conditional", False))


# ---------------------------------------------------------------------------------- networks
def _network_kwargs(registry, group: Dict[str, Any], where: str, data: DataSpec,
                    extra: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """(name, the chosen network's own keyword arguments) of a config group: the data's shape
    filled in, fields of the other networks of the registry left out, other fields refused."""
    import models

    name = str(group.pop("name", "")).lower()
    if name not in registry:
        raise ValueError(f"config.{where}.name={name!r}: no such network; available: {sorted(registry)}")
    shape = ({"image_size": data.image_size, "num_channels": data.num_channels} if data.is_image
             else {"data_dim": data.dim})
    group.update(shape)
    group.update(extra)
    own = models.model_options(name, registry)
    known = set().union(*(models.model_options(other, registry) for other in registry))
    unknown = sorted(set(group) - known)
    if unknown:
        raise ValueError(f"config.{where} has unknown field(s) {unknown} (no network takes them);"
                         f" fields of {name!r}: {sorted(own)}")
    return name, {k: v for k, v in group.items() if k in own}


def _build(registry, name: str, kwargs: Dict[str, Any], where: str) -> torch.nn.Module:
    try:
        return registry[name](**kwargs)
    except ValueError as err:
        raise _in_group(where, err) from None


def score_model_spec(config, sde, data: DataSpec) -> ModelSpec:
    """The score network of `config.model` and its adapter (prediction, time labels, EMA rate).

    Raises:
      ValueError: unknown network, field or option value.
    """
    import models

    model = config.model
    _choice("model.prediction", model.prediction, PREDICTIONS)
    _choice("model.time_labels", model.time_labels, TIME_LABELS)
    if not (0.0 <= model.ema_rate < 1.0):
        raise ValueError(f"config.model.ema_rate={model.ema_rate!r}: expected a number in [0, 1)")
    if model.prediction in CONTINUOUS_ONLY and model.time_labels != "continuous":
        raise ValueError(f"config.model.prediction={model.prediction!r} needs continuous time labels, not"
                         f" time_labels={model.time_labels!r}; set --config.model.time_labels=continuous")
    if model.prediction == "edm" and model.get("embedding_type") == "fourier":
        raise ValueError("config.model.prediction='edm' labels the network with c_noise = ln(sigma) / 4, which"
                         " is negative below sigma = 1, and embedding_type='fourier' takes the log of its label;"
                         " set --config.model.embedding_type=positional")
    sigma_data = model.get("sigma_data", 0.5)
    if not (isinstance(sigma_data, (int, float)) and not isinstance(sigma_data, bool) and sigma_data > 0):
        raise ValueError(f"config.model.sigma_data={sigma_data!r}: expected a number > 0 (EDM's data std,"
                         f" 0.5 for images in [-1, 1])")
    fields = {k: v for k, v in _as_dict(model).items() if k not in SCORE_FIELDS}
    extra = {"num_classes": data.num_classes} if is_conditional(config) else {}
    if not is_conditional(config):
        fields.pop("num_classes", None)  # an unconditional network; checked by `_check_classes`
    name, kwargs = _network_kwargs(models.MODELS, fields, "model", data, extra)
    prediction, time_labels = model.prediction, model.time_labels
    learned_variance = _learned_variance(config)

    def wrap(net, sde_):
        if learned_variance:  # eps and v (Nichol & Dhariwal 2021)
            return LearnedVarianceScore(net, sde_, time_labels=time_labels)
        return NetworkScore(net, sde_, prediction=prediction, time_labels=time_labels,
                            sigma_data=float(sigma_data))

    identity = _identity(config, SCORE_MODEL_FIELDS)
    return ModelSpec("score model", functools.partial(_build, models.MODELS, name, kwargs, "model"), wrap,
                     float(model.ema_rate), identity, dict(FIELD_DEFAULTS))


def _learned_variance(config) -> bool:
    """`config.model.learned_variance`, checked: a bool, with prediction='eps' and loss='hybrid'
    (the only loss that trains v)."""
    lv = config.model.get("learned_variance", False)
    if not isinstance(lv, bool):
        raise ValueError(f"config.model.learned_variance={lv!r}: expected True or False")
    if lv and config.model.prediction != "eps":
        raise ValueError(f"config.model.learned_variance=True reads the first output as eps, not"
                         f" prediction={config.model.prediction!r}; set --config.model.prediction=eps")
    if lv != (config.training.loss == "hybrid"):
        raise ValueError(f"config.model.learned_variance={lv} with training.loss={config.training.loss!r}: the"
                         f" variance output is trained by the hybrid loss only; set both"
                         f" (--config.model.learned_variance=True --config.training.loss=hybrid) or neither")
    return lv


def classifier_spec(config, data: DataSpec) -> ModelSpec:
    """The noise-conditional classifier of `config.classifier.model` (log_softmax of its logits
    with the SDE's continuous time labels)."""
    import models

    rate = config.classifier.training.ema_rate
    if not (0.0 <= rate < 1.0):
        raise ValueError(f"config.classifier.training.ema_rate={rate!r}: expected a number in [0, 1)")
    name, kwargs = _network_kwargs(models.CLASSIFIERS, _as_dict(config.classifier.model), "classifier.model",
                                   data, {"num_classes": data.num_classes})
    identity = _identity(config, CLASSIFIER_MODEL_FIELDS)
    return ModelSpec("classifier", functools.partial(_build, models.CLASSIFIERS, name, kwargs, "classifier.model"),
                     NetworkClassifier, float(rate), identity)


def _identity(config, fields) -> Dict[str, Any]:
    """{field: its value} for fields or groups, in their JSON form (what a checkpoint stores)."""
    stored = json.loads(config_to_json(config))
    return {f: lookup(stored, f, FIELD_DEFAULTS.get(f)) for f in fields}


# ------------------------------------------------------------------------------------ losses
def build_loss(config, sde, data: Optional[DataSpec] = None):
    """loss(score_fn, x0, generator=...) -> per-example losses (B,), from `config.training`.

    "dsm": continuous denoising score matching (Song et al. 2021, eq. 7) with a `weighting`
    (sde_lib.losses.WEIGHTINGS: eps, likelihood, x0, v, edm, min_snr, flow) and a noise-level
    `proposal` (uniform, importance, lognormal with P_mean, P_std), any pair; the earlier flags
    likelihood_weighting / importance_sampling are the same as weighting="likelihood" /
    proposal="importance". "ddpm"/"smld": the loss on the SDE's N-level chain (Ho et al. 2020's
    L_simple on VP, Song & Ermon 2019's on VE); "hybrid": improved DDPM's L_simple + lambda L_vlb
    (`training.hybrid_lambda`) for a network with learned variances, L_0's decoder from the data
    (`DataSpec.vlb_decoder`).
    """
    t = config.training
    _choice("training.loss", t.loss, LOSSES)
    weighting, proposal = t.get("weighting", "eps"), t.get("proposal", "uniform")
    _choice("training.weighting", weighting, WEIGHTINGS)
    _choice("training.proposal", proposal, PROPOSALS)
    for field in ("P_mean", "P_std", "min_snr_gamma"):
        v = t.get(field, 1.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (field != "P_mean" and v <= 0):
            raise ValueError(f"config.training.{field}={v!r}: expected a number"
                             f"{'' if field == 'P_mean' else ' > 0'}; set --config.training.{field}=...")
    if t.likelihood_weighting and weighting not in ("eps", "likelihood"):
        raise ValueError(f"config.training.likelihood_weighting=True contradicts weighting={weighting!r};"
                         f" set --config.training.likelihood_weighting=False")
    if t.importance_sampling and proposal not in ("uniform", "importance"):
        raise ValueError(f"config.training.importance_sampling=True contradicts proposal={proposal!r};"
                         f" set --config.training.importance_sampling=False")
    if t.loss in DISCRETE_LOSS_SDES and config.sde.name not in DISCRETE_LOSS_SDES[t.loss]:
        raise ValueError(f"config.training.loss={t.loss!r} is the loss of the"
                         f" {DISCRETE_LOSS_SDES[t.loss]} chain, not of sde.name={config.sde.name!r};"
                         f" use loss='dsm' or {'smld' if t.loss == 'ddpm' else 'ddpm'!r}")
    if t.loss == "hybrid":
        lam = t.get("hybrid_lambda", 1e-3)
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"config.training.hybrid_lambda={lam!r}: expected a number > 0 (0.001 in Nichol &"
                             f" Dhariwal 2021)")
        data = build_data(config) if data is None else data
        if data.is_image and data.uniform_dequantization:
            raise ValueError("config.training.loss='hybrid' decodes the data's discrete levels (eq. 13 of Ho et"
                             " al. 2020); set --config.data.uniform_dequantization=False")
    if t.loss != "dsm":
        if t.likelihood_weighting or t.importance_sampling or weighting != "eps" or proposal != "uniform":
            raise ValueError(f"config.training.likelihood_weighting/importance_sampling/weighting/proposal"
                             f" apply to loss='dsm' only, not loss={t.loss!r}")
        if t.loss == "hybrid":
            return HybridLoss(sde, lam=float(lam), decoder=data.vlb_decoder())
        return functools.partial(discrete_dsm_loss, sde, reduce_mean=t.reduce_mean)
    try:
        return DenoisingScoreMatching(sde, eps=t.eps, reduce_mean=t.reduce_mean,
                                      likelihood_weighting=t.likelihood_weighting,
                                      importance_sampling=t.importance_sampling,
                                      weighting=weighting, proposal=proposal,
                                      sigma_data=float(config.model.get("sigma_data", 0.5)),
                                      P_mean=float(t.get("P_mean", -1.2)), P_std=float(t.get("P_std", 1.2)),
                                      min_snr_gamma=float(t.get("min_snr_gamma", 5.0)))
    except ValueError as err:
        raise _in_group("training", err) from None


# ------------------------------------------------------------------------------------ loops
def _optim(group, where: str, n_iters: int) -> OptimSettings:
    _choice(f"{where}.schedule", group.schedule, LR_SCHEDULES)
    _choice(f"{where}.implementation", group.get("implementation", "fused"), ADAM_IMPLEMENTATIONS)
    fields = _as_dict(group)
    known = {f.name for f in dataclasses.fields(OptimSettings)} - {"n_iters"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"config.{where} has unknown field(s) {unknown}")
    def number(name):
        v = fields[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"config.{where}.{name}={v!r}: expected a finite number")
        return v

    if not number("lr") > 0:
        raise ValueError(f"config.{where}.lr={fields['lr']!r}: expected a finite number > 0")
    for beta in ("beta1", "beta2"):
        if not 0.0 <= number(beta) < 1.0:
            raise ValueError(f"config.{where}.{beta}={fields[beta]!r}: expected a number in [0, 1)")
    if not number("eps") > 0:
        raise ValueError(f"config.{where}.eps={fields['eps']!r}: expected a number > 0")
    if number("weight_decay") < 0:
        raise ValueError(f"config.{where}.weight_decay={fields['weight_decay']!r}: expected a number >= 0")
    number("grad_clip")  # <= 0 disables clipping
    _nonnegative_int(f"{where}.warmup", fields["warmup"])
    return OptimSettings(n_iters=n_iters, **fields)


def _loop(config, group, where: str, snapshot_sampling: bool) -> LoopSettings:
    t = config.training
    _choice("training.mixed_precision", t.mixed_precision, MIXED_PRECISION)
    for field in ("compile", "deterministic", "channels_last"):
        if not isinstance(t.get(field, False), bool):
            raise ValueError(f"config.training.{field}={t.get(field)!r}: expected True or False")
    for field in ("batch_size", "n_iters", "log_freq"):
        _positive_int(f"{where}.{field}", group[field])
    for field in ("eval_freq", "checkpoint_freq", "snapshot_freq"):
        _nonnegative_int(f"{where}.{field}", group[field])
    return LoopSettings(group=where, batch_size=group.batch_size, n_iters=group.n_iters,
                        log_freq=group.log_freq, eval_freq=group.eval_freq,
                        checkpoint_freq=group.checkpoint_freq, snapshot_freq=group.snapshot_freq,
                        snapshot_sampling=snapshot_sampling, mixed_precision=t.mixed_precision,
                        compile=bool(t.compile), deterministic=bool(t.deterministic),
                        channels_last=bool(t.get("channels_last", False)))


def _checkpoint_resolutions(config, model: ModelSpec) -> Tuple[int, ...]:
    """`training.checkpoint_resolutions`: resolutions on the score network's ladder, checked on
    a network built on the meta device (`set_activation_checkpointing` names the ladder)."""
    value = config.training.get("checkpoint_resolutions", ())
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(_is_int(r) and r > 0 for r in value):
        raise ValueError(f"config.training.checkpoint_resolutions={value!r}: expected a tuple of"
                         " image resolutions, e.g. (32, 16), or () for none")
    value = tuple(sorted(set(value), reverse=True))
    if value:
        with torch.device("meta"):
            net = model.build_net()
        if not hasattr(net, "set_activation_checkpointing"):
            raise ValueError(f"config.training.checkpoint_resolutions={value}: network"
                             f" {config.model.name!r} has no resolution levels; set ()")
        try:
            net.set_activation_checkpointing(value)
        except ValueError as err:
            raise ValueError(f"config.training.checkpoint_resolutions: {err}") from None
    return value


def _check_classes(config, data: DataSpec) -> None:
    """`training.conditional` needs labelled data; `model.num_classes`, if set, must be the data's
    (a conditional model) or 0."""
    p = config.training.p_uncond
    if isinstance(p, bool) or not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
        raise ValueError(f"config.training.p_uncond={p!r}: expected a probability in [0, 1]"
                         " (label dropout; 0.1 to 0.2 as Ho & Salimans 2022)")
    K = data.num_classes if is_conditional(config) else 0
    if is_conditional(config) and K == 0:
        raise ValueError(f"config.training.conditional=True, but dataset {data.dataset!r}"
                         " has no class labels; set training.conditional=False")
    stored = config.model.get("num_classes", 0) or 0
    if stored and stored != K:
        fix = ("set training.conditional=True (the network then takes the data's classes)"
               if K == 0 else f"set it to 0 (filled in from the data) or {K}")
        raise ValueError(f"config.model.num_classes={stored}, but the model is"
                         f" {'conditional on ' + str(K) + ' classes' if K else 'unconditional'};"
                         f" {fix}")


def training_job(config, sde, data: DataSpec, model: ModelSpec, snapshot: Optional[SamplingSettings]) -> TrainingJob:
    """The score model's loop (`config.training`, `config.optim`)."""
    t = config.training
    loop = _loop(config, t, "training", bool(t.snapshot_sampling))
    loop = dataclasses.replace(loop, checkpoint_resolutions=_checkpoint_resolutions(config, model))
    conditional = is_conditional(config)
    return TrainingJob(mode="train", subdir="", objective="score", model=model, loop=loop,
                       optim=_optim(config.optim, "optim", loop.n_iters), loss=build_loss(config, sde, data),
                       conditional=conditional, p_uncond=float(t.p_uncond),
                       null_label=data.num_classes if conditional else None,
                       snapshot=snapshot if loop.snapshot_sampling else None)


CLASSIFIER_DIR = "classifier"  # <workdir>/classifier/: the classifier's own run directory


def classifier_job(config, sde, data: DataSpec) -> Optional[TrainingJob]:
    """The noise-conditional classifier's loop (`config.classifier`), None for unlabelled data."""
    c = config.classifier
    loop = _loop(config, c.training, "classifier.training", False)
    if not (0.0 < c.training.eps < sde.T):
        raise ValueError(f"config.classifier.training.eps={c.training.eps!r}: expected a number"
                         f" in (0, T={sde.T})")
    optim = _optim(c.optim, "classifier.optim", loop.n_iters)
    if data.num_classes < 2:
        return None
    model = classifier_spec(config, data)
    return TrainingJob(mode="train_classifier", subdir=CLASSIFIER_DIR, objective="classifier", model=model,
                       loop=loop, optim=optim, loss=NoisyClassifierLoss(sde, eps=c.training.eps))


def distill_settings(config, sde) -> DistillSettings:
    """Progressive distillation's rounds, grids and loop (`config.distill`)."""
    d = config.distill
    _positive_int("distill.rounds", d.rounds)
    _positive_int("distill.student_steps", d.student_steps)
    if d.student_steps % 2 ** (d.rounds - 1):
        raise ValueError(f"config.distill.student_steps={d.student_steps} does not halve {d.rounds - 1} times"
                         f" into whole steps; use a multiple of {2 ** (d.rounds - 1)} or fewer rounds")
    _choice("distill.schedule", d.schedule, DISTILL_SCHEDULES)
    _choice("distill.weighting", d.weighting, DISTILL_WEIGHTINGS)
    if isinstance(d.eps, bool) or not isinstance(d.eps, (int, float)) or not 0.0 < d.eps < sde.T:
        raise ValueError(f"config.distill.eps={d.eps!r}: expected a number in (0, T={sde.T})")
    loop = _loop(config, d, "distill", False)
    return DistillSettings(rounds=d.rounds, student_steps=d.student_steps, schedule=d.schedule, eps=float(d.eps),
                           weighting=d.weighting, loop=loop, optim=_optim(d.optim, "distill.optim", loop.n_iters))


CONSISTENCY_KINDS = ("distillation", "training")


def consistency_settings(config, sde) -> ConsistencySettings:
    """Consistency distillation / training (`config.consistency`)."""
    c = config.consistency
    _choice("consistency.kind", c.kind, CONSISTENCY_KINDS)
    for field in ("n_levels", "s0", "s1"):
        _positive_int(f"consistency.{field}", c[field])
    if c.n_levels < 2 or c.s0 < 2 or c.s1 < c.s0:
        raise ValueError(f"config.consistency: n_levels={c.n_levels}, s0={c.s0}, s1={c.s1}: need"
                         " n_levels >= 2 and 2 <= s0 <= s1 (pairs of adjacent levels)")
    if isinstance(c.rate, bool) or not isinstance(c.rate, (int, float)) or not 0.0 <= c.rate < 1.0:
        raise ValueError(f"config.consistency.rate={c.rate!r}: expected a number in [0, 1)")
    if isinstance(c.sigma_data, bool) or not isinstance(c.sigma_data, (int, float)) or not c.sigma_data > 0:
        raise ValueError(f"config.consistency.sigma_data={c.sigma_data!r}: expected a number > 0")
    if isinstance(c.eps, bool) or not isinstance(c.eps, (int, float)) or not 0.0 < c.eps < sde.T:
        raise ValueError(f"config.consistency.eps={c.eps!r}: expected a number in (0, T={sde.T})")
    loop = _loop(config, c, "consistency", False)
    return ConsistencySettings(kind=c.kind, n_levels=c.n_levels, s0=c.s0, s1=c.s1, rate=float(c.rate),
                               sigma_data=float(c.sigma_data), eps=float(c.eps), loop=loop,
                               optim=_optim(c.optim, "consistency.optim", loop.n_iters))


# --------------------------------------------------------------------------------- sampling
def build_sampler(config, method: Optional[str] = None) -> sampling_lib.Sampler:
    """The sampler of `config.sampling`: `method` with the options of `sampling.<method>` and the
    shared eps, denoise, N (`sde_lib.sampling.build_sampler`). A field left at None takes the
    method's own default."""
    s = config.sampling
    method = s.method if method is None else method
    _choice("sampling.method", method, sampling_lib.METHODS)
    options = {k: v for k, v in _as_dict(s[method]).items() if v is not None}
    try:
        declaration = sampling_lib.build_method(method, **options)
    except ValueError as err:
        raise _in_group(f"sampling.{method}", err) from None
    try:
        return sampling_lib.Sampler(method, declaration, eps=s.eps, denoise=s.denoise, N=s.N)
    except ValueError as err:
        raise _in_group("sampling", err) from None


def _check_sampler_names(config) -> None:
    """Every method group's values, also of methods not chosen: a typo is a typo."""
    for name in sampling_lib.METHODS:
        options = {k: v for k, v in _as_dict(config.sampling[name]).items() if v is not None}
        try:
            sampling_lib.build_method(name, **options)
        except ValueError as err:
            raise _in_group(f"sampling.{name}", err) from None


def label_values(config, group: str, num_classes: int, dataset: str) -> Optional[List[int]]:
    """The classes `config.<group>.class_label` names, in order: None (unconditional), [k] for an
    int k, the list itself, or every class for -1."""
    spec = config[group].class_label
    if spec is None:
        return None
    values = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not values or not all(_is_int(v) for v in values):
        raise ValueError(f"config.{group}.class_label={spec!r}: expected an int, a list of ints,"
                         f" or {ALL_CLASSES} for all classes")
    if num_classes == 0:
        raise ValueError(f"config.{group}.class_label={spec!r}, but dataset {dataset!r} has no class labels")
    if values == [ALL_CLASSES]:
        return list(range(num_classes))
    bad = [v for v in values if not 0 <= v < num_classes]
    if bad:
        raise ValueError(f"config.{group}.class_label={spec!r}: label(s) {bad} out of range;"
                         f" {dataset!r} has {num_classes} classes (0..{num_classes - 1}), or"
                         f" {ALL_CLASSES} for all of them")
    return values


def guidance_scales(config, group: str) -> List[float]:
    """`config.<group>.guidance_scale` as a list (sample mode: one sampling run per value)."""
    spec = config[group].guidance_scale
    values = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    ok = values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                        and math.isfinite(v) and v >= 0 for v in values)
    if not ok:
        raise ValueError(f"config.{group}.guidance_scale={spec!r}: expected a number >= 0 or a"
                         " list of them, e.g. (0, 1, 2, 4)")
    return [float(v) for v in values]


def _check_guidance(config, group: str, labels: Optional[List[int]], scales: List[float]) -> None:
    """Guidance, labels and model must fit together (docs/app.md, "Class labels and guidance")."""
    g = config[group]
    _choice(f"{group}.guidance", g.guidance, GUIDANCE)
    if group != "sampling" and (len(scales) > 1 or (labels is not None and len(labels) > 1)):
        raise ValueError(f"config.{group}: one class label and one guidance scale (got class_label="
                         f"{g.class_label!r}, guidance_scale={g.guidance_scale!r})")
    if len(scales) > 1 and g.guidance == "none":
        raise ValueError(f"config.{group}.guidance_scale={g.guidance_scale!r} is a list, but"
                         f" {group}.guidance='none' has no scale; set guidance='classifier_free'"
                         " or 'classifier'")
    conditional = is_conditional(config)
    if g.guidance != "none" and labels is None:
        raise ValueError(f"config.{group}.guidance={g.guidance!r} needs class labels: set"
                         f" config.{group}.class_label to a class"
                         + (f", a list, or {ALL_CLASSES} for all" if group == "sampling" else ""))
    if g.guidance == "classifier_free" and not conditional:
        raise ValueError(f"config.{group}.guidance='classifier_free' needs a class-conditional model"
                         " (training.conditional=True, trained with label dropout p_uncond > 0);"
                         " this model is unconditional: use guidance='classifier' with a classifier"
                         " trained by --mode train_classifier")
    if g.guidance == "classifier_free" and config.training.p_uncond <= 0:
        raise ValueError(f"config.{group}.guidance='classifier_free' needs the unconditional score,"
                         " which a model trained with training.p_uncond=0 never learned; train with"
                         " p_uncond = 0.1 to 0.2")
    if g.guidance == "none" and labels is not None and not conditional:
        raise ValueError(f"config.{group}.class_label={g.class_label!r} on an unconditional model:"
                         " train with training.conditional=True, or use guidance='classifier'"
                         " (--mode train_classifier)")


def sampling_seed(config) -> int:
    s = config.sampling.get("seed", None)
    return config.seed if s is None else s


def sampling_settings(config, data: DataSpec) -> SamplingSettings:
    """`config.sampling`: the sampler, sizes, seed, labels and guidance."""
    s = config.sampling
    _check_sampler_names(config)
    sampler = build_sampler(config)
    _positive_int("sampling.num_samples", s.num_samples)
    _nonnegative_int("sampling.batch_size", s.batch_size)  # 0: from free memory (`memory`)
    for flag in ("compile", "student_sampler"):
        if not isinstance(s.get(flag, False), bool):
            raise ValueError(f"config.sampling.{flag}={s.get(flag)!r}: expected True or False")
    labels = label_values(config, "sampling", data.num_classes, data.dataset)
    scales = guidance_scales(config, "sampling")
    _check_guidance(config, "sampling", labels, scales)
    return SamplingSettings(sampler=sampler, num_samples=s.num_samples, batch_size=s.batch_size,
                            seed=sampling_seed(config), labels=labels, guidance=s.guidance,
                            scales=tuple(scales), null_label=data.num_classes,
                            compile=bool(s.get("compile", False)),
                            student_sampler=bool(s.get("student_sampler", True)))


def controllable_settings(config, data: DataSpec) -> ControllableSettings:
    """`config.controllable`: the inpainting method and sampler (its options from
    `config.sampling.<sampler>`), sizes, the toy's known coordinate, label and guidance."""
    c, s = config.controllable, config.sampling
    _choice("controllable.method", c.method, controllable_lib.METHODS)
    samplers = controllable_lib.METHODS[c.method].samplers
    _choice("controllable.sampler", c.sampler, samplers)
    options = {k: v for k, v in _as_dict(c[c.method]).items()}
    if c.sampler != "ddpm":
        options.update({k: v for k, v in _as_dict(s[c.sampler]).items() if v is not None})
    try:
        inpainter = controllable_lib.build_inpainter(c.method, sampler=c.sampler, eps=s.eps, denoise=s.denoise,
                                                     N=s.N, **options)
    except ValueError as err:
        raise _in_group("controllable", err) from None
    _positive_int("controllable.num_samples", c.num_samples)
    if not data.is_image:
        if not (_is_int(c.known_dim) and 0 <= c.known_dim < data.dim):
            raise ValueError(f"config.controllable.known_dim={c.known_dim!r}: expected a coordinate"
                             f" index in [0, {data.dim})")
        if not math.isfinite(float(c.known_value)):
            raise ValueError(f"config.controllable.known_value={c.known_value!r}: expected a finite number")
    labels = label_values(config, "controllable", data.num_classes, data.dataset)
    scales = guidance_scales(config, "controllable")
    _check_guidance(config, "controllable", labels, scales)
    return ControllableSettings(inpainter=inpainter, num_samples=c.num_samples, batch_size=s.batch_size,
                                seed=sampling_seed(config), known_dim=int(c.known_dim),
                                known_value=float(c.known_value),
                                class_label=None if labels is None else labels[0], guidance=c.guidance,
                                scale=scales[0], null_label=data.num_classes)


# ------------------------------------------------------------------------------- evaluation
REFERENCES = ("floor", "gaussian_mixture")  # config.eval.references (sde_app.references)


def eval_settings(config, sde, data: DataSpec) -> EvalSettings:
    """`config.eval`: test-loss batches, the likelihood's ODE settings, the snapshot range, and
    the sample-quality metrics (FID, IS, KID; `quality_settings`)."""
    e = config.eval
    _choice("eval.divergence", e.divergence, DIVERGENCES)
    _choice("eval.solver", e.solver, ODE_METHODS)
    if not is_adaptive(e.solver):
        raise ValueError(f"config.eval.solver={e.solver!r} is a fixed-step method; the likelihood"
                         " needs an adaptive one, e.g. 'RK45' or 'dopri5'")
    if not (0.0 < e.eps < sde.T):
        raise ValueError(f"config.eval.eps={e.eps!r}: expected a number in (0, T={sde.T})")
    for field in ("rtol", "atol"):
        v = e[field]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"config.eval.{field}={v!r}: expected a finite number > 0")
    _positive_int("eval.batch_size", e.batch_size)
    _positive_int("eval.n_probes", e.n_probes)
    if e.divergence == "exact" and e.n_probes != 1:
        raise ValueError(f"config.eval.n_probes={e.n_probes}: the exact divergence takes no probes; set 1")
    _nonnegative_int("eval.loss_batches", e.loss_batches)
    if not _is_int(e.num_points) or e.num_points < -1:
        raise ValueError(f"config.eval.num_points={e.num_points!r}: expected an integer >= 0 (0: all"
                         " test points) or -1 (skip the likelihood)")
    begin, end = e.begin_ckpt, e.end_ckpt
    for field, v in (("begin_ckpt", begin), ("end_ckpt", end)):
        if v is not None:
            _nonnegative_int(f"eval.{field}", v)
    if (begin is None) != (end is None) or (begin is not None and begin > end):
        raise ValueError(f"config.eval.begin_ckpt={begin!r}, end_ckpt={end!r}: set both, begin <= end (training"
                         " steps of the snapshots to evaluate), or neither")
    return EvalSettings(batch_size=e.batch_size, loss_batches=e.loss_batches, num_points=e.num_points,
                        likelihood=dict(divergence=e.divergence, n_probes=e.n_probes, method=e.solver,
                                        rtol=e.rtol, atol=e.atol, eps=e.eps),
                        quality=quality_settings(config, data), begin_ckpt=begin, end_ckpt=end)


def quality_settings(config, data: DataSpec) -> Optional[SampleQualitySettings]:
    """`config.eval`'s sample-quality fields (None when `eval.num_samples = 0`)."""
    e = config.eval
    _nonnegative_int("eval.num_samples", e.num_samples)
    if e.num_samples == 0:
        return None
    _choice("eval.features", e.features, features_lib.FEATURES)
    _positive_int("eval.kid_subsets", e.kid_subsets)
    _positive_int("eval.is_splits", e.is_splits)
    if not _is_int(e.kid_subset_size) or e.kid_subset_size < 2:
        raise ValueError(f"config.eval.kid_subset_size={e.kid_subset_size!r}: expected an integer >= 2")
    if not _is_int(e.bootstrap) or e.bootstrap == 1 or e.bootstrap < 0:
        raise ValueError(f"config.eval.bootstrap={e.bootstrap!r}: expected 0 (no standard errors) or an"
                         " integer >= 2 (resamples, e.g. 100)")
    refs = e.references
    refs = (refs,) if isinstance(refs, str) else tuple(refs or ())
    for r in refs:
        _choice("eval.references", r, REFERENCES)
    comps = tuple(e.gmm_components) if isinstance(e.gmm_components, (list, tuple)) else (e.gmm_components,)
    if not comps or not all(_is_int(k) and k >= 1 for k in comps):
        raise ValueError(f"config.eval.gmm_components={e.gmm_components!r}: expected integers >= 1, e.g. (1, 2, 5)")
    return SampleQualitySettings(
        num_samples=e.num_samples, round_size=e.batch_size, features=e.features,
        inception_weights=e.inception_weights, download_inception=bool(e.download_inception), stats=e.stats,
        stats_dir=str(e.stats_dir), kid_subsets=e.kid_subsets, kid_subset_size=e.kid_subset_size,
        is_splits=e.is_splits, bootstrap=e.bootstrap, references=refs, gmm_components=comps,
        seed=sampling_seed(config))


# ------------------------------------------------------------------------------ the experiment
def build_experiment(config, modes: Sequence[str] = (), *, check_network: bool = True) -> Experiment:
    """Every group of `config` built and checked (see the module docstring).

    Args:
      config: the configuration (an ml_collections.ConfigDict of `configs/`).
      modes: the modes about to run; the sampler and inpainting method are checked against the
        SDE when a mode (or the training's snapshot samples) will use them.
      check_network: build the networks on the meta device (no memory) to check their options;
        False for weights that come with their own network (official checkpoints).

    Raises:
      ValueError: naming the field, its value and the fix.
    """
    if not _is_int(config.seed):
        raise ValueError(f"config.seed={config.seed!r}: expected an integer")
    _nonnegative_int("threads", config.threads)
    sde = build_sde(config)
    data = build_data(config)
    _check_classes(config, data)
    model = score_model_spec(config, sde, data)
    sampling = sampling_settings(config, data)
    train = training_job(config, sde, data, model, sampling)
    classifier = classifier_job(config, sde, data)
    controllable = controllable_settings(config, data)
    evaluation = eval_settings(config, sde, data)
    if check_network:
        with torch.device("meta"):
            model.build_net()
            if classifier is not None:
                classifier.model.build_net()
    if (getattr(sampling.sampler.method, "variance", None) == "learned"
            and not config.model.get("learned_variance", False)):
        raise ValueError("config.sampling.ddpm.variance='learned' needs a network with a variance output;"
                         " set --config.model.learned_variance=True (trained with training.loss=hybrid) or"
                         " variance=transition / posterior")
    if any(m in modes for m in SAMPLING_MODES) or ("train" in modes and train.snapshot is not None):
        try:
            sampling.sampler.check(sde)
        except ValueError as err:
            raise _in_group(f"sampling ({sampling.sampler.name}, used by"
                            f" {'sample' if 'sample' in modes else 'the snapshot samples of train'})",
                            err) from None
    q = evaluation.quality
    if "eval" in modes and q is not None:
        # Everything FID needs before any sampling: the network's code and weights, a user's
        # statistics file, and a sampler that runs on the SDE.
        features_lib.check_available(q.features, data, weights=q.inception_weights,
                                     download=q.download_inception, stats=q.stats)
        try:
            sampling.sampler.check(sde)
        except ValueError as err:
            raise _in_group(f"sampling ({sampling.sampler.name}, used by eval for FID)", err) from None
    if any(m in modes for m in CONTROLLABLE_MODES):
        try:
            controllable.inpainter.check(sde)
        except ValueError as err:
            raise _in_group("controllable", err) from None
    distill = distill_settings(config, sde)
    consistency = consistency_settings(config, sde)
    return Experiment(config_json=config_to_json(config), seed=config.seed, threads=config.threads, sde=sde,
                      data=data, score_model=model, train=train, classifier=classifier, sampling=sampling,
                      controllable=controllable, evaluation=evaluation, distill=distill,
                      consistency=consistency)



# ------------------------------------------------------------------------- single pieces
def network_options(config) -> Dict[str, Any]:
    """The keyword arguments the score network of `config.model` is built with (its own only)."""
    import models

    data = build_data(config)
    fields = {k: v for k, v in _as_dict(config.model).items() if k not in SCORE_FIELDS}
    if not is_conditional(config):
        fields.pop("num_classes", None)
    extra = {"num_classes": data.num_classes} if is_conditional(config) else {}
    return _network_kwargs(models.MODELS, fields, "model", data, extra)[1]


def build_network(config) -> torch.nn.Module:
    """The score network of `config.model` (CPU, training mode)."""
    return score_model_spec(config, build_sde(config), build_data(config)).build_net()


def build_classifier(config) -> torch.nn.Module:
    """The noise-conditional classifier of `config.classifier.model` (CPU, training mode)."""
    return classifier_spec(config, build_data(config)).build_net()
