"""Data for score-based models: 2-D toy sets, CIFAR-10, image folders; transforms; loaders.

No TensorFlow and no torchvision. The factory turns `config.data` into a `DataSpec`
(docs/data.md lists its fields):

    spec = DataSpec(dataset="cifar10", root=...)
    train_ds, test_ds = spec.datasets(seed)
    train_loader = build_loader(train_ds, batch_size, train=True, seed=seed, rank=rank,
                                world_size=world_size, num_workers=spec.num_workers)
    x, y = next(iter(train_loader))      # x in model space, shape (B, *spec.shape)
    ckpt["data"] = train_loader.state_dict()        # resume: train_loader.load_state_dict(...)

Modules: spec (DataSpec and the registry DATASETS), source (DataSource, what a registry entry
provides), toy (2-D sets and the default mixture), cifar10, image_folder, transforms (flip,
dequantisation, scaling), loader (resumable shardable order), download (MD5-checked), testing
(fakes in the real formats). A new data set is one module with a `DataSource` and one
`DATASETS` entry.
"""
from .cifar10 import (
    CIFAR10, CIFAR10_MD5, CIFAR10_URL, download_cifar10, find_cifar10, load_cifar10_arrays,
)
from .download import ChecksumError, download_file, md5sum
from .image_folder import ImageFolder
from .loader import ResumableBatchSampler, ResumableLoader, build_loader
from .source import DataSource
from .spec import DATASETS, DataSpec
from .toy import TOY_SAMPLERS, ToyDataset, default_toy_mixture
from .transforms import ImageTransform, TransformedImages, derive_seed, resize_center_crop, to_uint8

__all__ = [
    "DataSpec", "DATASETS", "DataSource", "build_loader",
    # data sets
    "ToyDataset", "TOY_SAMPLERS", "default_toy_mixture", "CIFAR10", "ImageFolder",
    "TransformedImages", "load_cifar10_arrays", "find_cifar10", "download_cifar10",
    "CIFAR10_URL", "CIFAR10_MD5",
    # transforms, loaders, downloads
    "ImageTransform", "resize_center_crop", "to_uint8", "derive_seed",
    "ResumableBatchSampler", "ResumableLoader", "download_file", "md5sum", "ChecksumError",
]
