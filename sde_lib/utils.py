"""Small helpers shared by the whole library: broadcasting and argument checks."""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch


def batch_broadcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-example tensor so that it broadcasts against a batch.

    Args:
      v: shape (B,), one scalar per example.
      x: shape (B, ...), any data shape (vectors or images).

    Returns:
      `v` viewed as (B, 1, ..., 1) with `x.ndim` dimensions, in `x`'s dtype.
    """
    return v.to(x.dtype).reshape(v.shape[0], *([1] * (x.ndim - 1)))


def flat_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every non-batch dimension: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def data_dim(x: torch.Tensor) -> int:
    """Number of scalars per example of a batch (B, ...)."""
    return int(math.prod(x.shape[1:]))


# ----------------------------------------------------------------------------------------------
# Argument checks. Each raises ValueError naming the argument, the value and what is allowed, so
# that a mistake is reported before any work starts.


def check_choice(name: str, value, allowed: Iterable) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}")


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: expected an integer >= 1")
    return value


def check_positive(name: str, value) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)) or not math.isfinite(
        value
    ) or value <= 0:
        raise ValueError(f"{name}={value!r}: expected a finite number > 0")
    return float(value)


def check_end_time(eps, T: float, name: str = "eps", allow_zero: bool = False) -> float:
    """The end time of a reverse-time integration must lie in (0, T) ([0, T) if allow_zero)."""
    ok = isinstance(eps, (int, float)) and not isinstance(eps, bool)
    if not ok or not ((0.0 <= eps if allow_zero else 0.0 < eps) and eps < T):
        interval = "[0, T" if allow_zero else "(0, T"
        raise ValueError(f"{name}={eps!r}: expected a number in the interval {interval}={T})")
    return float(eps)


def check_finite(name: str, x: torch.Tensor) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} holds {bad} non-finite values (NaN or inf); clean the input first")


def check_shape(shape) -> tuple:
    """A sample shape: (batch, *data_shape) with positive integer sizes."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape={shape!r}: expected a tuple like (batch, *data_shape)") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape={shape!r}: expected (batch, *data_shape) with positive sizes")
    return shape


def randn(shape, generator: Optional[torch.Generator] = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` on `device`, drawn from `generator` when given.

    The noise is drawn on the generator's own device and then moved, so a CPU generator pins
    the same numbers whatever device the sampler runs on.
    """
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    z = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    return z if device is None else to_device(z, device)


def to_device(x: torch.Tensor, device) -> torch.Tensor:
    """x moved to `device`; a CPU tensor bound for a GPU goes through pinned memory without
    blocking, so the host does not wait for the GPU's queued work (no synchronisation). A None
    device leaves x where it is."""
    if device is None:
        return x
    device = torch.device(device)
    if x.device == device or x.device.type != "cpu" or device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def randn_like(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard normal noise shaped like `x` (same device and dtype); see `randn`."""
    return randn(x.shape, generator, x.device, x.dtype)
