"""Tests of sde_app.data: formats, transforms, toy sets against their exact density, the loader.

No network: CIFAR-10 is a small fake written in the official pickle/tar.gz format
(`sde_app.data.testing`), and downloads use file:// URLs or a stubbed urlopen.
"""
import hashlib
import io
import math
import os
import pickle
import tarfile
import urllib.request

import numpy as np
import pytest
import torch
from ml_collections import ConfigDict
from PIL import Image

from sde_app.data import (
    CIFAR10, CIFAR10_MD5, CIFAR10_URL, DATASETS, ChecksumError, ImageFolder, ImageTransform,
    ResumableBatchSampler, ToyDataset, TransformedImages, build_loader, default_toy_mixture,
    download_cifar10, download_file, find_cifar10, load_cifar10_arrays, md5sum, to_uint8,
)
from sde_app.data.testing import fake_cifar10_arrays, write_fake_cifar10, write_fake_image_folder
from sde_app.factory import data_spec
from sde_lib.likelihood import dequantization_offset
from sde_lib.oracle import GaussianMixture


# The data of a `config.data` group, through the factory's `DataSpec`.
def build_datasets(cfg, seed=0):
    return data_spec(cfg).datasets(seed)


def data_shape(cfg):
    return data_spec(cfg).shape


def is_image_data(cfg):
    return data_spec(cfg).is_image


def num_classes(cfg):
    return data_spec(cfg).num_classes


def toy_density(cfg):
    return data_spec(cfg).toy_density()


def data_scaler(cfg):
    return data_spec(cfg).scaler()


def inverse_data_scaler(cfg):
    return data_spec(cfg).inverse_scaler()

N_TRAIN, N_TEST = 13, 6  # 13 train rows over 5 batches: sizes 3, 3, 3, 2, 2


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """A folder holding a fake cifar-10-python.tar.gz."""
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar10(root, N_TRAIN, N_TEST, seed=3)
    return root


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """The extracted folder cifar-10-batches-py/ of the same fake."""
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar_dir"), N_TRAIN, N_TEST, seed=3,
                              extracted=True)


