"""Embedded 2-D data sets: a Gaussian mixture with exact density, checkerboard, swiss roll, moons.

Each is a finite tensor data set drawn once from a seed, at the scale of the VP prior N(0, I)
(roughly unit-to-two std per coordinate). No download, no transforms: the points are already in
model space.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from sde_lib.oracle import GaussianMixture

from .source import DataSource
from .transforms import derive_seed

Tensor = torch.Tensor

# The default mixture, written out: (weight, mean, (std along the major axis, std along the
# minor axis), angle of the major axis in degrees from the x-axis). Eight components with unequal
# weights; 0 and 1 overlap, and so do 2 and 3, which makes about 12% of samples ambiguous
# (largest component posterior < 0.9); 4 is a thin bar; 7 is a small, light, isolated mode that a
# poor model drops. Mixture mean (-0.002, -0.087), per-coordinate std (1.89, 1.54), entropy
# 2.248 +- 0.002 nats (Monte Carlo, GaussianMixture.entropy(200_000)).
DEFAULT_MIXTURE_COMPONENTS = (
    (0.22, (-2.0, -1.2), (0.65, 0.20), 30.0),
    (0.16, (-1.2, -0.5), (0.45, 0.15), -50.0),
    (0.14, (1.6, 1.9), (0.55, 0.25), 75.0),
    (0.12, (2.4, 1.2), (0.35, 0.12), 10.0),
    (0.10, (0.3, -2.4), (0.60, 0.10), 0.0),
    (0.08, (-0.2, 1.0), (0.30, 0.22), 45.0),
    (0.11, (2.6, -1.4), (0.50, 0.30), -35.0),
    (0.07, (-2.6, 2.3), (0.18, 0.10), 60.0),
)


def rotated_covariance(stds: Tuple[float, float], angle_deg: float) -> np.ndarray:
    """Sigma = R diag(stds^2) R^T, with R the rotation by `angle_deg`; (2, 2) float64."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return rot @ np.diag(np.square(stds)) @ rot.T


def default_toy_mixture() -> GaussianMixture:
    """The 8-component 2-D mixture of `DEFAULT_MIXTURE_COMPONENTS`, a fresh object each call."""
    weights = [c[0] for c in DEFAULT_MIXTURE_COMPONENTS]
    means = [c[1] for c in DEFAULT_MIXTURE_COMPONENTS]
    covs = np.stack([rotated_covariance(c[2], c[3]) for c in DEFAULT_MIXTURE_COMPONENTS])
    return GaussianMixture(weights, means, covs)


# ------------------------------------------------------------------------- samplers (n, generator)
# Each returns (x float32 (n, 2), y int64 (n,)).


