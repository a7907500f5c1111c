"""A folder of PNG/JPEG images (CelebA, FFHQ, LSUN, ... exported to files), any sizes.

Files are found recursively (hidden files and folders skipped) and sorted by relative path, so the
order does not depend on the file system. Each image is decoded, converted to RGB (or L),
resized so its shorter side is `image_size` and centre-cropped, as `resize_small` +
`central_crop` in the official code.

Labels: with `class_labels=True`, each top-level subfolder of the split's folder is a class,
numbered in sorted name order; otherwise every label is 0.

Splits: if `root` has both `train/` and `test/` subfolders they are the splits; otherwise all
files are train, and a fixed seeded draw of `round(test_fraction * N)` of them is held out as the
test split (the same draw every run: it does not depend on the training seed).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image

from .source import DataSource
from .transforms import derive_seed, pil_to_uint8, resize_center_crop

Tensor = torch.Tensor
PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_HOLDOUT_SEED = 20210101  # fixed: the test hold-out must not move with the training seed
_MODES = {1: "L", 3: "RGB"}


def list_image_files(folder: PathLike) -> List[Path]:
    """All PNG/JPEG files under `folder`, recursively, sorted by relative path (POSIX form)."""
    folder = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def class_names(folder: PathLike) -> List[str]:
    """Sorted names of the non-hidden top-level subfolders of `folder` (the classes)."""
    entries = Path(folder).iterdir()
    return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def split_folders(root: PathLike) -> Optional[Tuple[Path, Path]]:
    """(root/train, root/test) when both are folders, else None."""
    root = Path(root)
    train, test = root / "train", root / "test"
    return (train, test) if train.is_dir() and test.is_dir() else None


class ImageFolder(torch.utils.data.Dataset):
    """Images from files: items (uint8 tensor (C, S, S), int label).

    Args:
      root: the data set folder (see the module docstring for the layout).
      split: "train" or "test".
      image_size: S, side of the square output.
      num_channels: 3 (RGB) or 1 (grey).
      class_labels: label = index of the top-level subfolder; else 0.
      test_fraction: share of files held out as test when there are no train/ and test/ folders.

    Attributes:
      files: the split's image paths; labels: one int per file; classes: class names ([] without
      class labels); num_classes: len(classes).

    Raises:
      ValueError: bad arguments, or with class_labels an image outside every class folder.
      FileNotFoundError: `root` is missing or holds no image.
    """

    def __init__(self, root: PathLike, split: str = "train", *, image_size: int = 64,
                 num_channels: int = 3, class_labels: bool = False, test_fraction: float = 0.01):
        if split not in ("train", "test"):
            raise ValueError(f"split={split!r} is not one of ['train', 'test']")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size={image_size!r}: expected an integer >= 1")
        if num_channels not in _MODES:
            raise ValueError(f"num_channels={num_channels!r} is not one of {list(_MODES)}")
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction={test_fraction!r}: expected a number in [0, 1)")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"image folder {root} does not exist; set config.data.root to a folder of"
                f" {'/'.join(IMAGE_EXTENSIONS)} files"
            )
        folders = split_folders(root)
        if folders is not None:
            base = folders[0] if split == "train" else folders[1]
            files = list_image_files(base)
            classes = class_names(folders[0]) if class_labels else []
        else:
            base = root
            all_files = list_image_files(root)
            files = self._holdout(all_files, split, test_fraction)
            classes = class_names(root) if class_labels else []
        if not files and not (split == "test" and folders is None):
            raise FileNotFoundError(f"no {'/'.join(IMAGE_EXTENSIONS)} files under {base}")
        class_index = {name: i for i, name in enumerate(classes)}
        self.labels = (
            [self._label(f, base, class_index) for f in files] if class_labels else [0] * len(files)
        )
        self.files, self.classes, self.num_classes = files, classes, len(classes)
        self.root, self.split = root, split
        self.image_size, self.num_channels = image_size, num_channels

    @staticmethod
    def _holdout(files: Sequence[Path], split: str, test_fraction: float) -> List[Path]:
        n_test = round(test_fraction * len(files))
        if n_test == 0:
            return list(files) if split == "train" else []
        g = torch.Generator().manual_seed(derive_seed(_HOLDOUT_SEED, len(files)))
        test_idx = set(torch.randperm(len(files), generator=g)[:n_test].tolist())
        return [f for i, f in enumerate(files) if (i in test_idx) == (split == "test")]

    @staticmethod
    def _label(file: Path, base: Path, class_index: Dict[str, int]) -> int:
        parts = file.relative_to(base).parts
        if len(parts) < 2 or parts[0] not in class_index:
            raise ValueError(
                f"class_labels=True but {file} is not inside a class subfolder of {base}"
                f" (classes {list(class_index)}); move it into one, or set"
                " config.data.class_labels = False"
            )
        return class_index[parts[0]]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        with Image.open(self.files[index]) as img:
            img = img.convert(_MODES[self.num_channels])
        img = resize_center_crop(img, self.image_size)
        return pil_to_uint8(img), self.labels[index]


class ImageFolderSource(DataSource):
    """A folder of images for `DataSpec`: `root` (required), `image_size`, `num_channels`,
    `class_labels`, `test_fraction`."""

    def check(self, spec) -> None:
        if spec.root is None:
            raise ValueError("config.data.root is required for dataset='image_folder'; set it to the image folder")

    def num_classes(self, spec) -> int:
        if not spec.class_labels:
            return 0
        folders = split_folders(spec.root)
        return len(class_names(folders[0] if folders else spec.root))

    def split(self, spec, split: str, seed: int) -> ImageFolder:
        return ImageFolder(spec.root, split, image_size=spec.image_size, num_channels=spec.num_channels,
                           class_labels=spec.class_labels, test_fraction=float(spec.test_fraction))