# ------------------------------------------------------------------------------------ CIFAR-10
@pytest.mark.parametrize("where", ["root_with_archive", "archive", "root_with_dir", "dir"])
def test_cifar10_layout_labels_and_splits(where, cifar_root, cifar_dir):
    root = {"root_with_archive": cifar_root, "archive": cifar_root / "cifar-10-python.tar.gz",
            "root_with_dir": cifar_dir.parent, "dir": cifar_dir}[where]
    expected = fake_cifar10_arrays(N_TRAIN, N_TEST, seed=3)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        images, labels = load_cifar10_arrays(root, split)
        data, want_labels = expected[split]
        assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
        assert labels.dtype == torch.int64 and labels.tolist() == want_labels.tolist()
        # Row-major CHW: value (c, h, w) of image i is data[i, 1024 c + 32 h + w].
        for i, c, h, w in [(0, 0, 0, 1), (n - 1, 1, 5, 31), (n // 2, 2, 31, 0), (1, 2, 7, 9)]:
            assert images[i, c, h, w].item() == data[i, 1024 * c + 32 * h + w]


def test_cifar10_dataset_items_and_resize(cifar_root):
    ds = CIFAR10(cifar_root, "train")
    img, y = ds[4]
    assert len(ds) == N_TRAIN and ds.num_classes == 10 and len(ds.classes) == 10
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8 and isinstance(y, int)
    small = CIFAR10(cifar_root, "test", image_size=16)
    assert small[0][0].shape == (3, 16, 16) and small[0][0].dtype == torch.uint8


def test_cifar10_reads_an_uncompressed_tar_too(tmp_path, cifar_root):
    with tarfile.open(cifar_root / "cifar-10-python.tar.gz") as src, \
            tarfile.open(tmp_path / "cifar.tar", "w") as dst:
        for m in src:
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    a = load_cifar10_arrays(tmp_path / "cifar.tar", "test")
    b = load_cifar10_arrays(cifar_root, "test")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_cifar10_missing_names_the_paths_and_the_fixes(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10_arrays(tmp_path / "nowhere", "train")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert CIFAR10_URL in msg and "config.data.root" in msg and "download" in msg


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing global"):
        load_cifar10_arrays(tmp_path, "train")


def test_cifar10_bad_split_raises(cifar_root):
    with pytest.raises(ValueError, match="split='val'"):
        load_cifar10_arrays(cifar_root, "val")


# ------------------------------------------------------------------------------------ download
def test_download_file_checks_md5_and_writes_atomically(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3000))
    good = hashlib.md5(src.read_bytes()).hexdigest()
    out = tmp_path / "out"
    dest = download_file(src.as_uri(), out / "file.bin", good)
    assert dest.read_bytes() == src.read_bytes() and md5sum(dest) == good
    assert os.listdir(out) == ["file.bin"]  # no temporary file left

    with pytest.raises(ChecksumError, match="0" * 32):
        download_file(src.as_uri(), out / "other.bin", "0" * 32)
    assert os.listdir(out) == ["file.bin"]  # the temp file is gone, nothing else written


def test_download_cifar10_from_a_local_url_then_load(tmp_path, cifar_root):
    archive = cifar_root / "cifar-10-python.tar.gz"
    path = download_cifar10(tmp_path / "dl", url=archive.as_uri(), md5=md5sum(archive))
    assert path == tmp_path / "dl" / "cifar-10-python.tar.gz"
    assert find_cifar10(tmp_path / "dl") == path
    assert load_cifar10_arrays(tmp_path / "dl", "test")[0].shape == (N_TEST, 3, 32, 32)


def test_config_download_with_wrong_bytes_raises_and_leaves_nothing(tmp_path, cifar_root,
                                                                  monkeypatch):
    # The official URL is served the fake archive, whose MD5 is not the official one.
    assert CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO((cifar_root / "cifar-10-python.tar.gz").read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "cache"
    cfg = {"dataset": "cifar10", "root": str(root), "download": True}
    with pytest.raises(ChecksumError, match=CIFAR10_MD5):
        build_datasets(cfg)
    assert requested == [CIFAR10_URL]
    assert not root.exists() or os.listdir(root) == []


# -------------------------------------------------------------------------------- image folder
def _reference_resize_crop(path, size, mode="RGB"):
    """Independent arithmetic: shorter side -> size (bicubic), then the centred square."""
    with Image.open(path) as img:
        img = img.convert(mode)
    w, h = img.size
    s = size / min(w, h)
    nw, nh = round(w * s), round(h * s)
    img = img.resize((nw, nh), resample=Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)))
    return arr.reshape(size, size, -1).transpose(2, 0, 1)


def test_image_folder_resize_crop_and_subfolder_labels(tmp_path):
    root = write_fake_image_folder(tmp_path / "imgs", sizes=((40, 30), (24, 36), (16, 50)))
    (root / "dogs" / "puppies").mkdir()
    Image.fromarray(np.full((20, 20, 3), 7, np.uint8)).save(root / "dogs" / "puppies" / "p.PNG")
    ds = ImageFolder(root, "train", image_size=16, class_labels=True, test_fraction=0.0)
    names = [f.relative_to(root).as_posix() for f in ds.files]
    assert names == ["cats/img0.png", "cats/img1.jpg", "cats/img2.png",
                     "dogs/img0.png", "dogs/img1.jpg", "dogs/img2.png", "dogs/puppies/p.PNG"]
    assert ds.classes == ["cats", "dogs"] and ds.num_classes == 2
    assert ds.labels == [0, 0, 0, 1, 1, 1, 1]
    for i, f in enumerate(ds.files):
        img, y = ds[i]
        assert img.shape == (3, 16, 16) and img.dtype == torch.uint8 and y == ds.labels[i]
        np.testing.assert_array_equal(img.numpy(), _reference_resize_crop(f, 16))
    unlabelled = ImageFolder(root, "train", image_size=8, num_channels=1, test_fraction=0.0)
    assert unlabelled.labels == [0] * 7 and unlabelled.num_classes == 0
    assert unlabelled[1][0].shape == (1, 8, 8)
    assert ImageFolder(root, "test", image_size=8, test_fraction=0.0).files == []


def test_image_folder_splits(tmp_path):
    sizes = tuple((20 + i, 20) for i in range(5))
    root = write_fake_image_folder(tmp_path / "flat", sizes=sizes)  # 10 files
    train = ImageFolder(root, "train", image_size=8, test_fraction=0.2)
    test = ImageFolder(root, "test", image_size=8, test_fraction=0.2)
    assert len(train) == 8 and len(test) == 2 and not set(train.files) & set(test.files)
    assert ImageFolder(root, "test", image_size=8, test_fraction=0.2).files == test.files

    both = tmp_path / "both"
    write_fake_image_folder(both / "train", sizes=sizes[:3], classes=("a", "b"))
    write_fake_image_folder(both / "test", sizes=sizes[:1], classes=("a", "b"))
    tr = ImageFolder(both, "train", image_size=8, class_labels=True)
    te = ImageFolder(both, "test", image_size=8, class_labels=True)
    assert (len(tr), len(te)) == (6, 2) and te.labels == [0, 1] and te.classes == ["a", "b"]


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .png"):
        ImageFolder(tmp_path / "empty")
    root = write_fake_image_folder(tmp_path / "loose", sizes=((10, 10),))
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "stray.png")
    with pytest.raises(ValueError, match="stray.png"):
        ImageFolder(root, class_labels=True, test_fraction=0.0)


