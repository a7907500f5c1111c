"""The 8x8 handwritten digits that ship with scikit-learn (`sklearn.datasets.load_digits`): a real
image data set that needs no download and trains in minutes on a CPU.

1,797 grey images of 8 x 8 pixels with 17 levels (0..16: the count of set pixels in a 4 x 4 block
of the original 32 x 32 bitmaps, UCI "Optical Recognition of Handwritten Digits"), labels 0..9.
Fixed split: of `numpy.random.default_rng(0).permutation(1797)`, the first 1,500 images are the
training split, the other 297 the test split (the same every run, whatever the training seed).
Items are uint8 (1, 8, 8) with values 0..16; `DataSpec` dequantises them over the 17 levels
(`levels = 17`), so bits/dim are those of the 17-level data.
"""
from __future__ import annotations

import functools
import importlib.util
from typing import Tuple

import numpy as np
import torch

from .source import DataSource

DIGITS_SIZE = 8
DIGITS_LEVELS = 17
DIGITS_TRAIN = 1500           # the first 1,500 of the permutation; the other 297 are the test split
DIGITS_SPLIT_SEED = 0         # numpy.random.default_rng(0).permutation(1797)


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits in scikit-learn's order: images uint8 (1797, 1, 8, 8) in 0..16, labels
    int64 (1797,). Read once per process (read-only arrays)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def digits_split_indices(split: str) -> np.ndarray:
    """Indices into `load_digits_arrays()` of the "train" (1,500) or "test" (297) split."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not one of ['train', 'test']")
    n = len(load_digits_arrays()[1])
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(n)
    return perm[:DIGITS_TRAIN] if split == "train" else perm[DIGITS_TRAIN:]


class Digits(torch.utils.data.Dataset):
    """One split of the digits: items (uint8 tensor (1, 8, 8) in 0..16, int label 0..9).

    Attributes:
      images: uint8 (N, 1, 8, 8); labels: int64 (N,); num_classes: 10.
    """

    num_classes = 10

    def __init__(self, split: str = "train"):
        idx = digits_split_indices(split)
        images, labels = load_digits_arrays()
        self.images = torch.from_numpy(images[idx].copy())
        self.labels = torch.from_numpy(labels[idx].copy())
        self.split = split

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class DigitsSource(DataSource):
    """scikit-learn's digits for `DataSpec`: 1 channel, image_size 8, 17 levels, 10 classes."""

    channels = (1,)
    levels = DIGITS_LEVELS

    def check(self, spec) -> None:
        if spec.image_size != DIGITS_SIZE:
            raise ValueError(f"config.data.image_size={spec.image_size} but the digits are"
                             f" {DIGITS_SIZE}x{DIGITS_SIZE}; set --config.data.image_size={DIGITS_SIZE}")

    def num_classes(self, spec) -> int:
        return Digits.num_classes

    def check_available(self, spec) -> None:
        if importlib.util.find_spec("sklearn") is None:
            raise FileNotFoundError("dataset 'digits' needs scikit-learn, which ships them: pip install"
                                    " scikit-learn (a dependency of this package)")

    def split(self, spec, split: str, seed: int) -> Digits:
        return Digits(split)
