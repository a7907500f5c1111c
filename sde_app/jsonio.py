"""Strict JSON for every file the application writes: no bare NaN or Infinity, which strict
parsers reject. A non-finite number is written as null with a note beside it (`<key>_note`)
saying what it was; the values that are undefined by construction (a standard error of one
value) are None with their own note where they are made (`mean_and_stderr`)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch


def _plain(value: Any) -> Any:
    if torch.is_tensor(value):
        value = value.tolist() if value.ndim else value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return value


def strict(value: Any) -> Any:
    """`value` with tuples as lists, tensors and numpy values as Python ones, and every
    non-finite float replaced by None (with a `<key>_note` beside it inside dicts)."""
    value = _plain(value)
    if isinstance(value, dict):
        out: Dict[str, Any] = {}
        for k, v in value.items():
            v = _plain(v)
            if isinstance(v, float) and not math.isfinite(v):
                out[str(k)] = None
                out.setdefault(f"{k}_note", f"not a finite number ({v}); written as null")
            else:
                out[str(k)] = strict(v)
        return out
    if isinstance(value, (list, tuple)):
        return [None if isinstance(v, float) and not math.isfinite(v) else strict(v) for v in map(_plain, value)]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def dumps(value: Any) -> str:
    """Strict JSON text (indent 2)."""
    return json.dumps(strict(value), indent=2, allow_nan=False)


def write_json(path, value: Any) -> Path:
    """Write `value` as strict JSON to `path`, atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dumps(value))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
