"""Reading a configuration: a `configs/*.py` file or a run's `config.json`, then the command line's
`--config.group.field=value` overrides, each checked against the fields that exist.

Every mistake is a `ConfigError` (a ValueError) whose message is one line naming the value and the
fix: a file that does not exist or does not load, a field or group that does not exist (with the
nearest names), a field that moved (`RENAMED`), a value of the wrong type.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import ml_collections

ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A configuration mistake, reported in one line before any work starts."""


# Fields that moved when each sampler's options got their own group (sampling.<method>) and each
# inpainting method its own (controllable.<method>): old dotted name -> new dotted name(s).
RENAMED: Dict[str, Tuple[str, ...]] = {
    "sampling.predictor": ("sampling.pc.predictor",),
    "sampling.corrector": ("sampling.pc.corrector",),
    "sampling.snr": ("sampling.pc.snr",),
    "sampling.n_steps": ("sampling.pc.n_steps",),
    "sampling.probability_flow": ("sampling.pc.probability_flow",),
    "sampling.corrector_update": ("sampling.pc.corrector_update",),
    "sampling.step_size_rule": ("sampling.pc.step_size_rule",),
    "sampling.schedule": ("sampling.pc.schedule", "sampling.ddim.schedule", "sampling.dpm_solver.schedule",
                          "sampling.langevin.schedule"),
    "sampling.order": ("sampling.dpm_solver.order",),
    "sampling.solver": ("sampling.ode.solver",),
    "sampling.rtol": ("sampling.ode.rtol", "sampling.sde_solver.rtol"),
    "sampling.atol": ("sampling.ode.atol", "sampling.sde_solver.atol"),
    "sampling.eta": ("sampling.ddim.eta",),
    "sampling.n_steps_each": ("sampling.langevin.n_steps_each",),
    "sampling.step_lr": ("sampling.langevin.step_lr",),
    "controllable.jump": ("controllable.repaint.jump",),
    "controllable.resample": ("controllable.repaint.resample",),
    "controllable.particles": ("controllable.smc.particles",),
    "controllable.ess_threshold": ("controllable.smc.ess_threshold",),
}
# Groups whose fields are a network's options: a config file adds the ones its network takes.
OPEN_GROUPS = ("model", "classifier.model")
# A field that became a group: `sampling.sde_solver` named the torchsde solver.
BECAME_GROUP: Dict[str, str] = {"sampling.sde_solver": "sampling.sde_solver.solver"}


# ----------------------------------------------------------------------------------- files
def load_config(path: str) -> ml_collections.ConfigDict:
    """The configuration in `path`: a Python file with `get_config()` (configs/*.py), or the
    `config.json` a run writes into its workdir (read onto `configs.default_config()`, so every
    field keeps its type; moved fields are carried to their new place).

    Raises:
      ConfigError: the file does not exist, does not load, or holds unknown fields.
    """
    p = Path(path)
    if not p.is_file():
        hint = " (a directory: pass the config file inside it)" if p.is_dir() else ""
        raise ConfigError(f"--config={path!r}: no such file{hint}; pass a configs/*.py file, e.g."
                          " --config=configs/vp_toy.py, or a run's config.json")
    if p.suffix == ".json":
        return _load_json(p)
    if p.suffix != ".py":
        raise ConfigError(f"--config={path!r}: expected a .py config file (configs/*.py) or a run's"
                          " config.json")
    name = f"_score_sde_config_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    if str(ROOT) not in sys.path:  # config files import `configs`
        sys.path.insert(0, str(ROOT))
    try:
        spec.loader.exec_module(module)
        get_config = getattr(module, "get_config")
        config = get_config()
    except AttributeError as err:
        if "get_config" in str(err):
            raise ConfigError(f"--config={path!r} has no get_config() function") from err
        raise ConfigError(f"--config={path!r} fails to build its config: {type(err).__name__}: {err}") from err
    except Exception as err:  # a user's file: report any failure in one line
        first = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(f"--config={path!r} fails to load: {type(err).__name__}: {first}") from err
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"--config={path!r}: get_config() returned {type(config).__name__}, not an"
                          " ml_collections.ConfigDict")
    return config


def _load_json(path: Path) -> ml_collections.ConfigDict:
    from configs import default_config

    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"--config={str(path)!r} cannot be read as JSON ({err})") from err
    if not isinstance(values, dict):
        raise ConfigError(f"--config={str(path)!r}: expected a JSON object of config groups")
    config = default_config()
    for dotted, value in _flatten(values):
        target = _moved_target(dotted, value, values)
        if target is None or value == {}:  # an empty group (a method without options)
            continue
        parent_name, _, key = target.rpartition(".")
        if parent_name in OPEN_GROUPS and key not in _get(config, parent_name):
            # a network option that a config file added (lists were tuples there)
            _get(config, parent_name)[key] = tuple(value) if isinstance(value, list) else value
            continue
        _assign(config, target, value, source=f"{path.name}: {dotted}")
    return config


def _flatten(values: Dict[str, Any], prefix: str = "") -> Iterable[Tuple[str, Any]]:
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


def _moved_target(dotted: str, value: Any, values: Dict[str, Any]) -> Optional[str]:
    """Where a field of an older config.json lives now (None: nothing to carry)."""
    if dotted in BECAME_GROUP and not isinstance(value, dict):
        return BECAME_GROUP[dotted]
    if dotted not in RENAMED:
        return dotted
    targets = RENAMED[dotted]
    if len(targets) == 1:
        return targets[0]
    group = dotted.split(".")[0]
    method = values.get(group, {}).get("method")
    chosen = [t for t in targets if t.split(".")[1] == method]
    return chosen[0] if chosen and value is not None else None


