"""The one place that reads the configuration: config -> SDE, network, score, loss, sampler options,
class labels and guidance, the noise-conditional classifier, inpainting options.

Everything downstream (training, sampling and evaluation runs) receives built objects and plain
keyword arguments. `check_config` validates every choice before any work starts, so a typo in a
name fails in one line that names the field, the value and the valid choices.
"""
from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .. import controllable as controllable_lib
from .. import correctors as correctors_lib
from .. import data as data_lib
from .. import predictors as predictors_lib
from .. import sampling as sampling_lib
from ..guidance import NetworkClassifier
from ..likelihood import DIVERGENCES
from ..losses import DenoisingScoreMatching, NoisyClassifierLoss, discrete_dsm_loss
from ..ode import METHODS as ODE_METHODS
from ..ode import is_adaptive
from ..score import PREDICTIONS, TIME_LABELS, NetworkScore
from ..sde_solver import SOLVERS as SDE_SOLVERS
from ..sdes import SDES

Tensor = torch.Tensor

# Fields of config.model that configure the score adapter and the EMA, not the network.
SCORE_FIELDS = ("prediction", "time_labels", "ema_rate")

# Training objectives. "ddpm" and "smld" are the same chain loss (`discrete_dsm_loss`) under the
# names of the papers that introduced them; each is only meaningful on its family of SDEs.
LOSSES = ("dsm", "ddpm", "smld")
DISCRETE_LOSS_SDES = {"ddpm": ("vpsde", "subvpsde", "cosine_vpsde"), "smld": ("vesde",)}

MIXED_PRECISION = ("none", "bf16")
LR_SCHEDULES = ("constant", "cosine")

# config.sampling.guidance: none (the model's own score: unconditional, or conditional when class
# labels are given), classifier_free (Ho & Salimans 2022), classifier (Song et al. 2021, eq. 14).
GUIDANCE = ("none", "classifier_free", "classifier")
ALL_CLASSES = -1  # config.sampling.class_label = -1: every class, cycled over the samples

# Inpainting/colorization option -> config field: the sampler's options from config.sampling,
# the method's from config.controllable (sde_lib.controllable.SAMPLER_OPTIONS / METHOD_OPTIONS).
CONTROLLABLE_SAMPLER_FIELDS: Dict[str, Tuple[str, ...]] = {
    "pc": ("predictor", "corrector", "snr", "n_steps", "probability_flow", "corrector_update", "schedule"),
    "ddpm": (),
    "ode": ("solver", "rtol", "atol"),
}
CONTROLLABLE_METHOD_FIELDS: Dict[str, Tuple[str, ...]] = {
    "replacement": (), "repaint": ("jump", "resample"), "smc": ("particles", "ess_threshold"),
}

# sample() option name -> config.sampling field, per method. `sde_solver` keeps its own field so
# that `solver` can name the probability-flow ODE solver.
SAMPLER_FIELDS: Dict[str, Dict[str, str]] = {
    "pc": {"predictor": "predictor", "corrector": "corrector", "snr": "snr", "n_steps": "n_steps",
           "probability_flow": "probability_flow", "corrector_update": "corrector_update",
           "schedule": "schedule"},
    "ode": {"solver": "solver", "rtol": "rtol", "atol": "atol"},
    "sde_solver": {"solver": "sde_solver"},
    "ddpm": {},
    "ddim": {"eta": "eta", "schedule": "schedule"},
    "dpm_solver": {"order": "order", "schedule": "schedule"},
    "langevin": {"n_steps_each": "n_steps_each", "step_lr": "step_lr", "schedule": "schedule"},
}


def _as_dict(group) -> Dict[str, Any]:
    if hasattr(group, "to_dict"):
        return dict(group.to_dict())
    if isinstance(group, Mapping):
        return dict(group)
    raise TypeError(f"expected a config group (ConfigDict or mapping), got {type(group).__name__}")


def _choice(field: str, value, allowed) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"config.{field}={value!r} is not one of {allowed}; set --config.{field}=...")


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
    return SDES[name](**{k: v for k, v in fields.items() if k in options})


