"""Image transforms: resize and centre crop, random flip, uniform dequantisation, scaling.

The pipeline of Song et al. (2021), `datasets.py` of the official code, in torch:

    uint8 image (C, H, W) in {0..255}
      -> resize the shorter side to image_size (antialiased) and centre crop   [geometry]
      -> random horizontal flip                                                [training only]
      -> x01 = pixel / (L - 1), or (pixel + U[0, 1)) / L with uniform dequantisation
         (L = the data's quantisation levels: 256 for 8-bit images)
      -> model space: 2 x01 - 1 when centered, else x01                       [data_scaler]

All randomness of one item comes from a generator seeded with (seed, epoch, index), so a batch
does not depend on the number of loader workers, nor on what was loaded before it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

Tensor = torch.Tensor

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    """One step of the splitmix64 finaliser (Steele et al., 2014): a bijective 64-bit mix."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key, e.g. derive_seed(seed, epoch, index).

    Nearby keys give unrelated seeds, unlike `seed + index`. Pure Python, about a microsecond.

    Args:
      keys: integers (negative ones are taken modulo 2^64).

    Returns:
      an int in [0, 2^63), valid for `torch.Generator.manual_seed`.
    """
    h = 0
    for k in keys:
        h = _splitmix64(h ^ (int(k) & _MASK64))
    return h >> 1


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The CPU generator that owns all randomness of item `index` in `epoch`."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, index))


# ---------------------------------------------------------------------------------- geometry
def resize_center_crop(img: Image.Image, image_size: int) -> Image.Image:
    """Resize the shorter side to `image_size` (bicubic, antialiased), then centre crop a square.

    PIL widens its filter when it downsamples, so this is antialiased like
    `tf.image.resize(..., antialias=True)` in the official code.

    Args:
      img: a PIL image of any size and mode.
      image_size: side of the square output, in pixels.

    Returns:
      a PIL image of size (image_size, image_size), same mode.
    """
    w, h = img.size
    if min(w, h) != image_size:
        scale = image_size / min(w, h)
        new_w = max(image_size, round(w * scale))
        new_h = max(image_size, round(h * scale))
        img = img.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
        w, h = img.size
    left, top = (w - image_size) // 2, (h - image_size) // 2
    if (w, h) != (image_size, image_size):
        img = img.crop((left, top, left + image_size, top + image_size))
    return img


def pil_to_uint8(img: Image.Image) -> Tensor:
    """PIL image (mode L or RGB) -> uint8 tensor (C, H, W), C = 1 or 3."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())  # PIL's buffer is read-only


# ---------------------------------------------------------------------------------- scaling
def _identity(x: Tensor) -> Tensor:
    return x


def _to_centered(x: Tensor) -> Tensor:
    return 2.0 * x - 1.0


def _from_centered(x: Tensor) -> Tensor:
    return (x + 1.0) / 2.0


def scaler(centered: bool) -> Callable[[Tensor], Tensor]:
    """[0, 1] -> model space: [-1, 1] when `centered`, else unchanged (the official scaler)."""
    return _to_centered if centered else _identity


def inverse_scaler(centered: bool) -> Callable[[Tensor], Tensor]:
    """Model space -> [0, 1], the inverse of `scaler(centered)` (`get_data_inverse_scaler`)."""
    return _from_centered if centered else _identity


def to_uint8(x01: Tensor) -> Tensor:
    """Images in [0, 1] (any float shape) -> uint8 in {0..255}, rounded and clipped, for saving."""
    return (x01 * 255.0).round().clamp(0, 255).to(torch.uint8)


def quantize(x01: Tensor, levels: int = 256) -> Tensor:
    """Images in [0, 1] rounded to the nearest of `levels` evenly spaced values k / (levels - 1),
    clipped to [0, 1]: a sample as the data's own quantisation would store it."""
    top = float(levels - 1)
    return (x01 * top).round().clamp(0, top) / top


@dataclass(frozen=True)
class ImageTransform:
    """uint8 image -> float32 image in model space: flip, dequantise, scale.

    Args:
      random_flip: flip left-right with probability 1/2 (use for training only).
      uniform_dequantization: x01 = (pixel + u) / L with u ~ U[0, 1) per value, so that x01 has
        a density (for likelihood training); else x01 = pixel / (L - 1).
      centered: scale x01 to [-1, 1]; else keep [0, 1].
      levels: L, the quantisation levels of the stored values 0..L-1 (256 for 8-bit images).
    """

    random_flip: bool = False
    uniform_dequantization: bool = False
    centered: bool = True
    levels: int = 256

    def __call__(self, img: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Apply the transform to one image.

        Args:
          img: uint8 tensor (C, H, W).
          generator: source of the flip and dequantisation noise (pass `item_generator(...)`).

        Returns:
          float32 tensor (C, H, W), in [-1, 1] when centered, else [0, 1].
        """
        if img.dtype != torch.uint8 or img.ndim != 3:
            raise ValueError(
                f"img has dtype {img.dtype} and shape {tuple(img.shape)}; expected uint8 (C, H, W)"
            )
        # Draw the flip first and the noise second, always, so each stream is fixed per item.
        if self.random_flip and torch.rand((), generator=generator).item() < 0.5:
            img = img.flip(-1)
        x = img.to(torch.float32)
        if self.uniform_dequantization:
            x01 = (x + torch.rand(x.shape, generator=generator)) / self.levels
        else:
            x01 = x / (self.levels - 1)
        return scaler(self.centered)(x01)


ItemKey = Union[int, Tuple[int, int]]


def split_key(key: ItemKey) -> Tuple[int, int]:
    """A dataset key -> (index, epoch): an int is item `key` in epoch 0."""
    if isinstance(key, tuple):
        index, epoch = key
        return int(index), int(epoch)
    return int(key), 0


class TransformedImages(torch.utils.data.Dataset):
    """Model-space view of a uint8 image data set: items (x float32 (C, H, W), y int).

    Keys are an index, or (index, epoch) as yielded by `ResumableBatchSampler`; the item's flip and
    dequantisation noise come from `item_generator(seed, epoch, index)`.

    Args:
      base: a data set of (uint8 tensor (C, H, W), int label).
      transform: the `ImageTransform` to apply.
      seed: base seed of the per-item randomness.
    """

    takes_epoch = True  # the loader passes (index, epoch) keys

    def __init__(self, base: torch.utils.data.Dataset, transform: ImageTransform, seed: int = 0):
        self.base = base
        self.transform = transform
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: ItemKey) -> Tuple[Tensor, int]:
        index, epoch = split_key(key)
        img, y = self.base[index]
        return self.transform(img, item_generator(self.seed, epoch, index)), y

    def __getattr__(self, name):
        # Facts of the base set (num_classes, classes, image_size, ...) read through.
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)