# ------------------------------------------------------------------------------- overrides
def apply_overrides(config: ml_collections.ConfigDict, overrides: List[Tuple[str, str]]) -> None:
    """Apply `--config.<dotted>=<text>` overrides in order, parsing each text as the field's type
    (numbers, booleans true/false, tuples as "(1, 2)", None for optional fields).

    Raises:
      ConfigError: a field that does not exist or moved, or a value of the wrong type.
    """
    for dotted, text in overrides:
        _assign(config, dotted, text, source=f"--config.{dotted}", parse=True)


def _field_names(config: ml_collections.ConfigDict, prefix: str = "") -> List[str]:
    names = []
    for key in config.keys():
        value = config[key]
        dotted = f"{prefix}{key}"
        names.append(dotted)
        if isinstance(value, ml_collections.ConfigDict):
            names += _field_names(value, dotted + ".")
    return names


def _unknown_field(config, dotted: str, source: str) -> ConfigError:
    if dotted in BECAME_GROUP:
        new = BECAME_GROUP[dotted]
        return ConfigError(f"{source}: config.{dotted} is now a group; set --config.{new}=... instead")
    if dotted in RENAMED:
        new = RENAMED[dotted]
        where = " or ".join(f"--config.{n}" for n in new)
        return ConfigError(f"{source}: config.{dotted} moved (each method's options have their own group);"
                           f" use {where}")
    names = _field_names(config)
    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    close = difflib.get_close_matches(dotted, names, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join('config.' + c for c in close)}?" if close else ""
    if parent and parent not in names:
        groups = sorted(n for n in names if "." not in n and isinstance(config[n], ml_collections.ConfigDict))
        if not close:
            hint = f"; config groups: {', '.join(groups)}"
        return ConfigError(f"{source}: config has no group {parent.split('.')[0]!r}{hint}")
    if not close:
        group = _get(config, parent) if parent else config
        hint = f"; fields of config.{parent}: {', '.join(sorted(group.keys()))}" if parent else ""
    return ConfigError(f"{source}: config has no field {dotted!r}{hint} (docs/app.md lists every field)")


def _get(config, dotted: str):
    node = config
    for key in dotted.split("."):
        node = node[key]
    return node


def _assign(config, dotted: str, value: Any, *, source: str, parse: bool = False) -> None:
    parent_name, _, key = dotted.rpartition(".")
    try:
        parent = _get(config, parent_name) if parent_name else config
    except (KeyError, AttributeError, TypeError):
        raise _unknown_field(config, dotted, source) from None
    if not isinstance(parent, ml_collections.ConfigDict) or key not in parent:
        raise _unknown_field(config, dotted, source)
    if isinstance(parent[key], ml_collections.ConfigDict):
        if dotted in BECAME_GROUP:
            raise _unknown_field(config, dotted, source)
        raise ConfigError(f"{source}: config.{dotted} is a group; set one of its fields, e.g."
                          f" --config.{dotted}.{sorted(parent[key].keys())[0]}=..."
                          if len(parent[key].keys()) else f"{source}: config.{dotted} is an empty group")
    field_type = parent.get_type(key)
    if parse:
        value = _parse(value, field_type, f"{source}={value}")
    elif field_type is tuple and isinstance(value, list):
        value = tuple(value)
    try:
        parent[key] = value
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {value!r} is not a valid {field_type.__name__} for config.{dotted}"
                          f" ({str(err).splitlines()[0]})") from err


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _parse(text: str, field_type: type, where: str) -> Any:
    """The command-line text of a field of `field_type`."""
    if text.strip() == "None" and field_type is not bool:
        return None
    try:
        if field_type is bool:
            low = text.strip().lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError("expected true or false")
        if field_type is int:
            return int(text)
        if field_type is float:
            return float(text)
        if field_type is str:
            return text
        if field_type is tuple:
            value = ast.literal_eval(text)
            return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    except (ValueError, SyntaxError) as err:
        raise ConfigError(f"{where}: not a valid {field_type.__name__} ({err})") from None
    try:  # object fields (class labels, guidance scales): a Python literal, else the text
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return tuple(value) if isinstance(value, list) else value


def split_config_args(argv: List[str], default_path: str) -> Tuple[str, List[Tuple[str, str]], List[str]]:
    """Split a command line into (config path, [(dotted field, text)], the other arguments).

    `--config PATH`, `--config=PATH`, `--config.a.b=V` and `--config.a.b V` are recognised.

    Raises:
      ConfigError: an override without a value.
    """
    path, overrides, rest = default_path, [], [argv[0]] if argv else []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-config"):
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a file, e.g. --config=configs/vp_toy.py")
            path, i = argv[i + 1], i + 2
            continue
        if arg.startswith(("--config=", "-config=")):
            path, i = arg.split("=", 1)[1], i + 1
            continue
        if arg.startswith(("--config.", "-config.")):
            body = arg.split(".", 1)[1]
            if "=" in body:
                dotted, text = body.split("=", 1)
                i += 1
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                dotted, text, i = body, argv[i + 1], i + 2
            else:
                raise ConfigError(f"{arg}: no value; write --config.{body}=VALUE")
            overrides.append((dotted, text))
            continue
        rest.append(arg)
        i += 1
    return path, overrides, rest


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """The configuration as JSON (what checkpoints store and `load_config` reads back)."""
    return config.to_json_best_effort(sort_keys=True, indent=2)