# ---------------------------------------------------------------------------------- the network
def _data_shape_fields(config) -> Dict[str, Any]:
    if data_lib.is_image_data(config.data):
        return {"image_size": config.data.image_size, "num_channels": config.data.num_channels}
    return {"data_dim": data_lib.data_dim(config.data)}


def is_conditional(config) -> bool:
    """True for a class-conditional score model (`config.training.conditional`)."""
    return bool(config.training.get("conditional", False))


def data_num_classes(config) -> int:
    """K, the classes of `config.data` (0 for unlabelled data)."""
    return data_lib.num_classes(config.data)


def network_options(config) -> Dict[str, Any]:
    """`config.model` without the score/EMA fields, with the data's shape filled in: images copy
    `image_size` and `num_channels` from `config.data`, vector networks get `data_dim`; a
    class-conditional model (`training.conditional`) gets `num_classes` = the data's classes."""
    fields = {k: v for k, v in _as_dict(config.model).items() if k not in SCORE_FIELDS}
    fields.update(_data_shape_fields(config))
    if is_conditional(config):
        fields["num_classes"] = data_num_classes(config)
    return fields


def build_network(config) -> torch.nn.Module:
    """The score network of `config.model` (on the CPU, training mode).

    Raises:
      ValueError: unknown network name or field (from `models.build_model`), or a network that
        this installation does not have.
    """
    try:
        import models
    except ImportError as err:  # pragma: no cover - the models package ships with the project
        raise ValueError("the score networks (package `models`) are not installed; install the"
                         " project with `pip install -e .`") from err
    options = network_options(config)
    name = str(options.get("name", "")).lower()
    if name not in models.MODELS:
        raise ValueError(f"config.model.name={name!r}: no such network yet; available:"
                         f" {sorted(models.MODELS)}")
    return models.build_model(options)


def build_score_fn(net: Callable, sde, config) -> NetworkScore:
    """score_fn(x, t, y=None) of network `net` for `sde`, as `config.model.prediction` and
    `time_labels` say (y: class labels of a conditional model; None = the null label)."""
    return NetworkScore(net, sde, prediction=config.model.prediction,
                        time_labels=config.model.time_labels)


# ------------------------------------------------------------------------------- the classifier
def classifier_options(config) -> Dict[str, Any]:
    """`config.classifier.model` with the data's shape and `num_classes` (the data's) filled in."""
    fields = _as_dict(config.classifier.model)
    fields.update(_data_shape_fields(config))
    fields["num_classes"] = data_num_classes(config)
    return fields


def build_classifier(config) -> torch.nn.Module:
    """The noise-conditional classifier of `config.classifier.model` (CPU, training mode).

    Raises:
      ValueError: unknown classifier name or field (from `models.build_classifier`).
    """
    import models

    return models.build_classifier(classifier_options(config))


def build_log_prob_fn(net: Callable, sde) -> NetworkClassifier:
    """log_prob_fn(x, t) = log_softmax(net(x, sde.network_time_label(t))) (continuous labels)."""
    return NetworkClassifier(net, sde)


def build_classifier_loss(config, sde) -> NoisyClassifierLoss:
    """loss(log_prob_fn, x0, y, generator=...) -> per-example cross-entropies (B,)."""
    return NoisyClassifierLoss(sde, eps=config.classifier.training.eps)


# ------------------------------------------------------------------------------------- the loss
def build_loss(config, sde) -> Callable[..., Tensor]:
    """loss(score_fn, x0, generator=...) -> per-example losses (B,), from `config.training`.

    "dsm": continuous denoising score matching (Song et al. 2021, eq. 7) with t ~ U[eps, T]
    (or importance-sampled), std(t)^2 or likelihood weighting. "ddpm"/"smld": the loss on the
    SDE's N-level chain (Ho et al. 2020's L_simple on VP, Song & Ermon 2019's on VE).
    """
    training = config.training
    if training.loss == "dsm":
        return DenoisingScoreMatching(
            sde, eps=training.eps, reduce_mean=training.reduce_mean,
            likelihood_weighting=training.likelihood_weighting,
            importance_sampling=training.importance_sampling)
    return functools.partial(discrete_dsm_loss, sde, reduce_mean=training.reduce_mean)