# ---------------------------------------------------------------------------------- transforms
def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 4, 5), generator=g, dtype=torch.uint8)


class _Uint8Set(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 3


def test_scaling_and_inverse():
    img = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 1, 3)
    centered = ImageTransform(centered=True)(img)
    plain = ImageTransform(centered=False)(img)
    assert centered.dtype == torch.float32
    torch.testing.assert_close(centered.flatten(), torch.tensor([-1.0, -0.6, 1.0]))
    torch.testing.assert_close(plain.flatten(), torch.tensor([0.0, 0.2, 1.0]))
    for c in (True, False):
        cfg = {"dataset": "cifar10", "centered": c}
        x = ImageTransform(centered=c)(_images()[0])
        assert torch.equal(to_uint8(inverse_data_scaler(cfg)(x)), _images()[0])
        torch.testing.assert_close(data_scaler(cfg)(inverse_data_scaler(cfg)(x)), x)
    toy = {"dataset": "two_moons", "centered": True}
    z = torch.randn(5, 2)
    assert torch.equal(data_scaler(toy)(z), z) and torch.equal(inverse_data_scaler(toy)(z), z)


def test_random_flip_is_exact_deterministic_and_fair():
    images = _images(200)
    tf = ImageTransform(random_flip=True, centered=False)
    ds = TransformedImages(_Uint8Set(images), tf, seed=5)
    flipped = []
    for i in range(len(images)):
        x, y = ds[(i, 0)]
        same, mirrored = images[i] / 255.0, images[i].flip(-1) / 255.0
        assert torch.equal(x, same) or torch.equal(x, mirrored)
        flipped.append(torch.equal(x, mirrored) and not torch.equal(x, same))
        assert torch.equal(ds[(i, 0)][0], x) and y == i % 3  # same key, same item
    # Fair coin: 200 draws, 4 standard deviations (sd = sqrt(200) / 2 ~ 7.1).
    assert abs(sum(flipped) - 100) < 4 * 7.1
    assert any(not torch.equal(ds[(i, 0)][0], ds[(i, 1)][0]) for i in range(20))  # epochs differ
    assert torch.equal(ds[7][0], ds[(7, 0)][0])  # a plain index is epoch 0


