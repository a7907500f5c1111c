"""Which weights sampling and evaluation use: the EMA weights of one of our checkpoints (the
latest by default), or those of an official score_sde_pytorch checkpoint; and the EMA weights of
the noise-conditional classifier for classifier guidance (`<workdir>/classifier/checkpoints/`)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from . import factory
from .checkpoints import CheckpointDir, CorruptCheckpointError, load_state

CLASSIFIER_DIR = "classifier"  # <workdir>/classifier/: the classifier's own run directory

# What makes two checkpoints the same model: whole groups, or single fields (with their default
# for checkpoints written before the field existed).
SCORE_MODEL_FIELDS = ("sde", "model", "training.conditional")
CLASSIFIER_MODEL_FIELDS = ("sde", "classifier.model")
FIELD_DEFAULTS = {"training.conditional": False}


@dataclass
class LoadedModel:
    """A score model ready for sampling and evaluation (EMA weights, eval mode)."""

    sde: Any
    score_fn: Callable
    net: torch.nn.Module
    step: int
    source: str          # the checkpoint file
    tag: str             # names output files, e.g. "step_00004000" or "official_step_00012345"


def _differences(stored: Dict[str, Any], current: Dict[str, Any], prefix: str):
    keys = sorted(set(stored) | set(current))
    return [f"{prefix}.{k}: checkpoint {stored.get(k)!r}, config {current.get(k)!r}"
            for k in keys if stored.get(k) != current.get(k)]


def _lookup(cfg: Dict[str, Any], dotted: str):
    for key in dotted.split("."):
        if not isinstance(cfg, dict) or key not in cfg:
            return FIELD_DEFAULTS.get(dotted, {})
        cfg = cfg[key]
    return cfg


def check_same_model(stored_config_json: str, config, fields=SCORE_MODEL_FIELDS) -> None:
    """The checkpoint's model `fields` (groups or single fields; default the score model's `sde`,
    `model` and `training.conditional`) must equal the config's, else the weights would be read
    as another model.

    Raises:
      ValueError: listing the fields that differ.
    """
    stored = json.loads(stored_config_json)
    current = json.loads(config.to_json_best_effort())
    diffs = []
    for name in fields:
        a, b = _lookup(stored, name), _lookup(current, name)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, name)
        elif a != b:
            diffs.append(f"{name}: checkpoint {a!r}, config {b!r}")
    if diffs:
        raise ValueError("the checkpoint was trained with another model; pass its config (the"
                         " run's config.json) or fix these fields: " + "; ".join(diffs))


def load_trained(config, workdir: Optional[Path], device: torch.device,
                 checkpoint: Optional[str] = None) -> LoadedModel:
    """Our checkpoint's EMA weights: `checkpoint` if given, else the latest good one in
    `<workdir>/checkpoints/` (a damaged file is reported and the previous one used).

    Raises:
      FileNotFoundError: no checkpoint (the message says how to make one).
      ValueError: the checkpoint's model differs from `config`'s, or the named `checkpoint` is
        damaged or not one of ours.
    """
    if checkpoint:
        try:
            state, path = load_state(checkpoint), Path(checkpoint)
        except CorruptCheckpointError as err:
            raise ValueError(f"--checkpoint: {err}. For an official score_sde_pytorch checkpoint"
                             " use --official_checkpoint with --official_config") from err
    else:
        state, path = CheckpointDir(workdir).load_latest()
        if state is None:
            raise FileNotFoundError(
                f"no checkpoint in {Path(workdir) / 'checkpoints'}: train first (--mode train or"
                " --mode train,sample), or name one with --checkpoint=PATH")
    check_same_model(state["config"], config)
    sde = factory.build_sde(config)
    net = factory.build_network(config)
    net.load_state_dict(state["ema"]["weights"])
    net.to(device).eval().requires_grad_(False)
    step = int(state["step"])
    return LoadedModel(sde, factory.build_score_fn(net, sde, config), net, step, str(path),
                       f"step_{step:08d}")


@dataclass
class LoadedClassifier:
    """A noise-conditional classifier ready for guidance (EMA weights, eval mode)."""

    log_prob_fn: Callable   # log_prob_fn(x, t) -> (B, K) log p_t(y | x)
    net: torch.nn.Module
    step: int
    source: str


def classifier_dir(workdir) -> Path:
    return Path(workdir) / CLASSIFIER_DIR


def load_classifier(config, workdir: Optional[Path], device: torch.device, sde,
                    checkpoint: Optional[str] = None) -> LoadedClassifier:
    """The classifier's EMA weights: `checkpoint` if given, else the latest good one in
    `<workdir>/classifier/checkpoints/`.

    Raises:
      FileNotFoundError: no classifier checkpoint (the message says how to train one).
      ValueError: the checkpoint's classifier or SDE differs from `config`'s, or the named file is
        damaged.
    """
    if checkpoint:
        try:
            state, path = load_state(checkpoint), Path(checkpoint)
        except CorruptCheckpointError as err:
            raise ValueError(f"--classifier_checkpoint: {err}") from err
    else:
        state, path = CheckpointDir(classifier_dir(workdir)).load_latest()
        if state is None:
            raise FileNotFoundError(missing_classifier_message(workdir))
    check_same_model(state["config"], config, CLASSIFIER_MODEL_FIELDS)
    net = factory.build_classifier(config)
    net.load_state_dict(state["ema"]["weights"])
    net.to(device).eval().requires_grad_(False)
    return LoadedClassifier(factory.build_log_prob_fn(net, sde), net, int(state["step"]), str(path))


def missing_classifier_message(workdir) -> str:
    return (f"guidance='classifier' needs a classifier, but"
            f" {classifier_dir(workdir) / 'checkpoints'} has none: train one first"
            " (--mode=train_classifier,sample), or pass --classifier_checkpoint=PATH")


# --------------------------------------------------------------------------- official checkpoints
def read_official_config(path: str) -> Dict[str, Any]:
    """An official config as JSON: the groups `model`, `data`, `training` at the top level or
    under "config" (as in the test fixtures)."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--official_config={path!r} cannot be read as JSON ({err}); dump the"
                         " official config with ConfigDict.to_json_best_effort()") from err
    cfg = cfg.get("config", cfg)
    missing = [g for g in ("model", "data", "training") if g not in cfg]
    if missing:
        raise ValueError(f"--official_config={path!r} lacks the group(s) {missing}")
    return cfg