# ------------------------------------------------------------------------- sampling, likelihood
def sample_kwargs(config) -> Dict[str, Any]:
    """Keyword arguments of `sde_lib.sampling.sample` from `config.sampling` (method, eps,
    denoise, N and the method's own options)."""
    s = config.sampling
    # A field left at None takes the sampler's own default (e.g. the schedule: uniform for the
    # chain-based predictors, log-SNR for the continuous-time ones).
    options = {opt: s[field] for opt, field in SAMPLER_FIELDS[s.method].items() if s[field] is not None}
    return dict(method=s.method, eps=s.eps, denoise=s.denoise, N=s.N, **options)


def likelihood_kwargs(config) -> Dict[str, Any]:
    """Keyword arguments of `sde_lib.likelihood.log_likelihood` from `config.eval`."""
    e = config.eval
    return dict(divergence=e.divergence, n_probes=e.n_probes, method=e.solver, rtol=e.rtol,
                atol=e.atol, eps=e.eps)


def sampling_seed(config) -> int:
    s = config.sampling.get("seed", None)
    return config.seed if s is None else s


# -------------------------------------------------------------------------- labels and guidance
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def label_values(config, group: str = "sampling") -> Optional[List[int]]:
    """The classes `config.<group>.class_label` names, in order: None (unconditional), [k] for an
    int k, the list itself, or every class for -1. `group`: "sampling" (sample mode) or
    "controllable" (inpaint, colorize).

    Raises:
      ValueError: not an int or a list of ints; a label out of range; labels for unlabelled data.
    """
    spec = config[group].class_label
    if spec is None:
        return None
    values = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not values or not all(_is_int(v) for v in values):
        raise ValueError(f"config.{group}.class_label={spec!r}: expected an int, a list of ints,"
                         f" or {ALL_CLASSES} for all classes")
    K = data_num_classes(config)
    if K == 0:
        raise ValueError(f"config.{group}.class_label={spec!r}, but dataset"
                         f" {config.data.dataset!r} has no class labels")
    if values == [ALL_CLASSES]:
        return list(range(K))
    bad = [v for v in values if not 0 <= v < K]
    if bad:
        raise ValueError(f"config.{group}.class_label={spec!r}: label(s) {bad} out of range;"
                         f" {config.data.dataset!r} has {K} classes (0..{K - 1}), or"
                         f" {ALL_CLASSES} for all of them")
    return values


def class_labels(config, n: int) -> Optional[Tensor]:
    """Labels (n,) long of n samples of sample mode: sample i gets the (i mod L)-th of
    `label_values` (so -1 cycles through all classes); None without class labels."""
    values = label_values(config)
    if values is None:
        return None
    return torch.tensor(values, dtype=torch.long)[torch.arange(n) % len(values)]


def guidance_scales(config, group: str = "sampling") -> List[float]:
    """`config.<group>.guidance_scale` as a list (sample mode: one sampling run per value).

    Raises:
      ValueError: a value that is not a finite number >= 0, or an empty list.
    """
    spec = config[group].guidance_scale
    values = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    ok = values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                        and math.isfinite(v) and v >= 0 for v in values)
    if not ok:
        raise ValueError(f"config.{group}.guidance_scale={spec!r}: expected a number >= 0 or a"
                         " list of them, e.g. (0, 1, 2, 4)")
    return [float(v) for v in values]


def check_guidance(config, group: str = "sampling") -> None:
    """Guidance, labels and model must fit together (docs/app.md, "Class labels and guidance"):
    `config.sampling` for sample mode, `config.controllable` (one label, one scale) for inpaint
    and colorize.

    Raises:
      ValueError: naming the field and the fix.
    """
    g = config[group]
    _choice(f"{group}.guidance", g.guidance, GUIDANCE)
    scales = guidance_scales(config, group)
    labels = label_values(config, group)
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


