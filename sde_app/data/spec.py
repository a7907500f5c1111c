"""What a run knows about its data: `DataSpec`, built by the factory from `config.data`.

Fields (docs/data.md):

  dataset                 one of `DATASETS`
  root                    path of the data (cifar10: default ~/.cache/score_sde/cifar10;
                          image_folder: required)
  download                cifar10: fetch the archive when missing (MD5-checked)
  image_size              side of the square images
  num_channels            3 (RGB) or 1 (grey, image_folder only)
  centered                images in [-1, 1] if True, else [0, 1]
  random_flip             left-right flips of training images
  uniform_dequantization  (pixel + U[0,1)) / L before scaling (L = `levels`: 256 for 8-bit
                          images, 17 for the digits)
  num_train, num_test     toy set sizes
  num_workers             loader processes
  class_labels            image_folder: label = top-level subfolder
  test_fraction           image_folder without train/ and test/: held-out share

Toy data sets ignore the image fields: their points are already in model space.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Tuple

import torch

from sde_lib.learned_variance import Decoder
from sde_lib.oracle import GaussianMixture

from .cifar10 import CIFAR10Source
from .digits import DigitsSource
from .image_folder import ImageFolderSource
from .source import DataSource
from .toy import ToySource
from .transforms import ImageTransform, TransformedImages, derive_seed, inverse_scaler, scaler

Tensor = torch.Tensor

# Data set name -> its source (`source.DataSource`): toy sets of 2-D points, images (C, H, W).
DATASETS = {
    "gaussian_mixture": ToySource("gaussian_mixture"),
    "checkerboard": ToySource("checkerboard"),
    "swiss_roll": ToySource("swiss_roll"),
    "two_moons": ToySource("two_moons"),
    "cifar10": CIFAR10Source(),
    "image_folder": ImageFolderSource(),
    "digits": DigitsSource(),
}


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A data set and how it is read (fields: see the module docstring). Construction checks
    every field and raises ValueError naming it."""

    dataset: str = "cifar10"
    root: Optional[str] = None
    download: bool = False
    image_size: int = 32
    num_channels: int = 3
    centered: bool = True
    random_flip: bool = True
    uniform_dequantization: bool = False
    num_train: int = 50_000
    num_test: int = 10_000
    num_workers: int = 0
    class_labels: bool = False
    test_fraction: float = 0.01

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"config.data.dataset={self.dataset!r} is not one of {list(DATASETS)}")
        for name in ("num_train", "num_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"config.data.{name}={value!r}: expected an integer >= 1")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"config.data.num_workers={self.num_workers!r}: expected an integer >= 0")
        if self.is_image:
            size, channels = self.image_size, self.num_channels
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"config.data.image_size={size!r}: expected an integer >= 1")
            if channels not in (1, 3):
                raise ValueError(f"config.data.num_channels={channels!r} is not one of [1, 3]")
            if channels not in self.source.channels:
                raise ValueError(f"config.data.num_channels={channels} but {self.dataset} has"
                                 f" {' or '.join(map(str, self.source.channels))} channels; set"
                                 f" {self.source.channels[0]}")
            self.source.check(self)
            if not (0.0 < float(self.test_fraction) < 1.0):
                raise ValueError(f"config.data.test_fraction={self.test_fraction!r}: expected a number"
                                 " in (0, 1)")

    # ------------------------------------------------------------------------------ shape
    @property
    def source(self) -> DataSource:
        return DATASETS[self.dataset]

    @property
    def is_image(self) -> bool:
        """True for image data sets (cifar10, image_folder), False for 2-D toy sets."""
        return self.source.kind == "image"

    @property
    def shape(self) -> Tuple[int, ...]:
        """Shape of one example: (dim,) for toy sets, (num_channels, image_size, image_size) else."""
        return (self.num_channels, self.image_size, self.image_size) if self.is_image else (self.source.dim,)

    @property
    def dim(self) -> int:
        """Numbers per example, prod(shape)."""
        return math.prod(self.shape)

    @property
    def levels(self) -> int:
        """Quantisation levels of the image values (256 for 8-bit images, 17 for the digits)."""
        return self.source.levels

    @property
    def num_classes(self) -> int:
        """Classes y can take: mixture components K, 10 for CIFAR-10, the class folders of an
        image folder with class_labels; 0 when unlabelled (y is always 0)."""
        return self.source.num_classes(self)

    def vlb_decoder(self) -> Decoder:
        """L_0's decoder of the discrete variational bound (`sde_lib.learned_variance`): the
        discretised Gaussian over the image's `levels` in model space ([-1, 1] or [0, 1]), or a
        Gaussian density for the continuous toy data."""
        if not self.is_image:
            return Decoder(kind="gaussian")
        return Decoder(kind="discretized", bins=self.levels, low=-1.0 if self.centered else 0.0, high=1.0)

    # ----------------------------------------------------------------------------- values
    def scaler(self) -> Callable[[Tensor], Tensor]:
        """[0, 1] -> model space ([-1, 1] if centered); identity for toy sets."""
        return scaler(self.centered and self.is_image)

    def inverse_scaler(self) -> Callable[[Tensor], Tensor]:
        """Model space -> [0, 1] (images, before saving); identity for toy sets."""
        return inverse_scaler(self.centered and self.is_image)

    def toy_density(self) -> Optional[GaussianMixture]:
        """The exact data density for "gaussian_mixture" (to report the true NLL), else None."""
        return self.source.density(self)

    def dequantized(self) -> "DataSpec":
        """The same data read with uniform dequantisation (what bits/dim is measured on)."""
        return dataclasses.replace(self, uniform_dequantization=True) if self.is_image else self

    def check_available(self) -> None:
        """Raise FileNotFoundError (naming where it looked and what to do) if files are missing."""
        self.source.check_available(self)

    def check_readable(self, seed: int = 0) -> Tuple[int, int]:
        """Open both splits and read their first items: (number of train items, of test items).

        Raises:
          FileNotFoundError, ValueError: missing, damaged or unreadable data, naming the file.
        """
        train, test = self.datasets(seed)
        for split in (train, test):
            if len(split):
                split[0]
        return len(train), len(test)

    # ---------------------------------------------------------------------------- data sets
    def _transform(self, train: bool) -> ImageTransform:
        return ImageTransform(random_flip=self.random_flip and train,
                              uniform_dequantization=self.uniform_dequantization, centered=self.centered,
                              levels=self.levels)

    def datasets(self, seed: int = 0):
        """The train and test sets, items (x, y) in model space.

        x: float32 (2,) for toy sets; float32 (C, H, W) for images, in [-1, 1] when centered else
        [0, 1], flipped (train only) and dequantised as configured, with per-item randomness from
        (seed, epoch, index). y: int label (see `num_classes`), 0 for unlabelled data.

        Args:
          seed: toy sets: the data are drawn from it; images: seed of flips and dequantisation.

        Returns:
          (train_ds, test_ds), map-style torch data sets, to pass to `build_loader`.

        Raises:
          FileNotFoundError: image data missing (the message says where it looked and what to do).
          ValueError: a damaged archive or folder (the message names the file).
        """
        train, test = (self.source.split(self, split, seed) for split in ("train", "test"))
        if not self.is_image:
            return train, test
        # Test noise from its own stream, so test item i is not dequantised like train item i.
        return (TransformedImages(train, self._transform(train=True), seed),
                TransformedImages(test, self._transform(train=False), derive_seed(seed, 1)))
