"""Fakes in the real on-disk formats, for tests of this package and of the application.

Example:
    >>> archive = write_fake_cifar10(tmp_path, n_train=20, n_test=8)
    >>> config.data.dataset, config.data.root = "cifar10", str(tmp_path)
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .cifar10 import CIFAR10_ARCHIVE, CIFAR10_CLASSES, CIFAR10_DIR, CIFAR10_SPLITS

PathLike = Union[str, os.PathLike]


def fake_cifar10_arrays(n_train: int = 50, n_test: int = 10, seed: int = 0
                        ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Random CIFAR-10 rows: {"train": (data uint8 (n_train, 3072), labels int64 (n_train,)),
    "test": (...)}."""
    rng = np.random.default_rng(seed)
    return {
        split: (rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                rng.integers(0, 10, n).astype(np.int64))
        for split, n in (("train", n_train), ("test", n_test))
    }


def _py2_style_pickle(obj) -> bytes:
    """Protocol 2, naming numpy's module `numpy.core` as the official (Python 2) files do."""
    raw = pickle.dumps(obj, protocol=2)
    return raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _batch_files(arrays) -> Dict[str, bytes]:
    files = {}
    for split, names in CIFAR10_SPLITS.items():
        data, labels = arrays[split]
        for name, rows in zip(names, np.array_split(np.arange(len(data)), len(names))):
            files[name] = _py2_style_pickle({
                b"batch_label": f"{name} of 5 (fake)".encode(),
                b"labels": [int(v) for v in labels[rows]],
                b"data": data[rows],
                b"filenames": [f"fake_{i:05d}.png".encode() for i in rows],
            })
    files["batches.meta"] = _py2_style_pickle({
        b"label_names": [c.encode() for c in CIFAR10_CLASSES],
        b"num_cases_per_batch": int(np.ceil(len(arrays["train"][0]) / 5)),
        b"num_vis": 3072,
    })
    files["readme.html"] = b"<html>fake CIFAR-10 for tests</html>"
    return files


def write_fake_cifar10(root: PathLike, n_train: int = 50, n_test: int = 10, seed: int = 0, *,
                       extracted: bool = False) -> Path:
    """Write a small CIFAR-10 in the official format under `root`.

    Train rows are split over data_batch_1..5 in order (sizes differ by at most one), test rows
    go to test_batch; the rows are `fake_cifar10_arrays(n_train, n_test, seed)`.

    Args:
      root: folder to write into (created).
      n_train, n_test: number of images per split.
      seed: seed of the random pixels and labels.
      extracted: write the folder `root/cifar-10-batches-py/` instead of the archive
        `root/cifar-10-python.tar.gz`.

    Returns:
      the path of the archive or of the extracted folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files = _batch_files(fake_cifar10_arrays(n_train, n_test, seed))
    if extracted:
        folder = root / CIFAR10_DIR
        folder.mkdir(exist_ok=True)
        for name, blob in files.items():
            (folder / name).write_bytes(blob)
        return folder
    archive = root / CIFAR10_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(CIFAR10_DIR)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{CIFAR10_DIR}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return archive


def write_fake_image_folder(root: PathLike, sizes: Sequence[Tuple[int, int]] = ((40, 30), (24, 36)),
                            classes: Sequence[str] = ("cats", "dogs"), seed: int = 0) -> Path:
    """Write random images root/<class>/img<i>.<png|jpg> of the given (width, height) sizes.

    Images alternate PNG and JPEG; each class gets one image of every size. Returns `root`.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            img.save(root / c / f"img{i}.{'png' if i % 2 == 0 else 'jpg'}")
    return root
