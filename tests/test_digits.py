"""The 8x8 digits: the fixed split, the 17 levels through dequantisation and bits/dim, the shipped
classifier, and (slow) the whole digits job: trained, sampled and evaluated in at most 15 minutes
on 2 CPU cores, better than the Gaussian mixture on test bits/dim and on FID."""
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sde_app import features
from sde_app.data import DataSpec
from sde_app.data.digits import Digits, digits_split_indices, load_digits_arrays
from sde_lib.likelihood import bits_per_dim

ROOT = Path(__file__).resolve().parents[1]


def digits_spec(**kw):
    return DataSpec(dataset="digits", image_size=8, num_channels=1, random_flip=False, **kw)


def test_fixed_split():
    train, test = digits_split_indices("train"), digits_split_indices("test")
    assert len(train) == 1500 and len(test) == 297
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(1797))
    np.testing.assert_array_equal(np.concatenate([train, test]), np.random.default_rng(0).permutation(1797))
    images, labels = load_digits_arrays()
    ds = Digits("test")
    x, y = ds[5]
    assert x.dtype == torch.uint8 and x.shape == (1, 8, 8) and y == labels[test[5]]
    np.testing.assert_array_equal(x.numpy(), images[test[5]])
    assert sorted(np.unique(images).tolist()) == list(range(17))


def test_dequantisation_over_17_levels():
    spec = digits_spec(uniform_dequantization=True)
    assert spec.levels == 17 and spec.shape == (1, 8, 8) and spec.num_classes == 10
    train, test = spec.datasets(seed=0)
    v = Digits("train").images[:50].float()
    x = torch.stack([train[i][0] for i in range(50)])
    x01 = (x + 1) / 2
    # (v + u) / 17 with u in [0, 1): each value stays inside its own level's bin.
    assert ((x01 * 17 - v >= 0) & (x01 * 17 - v < 1)).all()
    plain = digits_spec().datasets(seed=0)[1]
    np.testing.assert_allclose((plain[0][0] + 1) / 2 * 16, Digits("test").images[0].float(), atol=1e-5)


def test_bits_per_dim_of_the_uniform_density_is_log2_of_17():
    # The uniform density on [-1, 1)^64 (log p = -64 log 2) spreads each digit's mass evenly over
    # its 17 levels: exactly log2(17) bits per dimension.
    logp = torch.tensor([-64 * math.log(2.0)], dtype=torch.float64)
    spec = digits_spec()
    got = bits_per_dim(logp, spec.dim, centered=True, num_bins=spec.levels)
    assert got.item() == pytest.approx(math.log2(17), abs=1e-12)


def test_wrong_image_size_is_refused():
    with pytest.raises(ValueError, match="--config.data.image_size=8"):
        DataSpec(dataset="digits", image_size=32, num_channels=1)
    with pytest.raises(ValueError, match="num_channels=3 but digits has 1 channels"):
        DataSpec(dataset="digits", image_size=8, num_channels=3)


def test_shipped_classifier_loads_safely_and_reaches_its_accuracy():
    blob = torch.load(features.DIGITS_CLASSIFIER_WEIGHTS, weights_only=True)
    assert blob["format"] == features.DIGITS_CLASSIFIER_FORMAT
    net, info = features.load_digits_classifier()
    test = Digits("test")
    with torch.no_grad():
        feats, logits = net(features.digits_uint8(test.images))
    accuracy = (logits.argmax(1) == test.labels).double().mean().item()
    assert accuracy == pytest.approx(info["test_accuracy"], abs=1e-12)
    assert round(accuracy * 297) == 295  # docs/evaluation.md: 99.33 %, 295 of 297
    assert feats.shape == (297, 64) and sum(p.numel() for p in net.parameters()) == 121_994


def test_digits_network_size():
    from configs import vp_digits
    from sde_app import factory

    net = factory.build_network(vp_digits.get_config())
    assert sum(p.numel() for p in net.parameters()) == 748_737  # docs: a DDPM++ of 0.75 M parameters


def test_classifier_training_is_deterministic():
    a, info_a = features.train_digits_classifier(seed=3, epochs=1)
    b, info_b = features.train_digits_classifier(seed=3, epochs=1)
    assert info_a == info_b
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.slow
def test_digits_job_beats_the_gaussian_mixture(tmp_path):
    """The README's digits job end to end (its wall time is a benchmark: bench_digits.py, RESULTS.md)."""
    workdir = tmp_path / "digits"
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--config", str(ROOT / "configs" / "vp_digits.py"),
                           "--mode", "train,sample,eval", f"--workdir={workdir}", "--noprogress",
                           f"--config.eval.stats_dir={tmp_path / 'stats'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"digits job: {wall:.0f} s")
    report = json.loads(next((workdir / "eval").glob("step_*.json")).read_text())
    assert report["sample_quality"]["num_samples"] == 1500
    # Better by more than two standard errors of the difference (independent estimates).
    for key in ("bits_per_dim", "fid"):
        gap = report["versus_references"]["gaussian_mixture"][key]
        assert gap["difference"] < -2 * gap["stderr"], (key, gap)
    assert (workdir / "samples").is_dir() and list((workdir / "samples").glob("*.png"))
