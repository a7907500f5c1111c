"""The one factory that reads `config.data`: data sets, scalers, shapes, classes, the toy density.

Fields of `config.data` (ml_collections.ConfigDict or any mapping; missing ones take
`DATA_DEFAULTS`):

  dataset                 one of `DATASETS`
  root                    path of the data (cifar10: default ~/.cache/score_sde/cifar10;
                          image_folder: required)
  download                cifar10: fetch the archive when missing (MD5-checked), default False
  image_size              side of the square images, default 32
  num_channels            3 (RGB) or 1 (grey, image_folder only), default 3
  centered                images in [-1, 1] if True, else [0, 1], default True
  random_flip             left-right flips of training images, default True
  uniform_dequantization  (pixel + U[0,1)) / 256 before scaling, default False
  num_train, num_test     toy set sizes, default 50_000 and 10_000
  num_workers             loader processes (read by the application), default 0
  class_labels            image_folder: label = top-level subfolder, default False
  test_fraction           image_folder without train/ and test/: held-out share, default 0.01

Toy data sets ignore the image fields: their points are already in model space.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from ..oracle import GaussianMixture
from .cifar10 import CIFAR10, DEFAULT_CIFAR10_ROOT
from .image_folder import ImageFolder, class_names, split_folders
from .toy import TOY_NUM_CLASSES, ToyDataset, default_toy_mixture
from .transforms import ImageTransform, TransformedImages, derive_seed, inverse_scaler, scaler

Tensor = torch.Tensor

DATA_DEFAULTS: Dict[str, Any] = {
    "root": None,
    "download": False,
    "image_size": 32,
    "num_channels": 3,
    "centered": True,
    "random_flip": True,
    "uniform_dequantization": False,
    "num_train": 50_000,
    "num_test": 10_000,
    "num_workers": 0,
    "class_labels": False,
    "test_fraction": 0.01,
}

# Data set name -> kind. Toy sets are 2-D points; images are (C, H, W).
DATASETS: Dict[str, str] = {
    "gaussian_mixture": "toy",
    "checkerboard": "toy",
    "swiss_roll": "toy",
    "two_moons": "toy",
    "cifar10": "image",
    "image_folder": "image",
}


def _field(data_cfg, name: str):
    """config.data.<name>, or its default."""
    if isinstance(data_cfg, Mapping) or hasattr(data_cfg, "get"):
        value = data_cfg.get(name, None)
    else:
        value = getattr(data_cfg, name, None)
    if value is None and name == "dataset":
        raise ValueError(
            "config.data has no field 'dataset'; pass the config.data group with dataset set to"
            f" one of {list(DATASETS)}"
        )
    return DATA_DEFAULTS.get(name) if value is None else value


def _dataset_name(data_cfg) -> str:
    name = _field(data_cfg, "dataset")
    if name not in DATASETS:
        raise ValueError(f"config.data.dataset={name!r} is not one of {list(DATASETS)}")
    return name


def is_image_data(data_cfg) -> bool:
    """True for image data sets (cifar10, image_folder), False for 2-D toy sets."""
    return DATASETS[_dataset_name(data_cfg)] == "image"


def _image_fields(data_cfg) -> Tuple[int, int]:
    size, channels = _field(data_cfg, "image_size"), _field(data_cfg, "num_channels")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"config.data.image_size={size!r}: expected an integer >= 1")
    if channels not in (1, 3):
        raise ValueError(f"config.data.num_channels={channels!r} is not one of [1, 3]")
    if _dataset_name(data_cfg) == "cifar10" and channels != 3:
        raise ValueError(f"config.data.num_channels={channels} but CIFAR-10 has 3 channels; set 3")
    return size, channels


def data_shape(data_cfg) -> Tuple[int, ...]:
    """Shape of one example: (2,) for toy sets, (num_channels, image_size, image_size) else."""
    if not is_image_data(data_cfg):
        return (2,)
    size, channels = _image_fields(data_cfg)
    return (channels, size, size)


def data_dim(data_cfg) -> int:
    """Numbers per example, prod(data_shape)."""
    return math.prod(data_shape(data_cfg))


def num_classes(data_cfg) -> int:
    """Classes y can take: mixture components K, 10 for CIFAR-10, the class folders of an image
    folder with class_labels; 0 when unlabelled (y is always 0)."""
    name = _dataset_name(data_cfg)
    if name in TOY_NUM_CLASSES:
        return TOY_NUM_CLASSES[name]
    if name == "cifar10":
        return CIFAR10.num_classes
    if not _field(data_cfg, "class_labels"):
        return 0
    root = _image_folder_root(data_cfg)
    folders = split_folders(root)
    return len(class_names(folders[0] if folders else root))


def toy_density(data_cfg) -> Optional[GaussianMixture]:
    """The exact data density for "gaussian_mixture" (to report the true NLL), else None."""
    return default_toy_mixture() if _dataset_name(data_cfg) == "gaussian_mixture" else None


def data_scaler(data_cfg) -> Callable[[Tensor], Tensor]:
    """[0, 1] -> model space ([-1, 1] if centered); identity for toy sets.

    `build_datasets` already applies it; use it for other data in [0, 1] (e.g. reference images).
    """
    return scaler(bool(_field(data_cfg, "centered")) and is_image_data(data_cfg))


def inverse_data_scaler(data_cfg) -> Callable[[Tensor], Tensor]:
    """Model space -> [0, 1] (images, before saving); identity for toy sets."""
    return inverse_scaler(bool(_field(data_cfg, "centered")) and is_image_data(data_cfg))


def bpd_offset(data_cfg) -> float:
    """Add to nll / (D ln 2) (nats in model space) to get bits/dim of the 8-bit images.

    With uniform dequantisation x01 = (pixel + u) / 256 has density 256^D P(pixels), and model
    space is x01 scaled by 2 when centered, so bits/dim = nll / (D ln 2) + 8 - log2(2) = +7 when
    centered, +8 in [0, 1] (the `offset` of the official `likelihood.py`).

    Raises:
      ValueError: for toy data (no pixels) or without uniform dequantisation (no density).
    """
    if not is_image_data(data_cfg) or not _field(data_cfg, "uniform_dequantization"):
        raise ValueError(
            "bits/dim needs image data with config.data.uniform_dequantization = True"
            f" (dataset={_dataset_name(data_cfg)!r})"
        )
    return 7.0 if _field(data_cfg, "centered") else 8.0


def _image_folder_root(data_cfg):
    root = _field(data_cfg, "root")
    if root is None:
        raise ValueError(
            "config.data.root is required for dataset='image_folder'; set it to the image folder"
        )
    return root


def _transform(data_cfg, train: bool) -> ImageTransform:
    return ImageTransform(
        random_flip=bool(_field(data_cfg, "random_flip")) and train,
        uniform_dequantization=bool(_field(data_cfg, "uniform_dequantization")),
        centered=bool(_field(data_cfg, "centered")),
    )


def build_datasets(data_cfg, seed: int = 0):
    """The train and test sets of `config.data`, items (x, y) in model space.

    x: float32 (2,) for toy sets; float32 (C, H, W) for images, in [-1, 1] when centered else
    [0, 1], flipped (train only) and dequantised as configured, with per-item randomness from
    (seed, epoch, index). y: int label (see `num_classes`), 0 for unlabelled data.

    Args:
      data_cfg: the `config.data` group.
      seed: toy sets: the data are drawn from it; images: seed of flips and dequantisation noise.

    Returns:
      (train_ds, test_ds), map-style torch data sets, to pass to `build_loader`.

    Raises:
      ValueError: an unknown data set name or an invalid field.
      FileNotFoundError: image data missing (the message says where it looked and what to do).
    """
    name = _dataset_name(data_cfg)
    if DATASETS[name] == "toy":
        n_train, n_test = _field(data_cfg, "num_train"), _field(data_cfg, "num_test")
        return (ToyDataset(name, n_train, seed=seed, split="train"),
                ToyDataset(name, n_test, seed=seed, split="test"))
    size, channels = _image_fields(data_cfg)
    if name == "cifar10":
        root = _field(data_cfg, "root") or DEFAULT_CIFAR10_ROOT
        download = bool(_field(data_cfg, "download"))
        bases = [CIFAR10(root, split, image_size=size, download=download)
                 for split in ("train", "test")]
    else:  # image_folder
        root = _image_folder_root(data_cfg)
        bases = [ImageFolder(root, split, image_size=size, num_channels=channels,
                             class_labels=bool(_field(data_cfg, "class_labels")),
                             test_fraction=float(_field(data_cfg, "test_fraction")))
                 for split in ("train", "test")]
    # Test noise from its own stream, so test item i is not dequantised like train item i.
    return (TransformedImages(bases[0], _transform(data_cfg, train=True), seed),
            TransformedImages(bases[1], _transform(data_cfg, train=False), derive_seed(seed, 1)))


__all__ = [
    "DATASETS", "DATA_DEFAULTS", "build_datasets", "data_scaler", "inverse_data_scaler",
    "data_shape", "data_dim", "is_image_data", "num_classes", "toy_density", "bpd_offset",
]
