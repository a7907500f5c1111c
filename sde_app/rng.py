"""Capture and restore every random number generator a training run draws from, as plain
tensors and lists (checkpoint-safe under `torch.load(weights_only=True)`)."""
from __future__ import annotations

import random
from typing import Any, Dict, Optional

import numpy as np
import torch


def capture(loss_generator: torch.Generator) -> Dict[str, Any]:
    """Python, numpy, torch (CPU and CUDA) and the loss's generator states of this process."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos),
                  int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        "loss": loss_generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: Dict[str, Any], loss_generator: Optional[torch.Generator]) -> None:
    """Inverse of `capture`."""
    version, py_state, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in py_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu())
    if loss_generator is not None:
        loss_generator.set_state(state["loss"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_all(seed: int) -> None:
    """Seed Python, numpy and torch (all devices) of this process."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
