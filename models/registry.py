"""The registries of score networks and noise-conditional classifiers, and their factories
(`build_model` reads `config.model`, `build_classifier` reads `config.classifier.model`)."""
import inspect
from typing import Any, Dict, Mapping

import torch.nn as nn

from .classifier import ConvClassifier, MLPClassifier
from .ddpm import DDPM
from .mlp import ScoreMLP
from .ncsnpp import NCSNpp

__all__ = ["MODELS", "CLASSIFIERS", "IGNORED_FIELDS", "model_options", "build_model",
           "build_classifier"]

MODELS = {"mlp": ScoreMLP, "ddpm": DDPM, "ncsnpp": NCSNpp}
# Noise-conditional classifiers p_t(y | x_t): forward(x, labels) -> logits (B, num_classes).
CLASSIFIERS = {"mlp": MLPClassifier, "conv": ConvClassifier}

# Fields that official-style `config.model` groups carry but that configure something other than
# the network (the SDE's noise levels, the EMA). `name` selects the network.
IGNORED_FIELDS = frozenset({"name", "ema_rate", "sigma_min", "sigma_max", "num_scales",
                            "beta_min", "beta_max"})


def model_options(name: str, registry: Mapping[str, type] = MODELS) -> Dict[str, Any]:
    """The keyword options of network `name` of `registry` (default: MODELS) with their defaults.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in registry:
        raise ValueError(f"Unknown model {name!r}; valid: {sorted(registry)}.")
    signature = inspect.signature(registry[name].__init__)
    return {p.name: p.default for p in signature.parameters.values() if p.name != "self"}


def _as_dict(model_config: Any) -> Dict[str, Any]:
    if hasattr(model_config, "to_dict"):  # ml_collections.ConfigDict
        return dict(model_config.to_dict())
    if isinstance(model_config, Mapping):
        return dict(model_config)
    raise TypeError(f"model_config must be a mapping or ConfigDict, got "
                    f"{type(model_config).__name__}.")


def build_model(model_config: Any) -> nn.Module:
    """Build the network named by `model_config.name` from the other fields of `config.model`.

    Fields of the chosen network are passed as keyword arguments (missing ones take the
    network's defaults). Fields that belong to another registered network are ignored, so one
    default model group can serve every architecture; so are `IGNORED_FIELDS`. Any other field is
    an error (most likely a typo).

    Args:
        model_config: the `config.model` group (ConfigDict or mapping) with `name` in `MODELS`.

    Returns:
        The network (on the CPU, in training mode).

    Raises:
        ValueError: for an unknown name or field, or an invalid option value.
        TypeError: if `model_config` is not a mapping.
    """
    return _build(MODELS, model_config, "config.model")


def build_classifier(classifier_config: Any) -> nn.Module:
    """Build the classifier named by `classifier_config.name` (`CLASSIFIERS`) from the other
    fields of `config.classifier.model`, with the rules of `build_model`.

    Raises:
        ValueError: for an unknown name or field, or an invalid option value.
        TypeError: if `classifier_config` is not a mapping.
    """
    return _build(CLASSIFIERS, classifier_config, "config.classifier.model")


def _build(registry: Mapping[str, type], group: Any, where: str) -> nn.Module:
    fields = _as_dict(group)
    if "name" not in fields:
        raise ValueError(f"{where} needs a 'name'; valid: {sorted(registry)}.")
    name = str(fields["name"]).lower()
    options = model_options(name, registry)
    known_elsewhere = set().union(*(model_options(other, registry) for other in registry))
    unknown = sorted(k for k in fields if k not in known_elsewhere and k not in IGNORED_FIELDS)
    if unknown:
        raise ValueError(f"Unknown {where} field(s) {unknown} for model {name!r}; its "
                         f"options are {sorted(options)}.")
    kwargs = {k: v for k, v in fields.items() if k in options}
    return registry[name](**kwargs)
