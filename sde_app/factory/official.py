"""Official score_sde_pytorch configs: read one (as JSON) and set our SDE, score adapter and data
shape from it, so that an official checkpoint can be sampled and evaluated."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict


def read_official_config(path: str) -> Dict[str, Any]:
    """An official config as JSON: the groups `model`, `data`, `training` at the top level or
    under "config" (as in the test fixtures).

    Raises:
      ValueError: unreadable, or a group missing.
    """
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--official_config={path!r} cannot be read as JSON ({err}); dump the"
                         " official config with ConfigDict.to_json_best_effort()") from err
    if not isinstance(cfg, dict):
        raise ValueError(f"--official_config={path!r}: expected a JSON object with groups model, data, training")
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