def test_uniform_dequantisation_stays_in_the_pixel_cell():
    images = _images(32)
    tf = ImageTransform(random_flip=True, uniform_dequantization=True, centered=True)
    ds = TransformedImages(_Uint8Set(images), tf, seed=0)
    us = []
    for i in range(len(images)):
        x = ds[(i, 3)][0]
        x01 = (x.double() + 1) / 2          # undo centring
        pixel = torch.floor(x01 * 256)      # (pixel + u) / 256 with u in [0, 1)
        flipped = images[i].flip(-1).double()
        assert torch.equal(pixel, images[i].double()) or torch.equal(pixel, flipped)
        us.append(x01 * 256 - pixel)
    u = torch.cat([v.flatten() for v in us])
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / u.numel())  # U[0,1) mean 1/2


# --------------------------------------------------------------------------------- toy data
@pytest.mark.parametrize("name", ["gaussian_mixture", "checkerboard", "swiss_roll", "two_moons"])
def test_toy_shapes_determinism_and_scale(name):
    a = ToyDataset(name, 2000, seed=1)
    b = ToyDataset(name, 2000, seed=1)
    c = ToyDataset(name, 2000, seed=2)
    test = ToyDataset(name, 500, seed=1, split="test")
    assert a.x.shape == (2000, 2) and a.x.dtype == torch.float32 and a.y.dtype == torch.int64
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x) and not torch.equal(a.x[:500], test.x)
    x, y = a[3]
    assert x.shape == (2,) and isinstance(y, int)
    std = a.x.std(0)
    assert (std > 0.5).all() and (std < 3).all() and a.x.abs().max() < 6  # VP-prior scale
    cfg = {"dataset": name}
    assert data_shape(cfg) == (2,) and not is_image_data(cfg)
    if name == "gaussian_mixture":
        assert a.num_classes == num_classes(cfg) == 8 and set(a.y.tolist()) == set(range(8))
        assert isinstance(a.density, GaussianMixture)
        assert isinstance(toy_density(cfg), GaussianMixture)
    else:
        assert a.num_classes == num_classes(cfg) == 0 and (a.y == 0).all()
        assert a.density is None and toy_density(cfg) is None


def test_default_mixture_is_not_easy():
    gm = default_toy_mixture()
    assert gm.n_components >= 6 and gm.dim == 2
    assert len(set(gm.weights.tolist())) == gm.n_components       # unequal weights
    stds = gm.eigvals.sqrt()
    assert stds.min() >= 0.1 - 1e-9 and stds.max() <= 0.7 + 1e-9
    assert (stds.max(1).values / stds.min(1).values > 1.3).sum() >= 6  # anisotropic
    assert (gm.covs[:, 0, 1].abs() > 1e-3).sum() >= 5                    # rotated
    assert gm.means.abs().max() <= 3
    x = gm.sample(4000, torch.Generator().manual_seed(0))
    top = gm.class_log_posterior(x).exp().max(1).values
    assert (top < 0.9).float().mean() > 0.05  # overlapping components: ~12% ambiguous


def test_mixture_samples_agree_with_log_density():
    """Bin probabilities integrated from log_prob match the frequencies of the data set."""
    ds = ToyDataset("gaussian_mixture", 40_000, seed=0)
    gm = ds.density
    edges = torch.linspace(-4.5, 4.5, 10, dtype=torch.float64)  # 9 x 9 bins
    # Midpoint rule, 30 x 30 points per bin; the density is smooth at this scale.
    fine = torch.linspace(-4.5, 4.5, 271, dtype=torch.float64)
    mid = (fine[1:] + fine[:-1]) / 2
    gx, gy = torch.meshgrid(mid, mid, indexing="ij")
    p = gm.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).exp().reshape(270, 270)
    cell = (fine[1] - fine[0]) ** 2
    prob = (p * cell).reshape(9, 30, 9, 30).sum((1, 3))
    assert abs(prob.sum().item() - 1) < 0.01  # nearly all mass inside [-4.5, 4.5]^2
    ix = torch.bucketize(ds.x[:, 0].double(), edges[1:-1])
    iy = torch.bucketize(ds.x[:, 1].double(), edges[1:-1])
    inside = (ds.x.abs() <= 4.5).all(1)
    counts = torch.zeros(9, 9, dtype=torch.float64)
    counts.index_put_((ix[inside], iy[inside]), torch.ones(int(inside.sum()), dtype=torch.float64),
                      accumulate=True)
    freq = counts / len(ds)
    sd = (prob * (1 - prob) / len(ds)).sqrt()
    assert ((freq - prob).abs() <= 5 * sd + 2e-4).all()  # 5 sd over 81 bins; 2e-4 quadrature
    # Labels follow the weights: 8 frequencies within 5 sd.
    w = gm.weights
    f = torch.bincount(ds.y, minlength=8).double() / len(ds)
    assert ((f - w).abs() <= 5 * (w * (1 - w) / len(ds)).sqrt()).all()


