"""Feature networks for sample-quality metrics (`sde_lib.metrics`), and the reference statistics
of a data set in their feature space.

`FEATURES` maps `config.eval.features` to a `FeatureSpec`:

* "inception": the FID Inception network, TensorFlow's 2015-12-05 graph as torch-fidelity ports it
  (its `FeatureExtractorInceptionV3` reproduces the TF reference the published CIFAR-10 FIDs use):
  2048-d pool features for FID and KID, the 1008 logits without bias for the Inception Score.
  Only that module of torch-fidelity is imported (`inception_class`), so it runs without
  torchvision. Weights: `config.eval.inception_weights`, else torch-fidelity's own cache file
  (`inception_cache_path()`, under `torch.hub.get_dir()`); downloaded there by torch-fidelity only
  with `config.eval.download_inception = True`.
* "digits_classifier": a small convolutional classifier of the 8x8 digits, trained by
  `train_digits_classifier` on the training split and shipped in `sde_app/weights/`: 64-d features
  before its last layer, 10 logits. An Inception network is meaningless on 8x8 grey images.

Every extractor takes uint8 images (B, C, H, W) in 0..255 (the official sample format) and
returns float32 (features (B, D), logits (B, K)).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sde_lib.metrics import feature_statistics

from .data import DataSpec, to_uint8

Tensor = torch.Tensor
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DIGITS_CLASSIFIER_WEIGHTS = WEIGHTS_DIR / "digits_classifier.pt"
DIGITS_CLASSIFIER_FORMAT = "score-sde-digits-classifier/1"
INCEPTION_MODULE = "torch_fidelity.feature_extractor_inceptionv3"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's name for the TF weights
INSTALL_HINT = "pip install --no-deps 'torch-fidelity>=0.3' (docs/evaluation.md: why --no-deps)"


# ------------------------------------------------------------------------ the FID Inception
def inception_class() -> type:
    """torch-fidelity's `FeatureExtractorInceptionV3`, imported without the package's other
    extractors: its `__init__` imports torchvision (for CLIP, VGG and DINOv2), which the Inception
    network does not use. The package is entered as a bare namespace when that import fails.

    Raises:
      ImportError: torch-fidelity is not installed.
    """
    try:
        return importlib.import_module(INCEPTION_MODULE).FeatureExtractorInceptionV3
    except ImportError:
        if importlib.util.find_spec("torch_fidelity") is None:
            raise
    except (RuntimeError, OSError, AttributeError):  # a torchvision that does not fit this torch
        pass
    spec = importlib.util.find_spec("torch_fidelity")
    for name in [m for m in sys.modules if m == "torch_fidelity" or m.startswith("torch_fidelity.")]:
        del sys.modules[name]  # leftovers of the failed import
    sys.modules["torch_fidelity"] = importlib.util.module_from_spec(spec)  # __init__ not run
    return importlib.import_module(INCEPTION_MODULE).FeatureExtractorInceptionV3


def inception_url() -> str:
    """The URL torch-fidelity downloads the converted TF Inception weights from."""
    try:
        return sys.modules[inception_class().__module__].URL_INCEPTION_V3
    except ImportError:
        return f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


def inception_cache_path() -> Path:
    """Where torch-fidelity keeps (and looks for) the Inception weights: the torch hub cache,
    `$TORCH_HOME/hub/checkpoints/` (default `~/.cache/torch/hub/checkpoints/`)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


