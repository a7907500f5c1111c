"""CIFAR-10 (Krizhevsky, 2009) from its official python archive, without torchvision.

Accepted layouts, looked up in this order under `root`:
  1. `root` is the archive file `cifar-10-python.tar.gz` (read directly, nothing extracted);
  2. `root` is the extracted folder `cifar-10-batches-py/`;
  3. `root/cifar-10-batches-py/`;
  4. `root/cifar-10-python.tar.gz`.
Each batch file is a pickle of a dict with b"data" uint8 (N, 3072), row-major (3, 32, 32) per
row (all red, then green, then blue values), b"labels" (N ints in 0..9), b"batch_label",
b"filenames". Train = data_batch_1..5 (50,000 images), test = test_batch (10,000).
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .download import download_file
from .source import DataSource
from .transforms import pil_to_uint8, resize_center_crop

Tensor = torch.Tensor
PathLike = Union[str, os.PathLike]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# MD5 of cifar-10-python.tar.gz, as published on https://www.cs.toronto.edu/~kriz/cifar.html
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_DIR = "cifar-10-batches-py"
DEFAULT_CIFAR10_ROOT = "~/.cache/score_sde/cifar10"
CIFAR10_SPLITS = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches and nothing else: only numpy arrays, dicts, lists, bytes, ints.

    The official files were written by Python 2 with numpy 1.x (`numpy.core`); numpy 2 calls that
    module `numpy._core`. Any other global is refused, so a tampered file cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
        ("__builtin__", "object"), ("builtins", "object"),
        # An empty array pickles its (empty) buffer through the bytes constructor.
        ("__builtin__", "bytes"), ("builtins", "bytes"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name} in a CIFAR-10 batch (not an official file?)"
            )
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def _load_batch(f, name: str) -> Tuple[np.ndarray, List[int]]:
    d = _BatchUnpickler(f, encoding="bytes").load()
    data, labels = d.get(b"data"), d.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072 or labels is None or len(labels) != data.shape[0]:
        raise ValueError(
            f"{name}: expected b'data' uint8 (N, 3072) and N b'labels'; is it a CIFAR-10 batch?"
        )
    return data, list(labels)


def find_cifar10(root: Optional[PathLike] = None) -> Path:
    """The archive file or extracted folder holding CIFAR-10 under `root`.

    Args:
      root: a folder, the archive, or the extracted folder; default `DEFAULT_CIFAR10_ROOT`.

    Returns:
      path of `cifar-10-python.tar.gz` or of the `cifar-10-batches-py/` folder.

    Raises:
      FileNotFoundError: naming every path looked at and how to provide the data.
    """
    root = Path(root if root is not None else DEFAULT_CIFAR10_ROOT).expanduser()
    candidates = [root] if root.name.endswith((".tar.gz", ".tgz")) else [
        root, root / CIFAR10_DIR, root / CIFAR10_ARCHIVE,
    ]
    for path in candidates:
        if path.is_file() and tarfile.is_tarfile(path):
            return path
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
            raise ValueError(_damaged(path, "not a readable tar.gz archive"))
        if path.is_dir() and (path / "data_batch_1").is_file():
            return path
    looked = "\n  ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"CIFAR-10 not found; looked for the archive or the extracted '{CIFAR10_DIR}/' at:\n  "
        f"{looked}\nProvide it by downloading {CIFAR10_URL} into {root} (extracting is optional),"
        " or set config.data.root to where it is, or set config.data.download = True."
    )


def _damaged(path: Path, why: str) -> str:
    return (f"{path} is damaged or incomplete ({why}); delete it and download it again from"
            f" {CIFAR10_URL} (MD5 {CIFAR10_MD5}), or delete it and set config.data.download=True")


def load_cifar10_arrays(
    root: Optional[PathLike] = None, split: str = "train", *, download: bool = False
) -> Tuple[Tensor, Tensor]:
    """Read one split of CIFAR-10 into memory.

    Args:
      root: see `find_cifar10`.
      split: "train" (data_batch_1..5, in order) or "test" (test_batch).
      download: fetch the archive into `root` (MD5-checked) when no copy is found.

    Returns:
      images uint8 (N, 3, 32, 32) in {0..255}, labels int64 (N,) in 0..9.

    Raises:
      ValueError: unknown split, or a batch file in the wrong format.
      FileNotFoundError: no copy found and download=False (the message says where it looked).
    """
    if split not in CIFAR10_SPLITS:
        raise ValueError(f"split={split!r} is not one of {list(CIFAR10_SPLITS)}")
    try:
        path = find_cifar10(root)
    except FileNotFoundError:
        if not download:
            raise
        path = download_cifar10(root)
    names = CIFAR10_SPLITS[split]
    batches = {}
    if path.is_dir():
        for name in names:
            with open(path / name, "rb") as f:
                batches[name] = _load_batch(f, str(path / name))
    else:
        wanted = {f"{CIFAR10_DIR}/{name}": name for name in names}
        try:
            with tarfile.open(path, "r:*") as tar:  # one sequential pass, nothing extracted
                for member in tar:
                    name = wanted.get(member.name.removeprefix("./"))
                    if name is not None and member.isfile():
                        buf = io.BytesIO(tar.extractfile(member).read())
                        batches[name] = _load_batch(buf, f"{path}:{member.name}")
                        if len(batches) == len(names):
                            break
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            raise ValueError(_damaged(path, f"{type(err).__name__}: {err}")) from err
        missing = [n for n in names if n not in batches]
        if missing:
            raise ValueError(f"{path} lacks {[f'{CIFAR10_DIR}/{n}' for n in missing]}")
    data = np.concatenate([batches[n][0] for n in names])
    labels = sum((batches[n][1] for n in names), [])
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32))  # row-major CHW per row
    return images, torch.tensor(labels, dtype=torch.long)


def download_cifar10(root: Optional[PathLike] = None, *, url: str = CIFAR10_URL,
                     md5: str = CIFAR10_MD5) -> Path:
    """Download `cifar-10-python.tar.gz` into `root` (MD5-checked, atomic); returns its path.

    Raises:
      ChecksumError: wrong MD5 (nothing is left behind).
      OSError: the download failed.
    """
    root = Path(root if root is not None else DEFAULT_CIFAR10_ROOT).expanduser()
    if root.name.endswith((".tar.gz", ".tgz")):
        return download_file(url, root, md5)
    return download_file(url, root / CIFAR10_ARCHIVE, md5)


class CIFAR10(torch.utils.data.Dataset):
    """CIFAR-10 in memory: items (uint8 tensor (3, S, S), int label in 0..9).

    Args:
      root: archive, extracted folder, or a folder holding either (see `find_cifar10`).
      split: "train" (50,000 images) or "test" (10,000).
      image_size: S; images are resized from 32 (bicubic, antialiased) when S != 32.
      download: fetch the archive when missing (MD5-checked).

    Attributes:
      images: uint8 (N, 3, 32, 32); labels: int64 (N,); classes: the 10 class names;
      num_classes: 10.
    """

    num_classes = 10
    classes = CIFAR10_CLASSES

    def __init__(self, root: Optional[PathLike] = None, split: str = "train", *,
                 image_size: int = 32, download: bool = False):
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size={image_size!r}: expected an integer >= 1")
        self.images, self.labels = load_cifar10_arrays(root, split, download=download)
        self.split, self.image_size = split, image_size

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        img = self.images[index]
        if self.image_size != 32:
            pil = Image.fromarray(img.permute(1, 2, 0).numpy())
            img = pil_to_uint8(resize_center_crop(pil, self.image_size))
        return img, int(self.labels[index])


class CIFAR10Source(DataSource):
    """CIFAR-10 for `DataSpec`: `root` (default DEFAULT_CIFAR10_ROOT), `download`, `image_size`."""

    channels = (3,)

    def num_classes(self, spec) -> int:
        return CIFAR10.num_classes

    def check_available(self, spec) -> None:
        if not spec.download:
            find_cifar10(spec.root)

    def split(self, spec, split: str, seed: int) -> "CIFAR10":
        return CIFAR10(spec.root or DEFAULT_CIFAR10_ROOT, split, image_size=spec.image_size, download=spec.download)