# ------------------------------------------------------------------------------------- loader
def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(batches_a, batches_b):
    return len(batches_a) == len(batches_b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb)
        for (xa, ya), (xb, yb) in zip(batches_a, batches_b)
    )


def test_train_loader_resumes_mid_epoch_across_the_epoch_boundary():
    ds = ToyDataset("gaussian_mixture", 100, seed=0)
    loader = build_loader(ds, 8, train=True, seed=11)
    assert len(loader) == 12
    it = iter(loader)
    _take(it, 7)
    state = loader.state_dict()
    assert (state["epoch"], state["batch"]) == (0, 7)
    rest = _take(it, 10)  # crosses into epoch 1
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batch"] == 5
    fresh = build_loader(ToyDataset("gaussian_mixture", 100, seed=0), 8, train=True, seed=11)
    fresh.load_state_dict(state)
    assert _same(_take(iter(fresh), 10), rest)
    # Each epoch visits 96 distinct items in a new order.
    sampler = loader.sampler
    e0, e1 = sampler.epoch_indices(0), sampler.epoch_indices(1)
    assert len(set(e0)) == 96 and e0 != e1


def test_image_loader_with_workers_resumes_identically(cifar_root):
    cfg = ConfigDict({"dataset": "cifar10", "root": str(cifar_root), "random_flip": True,
                      "uniform_dequantization": True})
    train_ds, _ = build_datasets(cfg, seed=4)
    loader = build_loader(train_ds, 4, train=True, seed=4, num_workers=2)
    it = iter(loader)
    first = _take(it, 2)  # workers have prefetched more than that
    state = loader.state_dict()
    rest = _take(it, 4)   # 3 batches per epoch: crosses an epoch
    del it
    assert (state["epoch"], state["batch"]) == (0, 2)
    fresh = build_loader(build_datasets(cfg, seed=4)[0], 4, train=True, seed=4, num_workers=0)
    fresh.load_state_dict(state)
    assert _same(_take(iter(fresh), 4), rest)  # workers do not change results
    x, y = first[0]
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1


def test_shards_are_disjoint_equal_and_covering():
    n, bs, ws = 100, 8, 3
    per_rank = [ResumableBatchSampler(n, bs, train=True, seed=2, rank=r, world_size=ws)
                for r in range(ws)]
    batches = [s.epoch_batches(5) for s in per_rank]
    assert [len(b) for b in batches] == [4, 4, 4] and all(len(x) == bs for b in batches for x in b)
    items = [set(i for x in b for i in x) for b in batches]
    assert all(not items[a] & items[b] for a in range(ws) for b in range(a + 1, ws))
    assert set().union(*items) == set(per_rank[0].__class__(n, bs, train=True, seed=2)
                                      .epoch_indices(5)[:96])
    # Evaluation: every item once, same number of batches per rank, at most ws - 1 repeats.
    evals = [ResumableBatchSampler(10, 2, train=False, rank=r, world_size=4) for r in range(4)]
    eb = [list(s) for s in evals]
    assert [len(b) for b in eb] == [2, 2, 2, 2]
    seen = [i for b in eb for x in b for i in x]
    assert set(seen) == set(range(10)) and len(seen) - 10 <= 3