def uses_classifier(config, modes) -> bool:
    """Whether one of `modes` guides with the classifier."""
    return ((config.sampling.guidance == "classifier" and "sample" in modes)
            or (config.controllable.guidance == "classifier"
                and any(m in modes for m in ("inpaint", "colorize"))))


# --------------------------------------------------------------------- inpainting, colorization
def controllable_kwargs(config) -> Dict[str, Any]:
    """Keyword arguments of `sde_lib.controllable.inpaint` / `colorize` from `config.controllable`
    (method, sampler and the method's options) and `config.sampling` (the sampler's options, eps,
    denoise, N)."""
    c, s = config.controllable, config.sampling
    options = {k: s[k] for k in CONTROLLABLE_SAMPLER_FIELDS[c.sampler] if s[k] is not None}
    options.update({k: c[k] for k in CONTROLLABLE_METHOD_FIELDS[c.method]})
    if c.method == "smc" and s.schedule is not None:
        options["schedule"] = s.schedule
    return dict(method=c.method, sampler=c.sampler, eps=s.eps, denoise=s.denoise, N=s.N, **options)


# ---------------------------------------------------------------------------------- validation
def check_config(config, *, check_network: bool = True) -> None:
    """Validate every name and the combinations the factories rely on; builds nothing heavy
    (the network is built on the meta device, without memory; `check_network=False` skips it,
    for weights that come with their own network, e.g. official checkpoints).

    Raises:
      ValueError: naming the field, its value and the valid choices.
    """
    sde = build_sde(config)
    data_lib.data_shape(config.data)  # dataset name, image fields
    _choice("model.prediction", config.model.prediction, PREDICTIONS)
    _choice("model.time_labels", config.model.time_labels, TIME_LABELS)
    rate = config.model.ema_rate
    if not (0.0 <= rate < 1.0):
        raise ValueError(f"config.model.ema_rate={rate!r}: expected a number in [0, 1)")
    check_classes(config)
    if check_network:
        with torch.device("meta"):
            build_network(config)

    t = config.training
    _choice("training.loss", t.loss, LOSSES)
    if t.loss in DISCRETE_LOSS_SDES and config.sde.name not in DISCRETE_LOSS_SDES[t.loss]:
        raise ValueError(f"config.training.loss={t.loss!r} is the loss of the"
                         f" {DISCRETE_LOSS_SDES[t.loss]} chain, not of sde.name={config.sde.name!r};"
                         f" use loss='dsm' or {'smld' if t.loss == 'ddpm' else 'ddpm'!r}")
    if t.loss != "dsm" and (t.likelihood_weighting or t.importance_sampling):
        raise ValueError(f"config.training.likelihood_weighting/importance_sampling apply to"
                         f" loss='dsm' only, not loss={t.loss!r}")
    if t.loss == "dsm":
        build_loss(config, sde)  # eps in (0, T), importance sampling needs likelihood weighting
    _choice("training.mixed_precision", t.mixed_precision, MIXED_PRECISION)
    for field in ("batch_size", "n_iters"):
        if int(t[field]) < 1:
            raise ValueError(f"config.training.{field}={t[field]!r}: expected an integer >= 1")
    _choice("optim.schedule", config.optim.schedule, LR_SCHEDULES)

    s = config.sampling
    # Every name is checked, also those the chosen method ignores: a typo is a typo.
    _choice("sampling.method", s.method, SAMPLER_FIELDS)
    _choice("sampling.predictor", s.predictor, predictors_lib.PREDICTORS)
    _choice("sampling.corrector", s.corrector, correctors_lib.CORRECTORS)
    _choice("sampling.corrector_update", s.corrector_update, correctors_lib.UPDATES)
    _choice("sampling.schedule", s.schedule, (None,) + tuple(sampling_lib.SCHEDULES))
    _choice("sampling.solver", s.solver, ODE_METHODS)
    _choice("sampling.sde_solver", s.sde_solver, SDE_SOLVERS)
    if not (0.0 < s.eps < sde.T):
        raise ValueError(f"config.sampling.eps={s.eps!r}: expected a number in (0, T={sde.T})")
    for field in ("num_samples", "batch_size"):
        if int(s[field]) < 1:
            raise ValueError(f"config.sampling.{field}={s[field]!r}: expected an integer >= 1")

    check_guidance(config, "sampling")
    check_guidance(config, "controllable")
    check_classifier(config, sde)
    check_controllable(config)

    e = config.eval
    _choice("eval.divergence", e.divergence, DIVERGENCES)
    _choice("eval.solver", e.solver, ODE_METHODS)
    if not is_adaptive(e.solver):
        raise ValueError(f"config.eval.solver={e.solver!r} is a fixed-step method; the likelihood"
                         " needs an adaptive one, e.g. 'RK45' or 'dopri5'")
    if not (0.0 < e.eps < sde.T):
        raise ValueError(f"config.eval.eps={e.eps!r}: expected a number in (0, T={sde.T})")