class InceptionFeatures(torch.nn.Module):
    """The FID Inception network: uint8 (B, 3 or 1, H, W) -> (pool (B, 2048), logits (B, 1008)).
    Grey images are repeated to three channels; torch-fidelity resizes to 299 x 299 as TF 1.x's
    bilinear resize does."""

    def __init__(self, weights: Optional[str]):
        super().__init__()
        cls = inception_class()
        self.net = cls("inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=weights)

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        pool, logits = self.net(images.contiguous())
        return pool.float(), logits.float()


def write_random_inception_weights(path, seed: int = 0) -> Path:
    """Write weights of the FID Inception architecture, drawn at random (He-normal convolutions,
    so that activations keep their scale through the 94 layers): the network tests run offline.
    Needs torch-fidelity."""
    class Bare(inception_class()):
        def load_state_dict(self, state, *args, **kwargs):  # keep the initial values
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pt"
        torch.save({}, empty)
        net = Bare("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in net.state_dict().items():
        if name.endswith("conv.weight"):
            fan_in = value[0].numel()
            value = torch.randn(value.shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif name == "fc.weight":
            value = torch.randn(value.shape, generator=g) / value.shape[1] ** 0.5
        state[name] = value.clone()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# -------------------------------------------------------------------- the digits classifier
class DigitsClassifier(torch.nn.Module):
    """A small CNN for the 8x8 digits: uint8 (B, 1, 8, 8) in 0..255 -> (features (B, 64),
    logits (B, 10)). Three 3x3 convolutions (8x8, 8x8, then 4x4 after a max-pool), a 64-unit
    layer (the features, after ReLU) and the linear classifier."""

    def __init__(self, width: int = 32, features: int = 64, num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        self.conv = torch.nn.ModuleDict({
            "8x8_a": torch.nn.Conv2d(1, width, 3, padding=1),
            "8x8_b": torch.nn.Conv2d(width, 2 * width, 3, padding=1),
            "4x4": torch.nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        })
        self.hidden = torch.nn.Linear(2 * width * 16, features)
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(features, num_classes)

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        x = images.float() / 255.0
        x = F.relu(self.conv["8x8_a"](x))
        x = F.max_pool2d(F.relu(self.conv["8x8_b"](x)), 2)
        x = F.relu(self.conv["4x4"](x))
        features = F.relu(self.hidden(x.flatten(1)))
        return features, self.head(self.dropout(features))


def digits_uint8(images_0_16: Tensor) -> Tensor:
    """Digits stored as levels 0..16 -> uint8 0..255 images, as samples are written."""
    return to_uint8(images_0_16.float() / 16.0)


def train_digits_classifier(*, seed: int = 0, epochs: int = 60, batch_size: int = 64, lr: float = 2e-3,
                            progress: bool = False) -> Tuple[DigitsClassifier, Dict[str, float]]:
    """Train `DigitsClassifier` on the digits' training split (the 1,500 images of
    `sde_app.data.digits`), with random shifts by up to one pixel and uniform noise within each of
    the 17 levels, so that it also reads samples that are not exactly on the data's levels.
    Adam with a cosine decay; deterministic for a seed on the CPU.

    Returns:
      (the network in eval mode, {"test_accuracy", "train_accuracy", "epochs", "seed"}).
    """
    from .data.digits import Digits

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train, test = Digits("train"), Digits("test")
    net = DigitsClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    levels = train.images.float()
    for _ in tqdm(range(epochs), desc="digits classifier", disable=not progress):
        net.train()
        for idx in torch.randperm(len(train), generator=g).split(batch_size):
            v = levels[idx] + torch.rand(levels[idx].shape, generator=g) - 0.5  # within a level
            shift = torch.randint(-1, 2, (2,), generator=g).tolist()
            v = torch.roll(F.pad(v, (1, 1, 1, 1)), shifts=shift, dims=(2, 3))[:, :, 1:-1, 1:-1]
            x = digits_uint8(v.clamp(0, 16))
            _, logits = net(x)
            loss = F.cross_entropy(logits, train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()

    def accuracy(ds) -> float:
        with torch.no_grad():
            return float((net(digits_uint8(ds.images))[1].argmax(1) == ds.labels).double().mean())

    return net, {"test_accuracy": accuracy(test), "train_accuracy": accuracy(train), "epochs": epochs,
                 "seed": seed}


def save_digits_classifier(net: DigitsClassifier, info: Dict[str, float], path=DIGITS_CLASSIFIER_WEIGHTS) -> Path:
    """Write the weights and their facts (loadable with `torch.load(weights_only=True)`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": DIGITS_CLASSIFIER_FORMAT, "state_dict": net.state_dict(), "info": dict(info)}, path)
    return path


def load_digits_classifier(path=DIGITS_CLASSIFIER_WEIGHTS) -> Tuple[DigitsClassifier, Dict[str, float]]:
    """The shipped digits classifier (eval mode) and its facts (test accuracy, ...)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != DIGITS_CLASSIFIER_FORMAT:
        raise ValueError(f"{path} is not a {DIGITS_CLASSIFIER_FORMAT} file; rewrite it with"
                         " benchmarks/train_digits_classifier.py")
    net = DigitsClassifier()
    net.load_state_dict(blob["state_dict"])
    return net.eval().requires_grad_(False), dict(blob["info"])


# --------------------------------------------------------------------------------- registry
def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Extractor:
    """A loaded feature network: `fn(uint8 images) -> (features, logits)` and its identity
    (name and weights' checksum: part of the reference statistics' file name)."""

    fn: Callable[[Tensor], Tuple[Tensor, Tensor]]
    identity: str
    weights: str
    info: Dict[str, float] = dataclasses.field(default_factory=dict)

    def __call__(self, images: Tensor, *, batch_size: int = 500, device: torch.device = torch.device("cpu"),
                 progress=False, desc: str = "features") -> Tuple[np.ndarray, np.ndarray]:
        """Features and logits (float32 numpy) of uint8 images (N, C, H, W), in batches; `progress`
        as `sde_lib.progress` (True: an own bar)."""
        feats, logits = [], []
        starts = range(0, len(images), batch_size)
        bar = tqdm(total=len(starts), desc=desc, leave=False, disable=progress is not True)
        with torch.no_grad():
            for i in starts:
                f, z = self.fn(images[i:i + batch_size].to(device))
                feats.append(f.float().cpu())
                logits.append(z.float().cpu())
                bar.update(1)
                if progress not in (True, False):
                    progress.update(1.0 / len(starts))
        bar.close()
        return torch.cat(feats).numpy(), torch.cat(logits).numpy()


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """An entry of `FEATURES`: what the network accepts, where its weights are, how to load it."""

    name: str
    dim: int
    check_data: Callable[[DataSpec], None]
    weights_path: Callable[[Optional[str]], Path]
    load: Callable[[Path, bool, torch.device], Extractor]


def _inception_check_data(data: DataSpec) -> None:
    if not data.is_image:
        raise ValueError(f"config.eval.num_samples > 0: FID, IS and KID need image data, not dataset"
                         f" {data.dataset!r}; set --config.eval.num_samples=0")


def _inception_weights(path: Optional[str]) -> Path:
    return Path(path).expanduser() if path else inception_cache_path()


def _inception_load(path: Path, download: bool, device: torch.device) -> Extractor:
    weights = None if (download and not path.is_file()) else str(path)
    net = InceptionFeatures(weights).to(device)
    if weights is None:
        path = inception_cache_path()
    return Extractor(net, f"inception-2015-12-05-{file_sha256(path)[:12]}", str(path))


def _digits_check_data(data: DataSpec) -> None:
    if data.shape != (1, 8, 8):
        raise ValueError(f"config.eval.features='digits_classifier' reads 1x8x8 digits, not dataset"
                         f" {data.dataset!r} of shape {data.shape}; use features='inception'")


def _digits_weights(path: Optional[str]) -> Path:
    return DIGITS_CLASSIFIER_WEIGHTS


def _digits_load(path: Path, download: bool, device: torch.device) -> Extractor:
    net, info = load_digits_classifier(path)
    return Extractor(net.to(device), f"digits_classifier-{file_sha256(path)[:12]}", str(path), info)


FEATURES = {
    "inception": FeatureSpec("inception", 2048, _inception_check_data, _inception_weights, _inception_load),
    "digits_classifier": FeatureSpec("digits_classifier", 64, _digits_check_data, _digits_weights, _digits_load),
}


def check_available(name: str, data: DataSpec, *, weights: Optional[str] = None, download: bool = False,
                    stats: Optional[str] = None) -> None:
    """What `--mode eval` needs for sample-quality metrics, before any work: the network's code
    and weights, and a user's statistics file. One-line ValueErrors that name the file, where to
    put it and how to switch the metrics off (`eval.num_samples = 0`).
    """
    if name not in FEATURES:
        raise ValueError(f"config.eval.features={name!r} is not one of {list(FEATURES)}")
    spec = FEATURES[name]
    spec.check_data(data)
    off = "or switch FID/IS/KID off with --config.eval.num_samples=0"
    if name == "inception":
        try:
            inception_class()
        except ImportError:
            raise ValueError(f"config.eval.features='inception' needs torch-fidelity's Inception network:"
                             f" {INSTALL_HINT}, {off}") from None
    path = spec.weights_path(weights)
    if not path.is_file() and not (name == "inception" and download and not weights):
        if name == "inception":
            where = (f"--config.eval.inception_weights={weights!r} names no file" if weights else
                     f"no Inception weights at {path}")
            raise ValueError(f"FID needs the Inception weights: {where}; put"
                             f" {inception_cache_path().name} ({inception_url()}) there or pass"
                             " --config.eval.inception_weights=PATH, let torch-fidelity download it with"
                             f" --config.eval.download_inception=True, {off}")
        raise ValueError(f"the digits classifier's weights {path} are missing; rewrite them with"
                         f" python benchmarks/train_digits_classifier.py, {off}")
    if stats:
        load_user_statistics(stats, spec.dim)


# ------------------------------------------------------------------- reference statistics
def load_user_statistics(path, dim: int) -> Dict[str, np.ndarray]:
    """A user's statistics `.npz` with `mu` (D,) and `sigma` (D, D) (e.g. pytorch-fid's or
    torch-fidelity's files); `features` (N, D), if present, also serve KID.

    Raises:
      ValueError: no such file, missing keys or wrong shapes (one line naming the fix).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"--config.eval.stats={str(path)!r}: no such file; pass an .npz with mu and sigma,"
                         " or leave it unset to compute the statistics from the training split")
    with np.load(p) as f:
        if "mu" not in f or "sigma" not in f:
            raise ValueError(f"--config.eval.stats={str(path)!r} has keys {sorted(f.files)}; expected mu"
                             " and sigma (and optionally features)")
        out = {k: f[k] for k in f.files if k in ("mu", "sigma", "features")}
    if out["mu"].shape != (dim,) or out["sigma"].shape != (dim, dim):
        raise ValueError(f"--config.eval.stats={str(path)!r} has mu {out['mu'].shape} and sigma"
                         f" {out['sigma'].shape}; the features have {dim} dimensions")
    out["file"] = str(p)
    return out


def data_images(data: DataSpec, split: str, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """All images of a split as the samples are written: uint8 0..255 (N, C, H, W) (levels v ->
    to_uint8(v / (L - 1)), no flip, no dequantisation), and the labels (N,)."""
    base = data.source.split(data, split, seed)
    items = [base[i] for i in range(len(base))]
    raw = torch.stack([torch.as_tensor(x) for x, _ in items])
    labels = torch.tensor([int(y) for _, y in items], dtype=torch.long)
    if data.levels != 256:
        raw = to_uint8(raw.float() / (data.levels - 1))
    return raw, labels


def dataset_checksum(images: Tensor) -> str:
    """SHA-256 of uint8 images (N, C, H, W): their bytes and shape."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


def _atomic_savez(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reference_statistics(data: DataSpec, extractor: Extractor, cache_dir, *, batch_size: int = 500,
                         device: torch.device = torch.device("cpu"), progress: bool = False) -> Dict[str, np.ndarray]:
    """mu, sigma and the features of the training split in the extractor's feature space,
    computed once and cached as `<cache_dir>/<dataset>_<size>px_<data sha256[:16]>_<identity>.npz`
    (written atomically), then reused. Returns {"mu", "sigma", "features", "file"}."""
    images, _ = data_images(data, "train")
    name = f"{data.dataset}_{data.image_size}px_{dataset_checksum(images)[:16]}_{extractor.identity}.npz"
    path = Path(cache_dir).expanduser() / name
    if path.is_file():
        try:
            with np.load(path) as f:
                return {"mu": f["mu"], "sigma": f["sigma"], "features": f["features"], "file": str(path)}
        except (OSError, ValueError, KeyError):  # damaged: compute it again
            pass
    features, _ = extractor(images, batch_size=batch_size, device=device, progress=progress,
                            desc="reference statistics (training split)")
    mu, sigma = feature_statistics(features)
    _atomic_savez(path, mu=mu, sigma=sigma, features=features)
    return {"mu": mu, "sigma": sigma, "features": features, "file": str(path)}