def test_eval_loader_is_one_ordered_pass():
    ds = ToyDataset("two_moons", 10, seed=0)
    loader = build_loader(ds, 4, train=False)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), ds.x)
    assert len(list(loader)) == 3  # a second pass, the next epoch


def test_loader_errors():
    ds = ToyDataset("two_moons", 10, seed=0)
    with pytest.raises(ValueError, match="no full batch"):
        build_loader(ds, 8, train=True, world_size=2)
    with pytest.raises(ValueError, match="rank=2"):
        build_loader(ds, 2, train=True, rank=2, world_size=2)
    loader = build_loader(ds, 2, train=True, seed=0)
    state = loader.state_dict()
    other = build_loader(ds, 2, train=True, seed=1)
    with pytest.raises(ValueError, match="seed=0"):
        other.load_state_dict(state)


# ------------------------------------------------------------------------------------ factory
def test_factory_cifar10_end_to_end(cifar_root):
    cfg = ConfigDict({"dataset": "cifar10", "root": str(cifar_root), "image_size": 16,
                      "centered": False, "random_flip": True})
    train, test = build_datasets(cfg, seed=0)
    assert (len(train), len(test)) == (N_TRAIN, N_TEST)
    x, y = train[0]
    assert x.shape == (3, 16, 16) == data_shape(cfg) and 0 <= x.min() and x.max() <= 1
    assert is_image_data(cfg) and num_classes(cfg) == 10 and toy_density(cfg) is None
    assert test.transform.random_flip is False and train.transform.random_flip is True
    # bits/dim: the library's offset of centred data; the likelihood reads dequantised images
    assert dequantization_offset(centered=True) == 7.0
    assert data_spec(cfg).dequantized().uniform_dequantization and not data_spec(cfg).uniform_dequantization


def test_factory_image_folder(tmp_path):
    root = write_fake_image_folder(tmp_path / "f", sizes=((30, 20), (20, 30)) * 3)
    cfg = {"dataset": "image_folder", "root": str(root), "image_size": 8, "num_channels": 1,
           "class_labels": True, "test_fraction": 0.25}
    train, test = build_datasets(cfg)
    assert (len(train), len(test)) == (9, 3) and num_classes(cfg) == 2
    assert train[0][0].shape == (1, 8, 8) == data_shape(cfg)
    with pytest.raises(ValueError, match="config.data.root is required"):
        build_datasets({"dataset": "image_folder"})


def test_factory_toy_sizes_and_bad_configs():
    cfg = {"dataset": "swiss_roll", "num_train": 300, "num_test": 50}
    train, test = build_datasets(cfg, seed=9)
    assert (len(train), len(test)) == (300, 50)
    with pytest.raises(ValueError) as err:
        build_datasets({"dataset": "mnist"})
    assert "'mnist'" in str(err.value) and all(name in str(err.value) for name in DATASETS)
    with pytest.raises(ValueError, match="no field 'dataset'"):
        data_shape(ConfigDict({"image_size": 32}))
    with pytest.raises(ValueError, match="num_channels=1"):
        data_shape({"dataset": "cifar10", "num_channels": 1})
    with pytest.raises(ValueError, match="image_size=0"):
        data_shape({"dataset": "image_folder", "image_size": 0})
    with pytest.raises(ValueError, match="num_train"):
        build_datasets({"dataset": "two_moons", "num_train": 0})


def test_fake_cifar10_with_fewer_images_than_batches(tmp_path):
    """Some of the five training batches are then empty; an empty array must still load."""
    from sde_app.data.testing import write_fake_cifar10
    write_fake_cifar10(tmp_path, n_train=3, n_test=2, seed=0)
    train, test = build_datasets({"dataset": "cifar10", "root": str(tmp_path), "image_size": 32})
    assert (len(train), len(test)) == (3, 2)