def check_classes(config) -> None:
    """`training.conditional` needs labelled data; `model.num_classes`, if set, must be the data's
    (a conditional model) or 0.

    Raises:
      ValueError: naming the fields and the fix.
    """
    t = config.training
    p = t.p_uncond
    if isinstance(p, bool) or not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
        raise ValueError(f"config.training.p_uncond={p!r}: expected a probability in [0, 1]"
                         " (label dropout; 0.1 to 0.2 as Ho & Salimans 2022)")
    K = data_num_classes(config) if is_conditional(config) else 0
    if is_conditional(config) and K == 0:
        raise ValueError(f"config.training.conditional=True, but dataset {config.data.dataset!r}"
                         " has no class labels; set training.conditional=False")
    stored = config.model.get("num_classes", 0) or 0
    if stored and stored != K:
        fix = ("set training.conditional=True (the network then takes the data's classes)"
               if K == 0 else f"set it to 0 (filled in from the data) or {K}")
        raise ValueError(f"config.model.num_classes={stored}, but the model is"
                         f" {'conditional on ' + str(K) + ' classes' if K else 'unconditional'};"
                         f" {fix}")


def check_classifier(config, sde) -> None:
    """The classifier group: its loop, Adam and (for labelled data) network.

    Raises:
      ValueError: naming the field and the valid choices.
    """
    c = config.classifier
    for field in ("batch_size", "n_iters"):
        if int(c.training[field]) < 1:
            raise ValueError(f"config.classifier.training.{field}={c.training[field]!r}: expected"
                             " an integer >= 1")
    if not (0.0 < c.training.eps < sde.T):
        raise ValueError(f"config.classifier.training.eps={c.training.eps!r}: expected a number"
                         f" in (0, T={sde.T})")
    if not (0.0 <= c.training.ema_rate < 1.0):
        raise ValueError(f"config.classifier.training.ema_rate={c.training.ema_rate!r}: expected"
                         " a number in [0, 1)")
    _choice("classifier.optim.schedule", c.optim.schedule, LR_SCHEDULES)
    if data_num_classes(config) >= 2:
        with torch.device("meta"):
            build_classifier(config)


def check_controllable(config) -> None:
    """Inpainting/colorization method, sampler and the toy's known coordinate.

    Raises:
      ValueError: naming the field and the valid choices.
    """
    c = config.controllable
    _choice("controllable.method", c.method, controllable_lib.METHODS)
    _choice("controllable.sampler", c.sampler, controllable_lib.METHOD_SAMPLERS[c.method])
    if int(c.num_samples) < 1:
        raise ValueError(f"config.controllable.num_samples={c.num_samples!r}: expected an integer >= 1")
    if not data_lib.is_image_data(config.data):
        d = data_lib.data_dim(config.data)
        if not (_is_int(c.known_dim) and 0 <= c.known_dim < d):
            raise ValueError(f"config.controllable.known_dim={c.known_dim!r}: expected a coordinate"
                             f" index in [0, {d})")
        if not math.isfinite(float(c.known_value)):
            raise ValueError(f"config.controllable.known_value={c.known_value!r}: expected a finite number")