def sample_gaussian_mixture(n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """The default mixture; y is the component index in [0, 8)."""
    x, y = default_toy_mixture().sample(n, generator=generator, return_labels=True)
    return x, y.long()


def sample_checkerboard(n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """Uniform on the 8 dark cells of a 4 x 4 board of unit cells on [-2, 2]^2; y = 0.

    A cell (i, j), i, j in {-2..1}, is dark when i + j is even. Std per coordinate sqrt(4/3).
    """
    cell = torch.randint(0, 8, (n,), generator=generator)
    row = cell // 2                                       # 0..3, the y cell
    col = 2 * (cell % 2) + (row % 2)                      # 0..3, the x cell: (col + row) even
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    x = torch.stack([col + u[:, 0], row + u[:, 1]], dim=1) - 2.0
    return x.float(), torch.zeros(n, dtype=torch.long)


def sample_swiss_roll(n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """t ~ 1.5 pi (1 + 2 U), x = (t cos t, t sin t) / 5 + 0.1 N(0, I); y = 0.

    The 2-D slice of scikit-learn's `make_swiss_roll` scaled by 1/5 as in FFJORD (Grathwohl et al.,
    2019), with noise std 0.1 in these units. Range about [-2.8, 2.8].
    """
    t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=generator, dtype=torch.float64))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 5.0
    x = x + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return x.float(), torch.zeros(n, dtype=torch.long)


def sample_two_moons(n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """scikit-learn's `make_moons` (noise 0.1), centred and scaled by 2; y = 0.

    Upper moon (cos s, sin s), lower moon (1 - cos s, 0.5 - sin s), s ~ U[0, pi], a fair coin picks
    the moon; then x <- 2 (x - (0.5, 0.25)). Std per coordinate about (1.7, 1.0).
    """
    s = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    lower = torch.rand(n, generator=generator) < 0.5
    upper_pts = torch.stack([torch.cos(s), torch.sin(s)], dim=1)
    lower_pts = torch.stack([1.0 - torch.cos(s), 0.5 - torch.sin(s)], dim=1)
    x = torch.where(lower[:, None], lower_pts, upper_pts)
    x = x + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    x = 2.0 * (x - torch.tensor([0.5, 0.25], dtype=torch.float64))
    return x.float(), torch.zeros(n, dtype=torch.long)


TOY_SAMPLERS: Dict[str, Callable[[int, torch.Generator], Tuple[Tensor, Tensor]]] = {
    "gaussian_mixture": sample_gaussian_mixture,
    "checkerboard": sample_checkerboard,
    "swiss_roll": sample_swiss_roll,
    "two_moons": sample_two_moons,
}

# Number of classes y can take (0: unlabelled, y is always 0).
TOY_NUM_CLASSES: Dict[str, int] = {
    "gaussian_mixture": len(DEFAULT_MIXTURE_COMPONENTS),
    "checkerboard": 0,
    "swiss_roll": 0,
    "two_moons": 0,
}

_SPLIT_KEYS = {"train": 0, "test": 1}


class ToyDataset(torch.utils.data.Dataset):
    """A finite 2-D data set drawn once: items (x float32 (2,), y int).

    The split's points come from a generator seeded with derive_seed(seed, split), so train and
    test are independent streams and neither depends on the other's size.

    Args:
      name: one of `TOY_SAMPLERS`.
      n: number of points, >= 1.
      seed: data seed.
      split: "train" or "test".

    Attributes:
      x: float32 (n, 2); y: int64 (n,) component label for the mixture, else zeros.
      num_classes: K = 8 for the mixture, 0 for the others.
      density: the `GaussianMixture` for "gaussian_mixture" (exact log p), else None.

    Raises:
      ValueError: for an unknown name or split, or n < 1.
    """

    def __init__(self, name: str, n: int, *, seed: int = 0, split: str = "train"):
        if name not in TOY_SAMPLERS:
            raise ValueError(f"toy data set {name!r} is not one of {list(TOY_SAMPLERS)}")
        if split not in _SPLIT_KEYS:
            raise ValueError(f"split={split!r} is not one of {list(_SPLIT_KEYS)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}: expected an integer >= 1 (config.data.num_train/num_test)")
        self.name, self.split, self.seed = name, split, int(seed)
        g = torch.Generator().manual_seed(derive_seed(self.seed, _SPLIT_KEYS[split]))
        self.x, self.y = TOY_SAMPLERS[name](n, g)
        self.num_classes = TOY_NUM_CLASSES[name]
        self.density: Optional[GaussianMixture] = (
            default_toy_mixture() if name == "gaussian_mixture" else None
        )

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        return self.x[index], int(self.y[index])


class ToySource(DataSource):
    """A 2-D toy set of `TOY_SAMPLERS` for `DataSpec` (sizes `num_train`, `num_test`)."""

    kind = "toy"

    def __init__(self, name: str):
        self.name = name

    def num_classes(self, spec) -> int:
        return TOY_NUM_CLASSES[self.name]

    def split(self, spec, split: str, seed: int) -> ToyDataset:
        return ToyDataset(self.name, spec.num_train if split == "train" else spec.num_test, seed=seed, split=split)

    def density(self, spec) -> Optional[GaussianMixture]:
        return default_toy_mixture() if self.name == "gaussian_mixture" else None
