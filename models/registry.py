"""The model registry and the one factory that reads `config.model`."""
import inspect
from typing import Any, Dict, Mapping

import torch.nn as nn

from .ddpm import DDPM
from .mlp import ScoreMLP
from .ncsnpp import NCSNpp

__all__ = ["MODELS", "IGNORED_FIELDS", "model_options", "build_model"]

MODELS = {"mlp": ScoreMLP, "ddpm": DDPM, "ncsnpp": NCSNpp}

# Fields that official-style `config.model` groups carry but that configure something other than
# the network (the SDE's noise levels, the EMA). `name` selects the network.
IGNORED_FIELDS = frozenset({"name", "ema_rate", "sigma_min", "sigma_max", "num_scales",
                            "beta_min", "beta_max"})


def model_options(name: str) -> Dict[str, Any]:
    """The keyword options of network `name` with their defaults.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; valid: {sorted(MODELS)}.")
    signature = inspect.signature(MODELS[name].__init__)
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
    fields = _as_dict(model_config)
    if "name" not in fields:
        raise ValueError(f"config.model needs a 'name'; valid: {sorted(MODELS)}.")
    name = str(fields["name"]).lower()
    options = model_options(name)
    known_elsewhere = set().union(*(model_options(other) for other in MODELS))
    unknown = sorted(k for k in fields if k not in known_elsewhere and k not in IGNORED_FIELDS)
    if unknown:
        raise ValueError(f"Unknown config.model field(s) {unknown} for model {name!r}; its "
                         f"options are {sorted(options)}.")
    kwargs = {k: v for k, v in fields.items() if k in options}
    return MODELS[name](**kwargs)
