"""The one place that reads the configuration: config -> SDE, network, score, loss, sampler options.

Everything downstream (training, sampling and evaluation runs) receives built objects and plain
keyword arguments. `check_config` validates every choice before any work starts, so a typo in a
name fails in one line that names the field, the value and the valid choices.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Dict

import torch

from .. import correctors as correctors_lib
from .. import data as data_lib
from .. import predictors as predictors_lib
from .. import sampling as sampling_lib
from ..likelihood import DIVERGENCES
from ..losses import DenoisingScoreMatching, discrete_dsm_loss
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

# sample() option name -> config.sampling field, per method. `sde_solver` keeps its own field so
# that `solver` can name the probability-flow ODE solver.
SAMPLER_FIELDS: Dict[str, Dict[str, str]] = {
    "pc": {"predictor": "predictor", "corrector": "corrector", "snr": "snr", "n_steps": "n_steps",
           "probability_flow": "probability_flow", "schedule": "schedule"},
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
def network_options(config) -> Dict[str, Any]:
    """`config.model` without the score/EMA fields, with the data's shape filled in: images copy
    `image_size` and `num_channels` from `config.data`, vector networks get `data_dim`."""
    fields = {k: v for k, v in _as_dict(config.model).items() if k not in SCORE_FIELDS}
    if data_lib.is_image_data(config.data):
        fields["image_size"] = config.data.image_size
        fields["num_channels"] = config.data.num_channels
    else:
        fields["data_dim"] = data_lib.data_dim(config.data)
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
    """score_fn(x, t) of network `net` for `sde`, as `config.model.prediction` and `time_labels` say."""
    return NetworkScore(net, sde, prediction=config.model.prediction,
                        time_labels=config.model.time_labels)


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
    _choice("sampling.schedule", s.schedule, (None,) + tuple(sampling_lib.SCHEDULES))
    _choice("sampling.solver", s.solver, ODE_METHODS)
    _choice("sampling.sde_solver", s.sde_solver, SDE_SOLVERS)
    if not (0.0 < s.eps < sde.T):
        raise ValueError(f"config.sampling.eps={s.eps!r}: expected a number in (0, T={sde.T})")
    for field in ("num_samples", "batch_size"):
        if int(s[field]) < 1:
            raise ValueError(f"config.sampling.{field}={s[field]!r}: expected an integer >= 1")

    e = config.eval
    _choice("eval.divergence", e.divergence, DIVERGENCES)
    _choice("eval.solver", e.solver, ODE_METHODS)
    if not is_adaptive(e.solver):
        raise ValueError(f"config.eval.solver={e.solver!r} is a fixed-step method; the likelihood"
                         " needs an adaptive one, e.g. 'RK45' or 'dopri5'")
    if not (0.0 < e.eps < sde.T):
        raise ValueError(f"config.eval.eps={e.eps!r}: expected a number in (0, T={sde.T})")
