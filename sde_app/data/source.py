"""What a data set tells `DataSpec`: the base class of the entries of `spec.DATASETS`.

A new data set is one module with a `DataSource` subclass and one registry entry.
"""
from __future__ import annotations

from typing import ClassVar, Tuple

import torch


class DataSource:
    """A data set's kind, classes, files and splits.

    Class attributes:
      kind: "toy" (points already in model space, shape (dim,)) or "image" (uint8 (C, H, W)
        items that `DataSpec` flips, dequantises and scales).
      channels: the image channels it can provide.
      dim: the points' dimension (toy sets).
      levels: the quantisation levels of the stored image values 0..levels-1 (256 for 8-bit
        images); dequantisation and bits/dim are over these levels.
    """

    kind: ClassVar[str] = "image"
    channels: ClassVar[Tuple[int, ...]] = (1, 3)
    dim: ClassVar[int] = 2
    levels: ClassVar[int] = 256

    def check(self, spec) -> None:
        """Field combinations this data set cannot serve (ValueError naming the field)."""

    def num_classes(self, spec) -> int:
        """Classes y can take (0: unlabelled, y is always 0)."""
        return 0

    def check_available(self, spec) -> None:
        """Raise FileNotFoundError (naming where it looked and what to do) if files are missing."""

    def split(self, spec, split: str, seed: int) -> torch.utils.data.Dataset:
        """The "train" or "test" split: items (x, y); uint8 (C, S, S) images of
        spec.image_size, or float32 points in model space for toy sets."""
        raise NotImplementedError

    def density(self, spec):
        """The exact data density (a `sde_lib.oracle.GaussianMixture`) where known, else None."""
        return None