def apply_official_config(config, official: Dict[str, Any]) -> None:
    """Set our `sde`, score adapter and data-shape fields from an official config, in place.

    The official VP/sub-VP networks predict epsilon (score = -output / std); the VE networks
    output the score (scale-by-sigma inside). `training.continuous` picks continuous or
    discrete time labels.
    """
    model, data, training = official["model"], official["data"], official["training"]
    sde = str(training.get("sde", "vpsde")).lower()
    config.sde.name = sde
    config.sde.beta_min = float(model.get("beta_min", config.sde.beta_min))
    config.sde.beta_max = float(model.get("beta_max", config.sde.beta_max))
    config.sde.sigma_min = float(model.get("sigma_min", config.sde.sigma_min))
    config.sde.sigma_max = float(model.get("sigma_max", config.sde.sigma_max))
    config.sde.N = int(model.get("num_scales", config.sde.N))
    config.model.prediction = "score" if sde == "vesde" else "eps"
    config.training.conditional = False  # the official networks are unconditional
    config.model.time_labels = "continuous" if training.get("continuous", True) else "discrete"
    config.data.image_size = int(data["image_size"])
    config.data.num_channels = int(data["num_channels"])
    config.data.centered = bool(data["centered"])
    if str(data.get("dataset", "")).lower() == "cifar10":
        config.data.dataset = "cifar10"


def load_official(config, checkpoint: str, official: Dict[str, Any], device: torch.device) -> LoadedModel:
    """The EMA weights of an official checkpoint in our network (`models.official`).

    `config` must already carry `apply_official_config(config, official)`.
    """
    from models import build_from_official_config, load_checkpoint

    net = build_from_official_config(official)
    state = load_checkpoint(checkpoint, net)
    net.load_state_dict(state["ema"])
    net.to(device).eval().requires_grad_(False)
    sde = factory.build_sde(config)
    step = int(state["step"])
    return LoadedModel(sde, factory.build_score_fn(net, sde, config), net, step, str(checkpoint),
                       f"official_step_{step:08d}")
