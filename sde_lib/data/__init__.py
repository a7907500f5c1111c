"""Data for score-based models: 2-D toy sets, CIFAR-10, image folders; transforms; loaders.

No TensorFlow and no torchvision. One factory reads `config.data` (fields in `factory.py` and
docs/data.md):

    train_ds, test_ds = build_datasets(config.data, seed=config.seed)
    train_loader = build_loader(train_ds, batch_size, train=True, seed=config.seed,
                                rank=rank, world_size=world_size,
                                num_workers=config.data.num_workers)
    x, y = next(iter(train_loader))      # x in model space, shape (B, *data_shape(config.data))
    ckpt["data"] = train_loader.state_dict()        # resume: train_loader.load_state_dict(...)

Modules: toy (2-D sets and the default mixture), cifar10, image_folder, transforms (flip,
dequantisation, scaling), loader (resumable shardable order), download (MD5-checked), factory
(config), testing (fakes in the real formats).
"""
from .cifar10 import (
    CIFAR10, CIFAR10_MD5, CIFAR10_URL, download_cifar10, find_cifar10, load_cifar10_arrays,
)
from .download import ChecksumError, download_file, md5sum
from .factory import (
    DATA_DEFAULTS, DATASETS, bpd_offset, build_datasets, data_dim, data_scaler, data_shape,
    inverse_data_scaler, is_image_data, num_classes, toy_density,
)
from .image_folder import ImageFolder
from .loader import ResumableBatchSampler, ResumableLoader, build_loader
from .toy import TOY_SAMPLERS, ToyDataset, default_toy_mixture
from .transforms import ImageTransform, TransformedImages, derive_seed, resize_center_crop, to_uint8

__all__ = [
    # factory (config.data)
    "build_datasets", "build_loader", "data_scaler", "inverse_data_scaler", "data_shape",
    "data_dim", "is_image_data", "num_classes", "toy_density", "bpd_offset", "DATASETS",
    "DATA_DEFAULTS",
    # data sets
    "ToyDataset", "TOY_SAMPLERS", "default_toy_mixture", "CIFAR10", "ImageFolder",
    "TransformedImages", "load_cifar10_arrays", "find_cifar10", "download_cifar10",
    "CIFAR10_URL", "CIFAR10_MD5",
    # transforms, loaders, downloads
    "ImageTransform", "resize_center_crop", "to_uint8", "derive_seed",
    "ResumableBatchSampler", "ResumableLoader", "download_file", "md5sum", "ChecksumError",
]
