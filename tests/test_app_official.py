"""Sampling and evaluating official score_sde_pytorch checkpoints through main.py (EMA weights).

Fixtures: /work/shared/fixtures/official (set SCORE_SDE_OFFICIAL_FIXTURES to move them).
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from sde_app import factory, loading
from test_app_cifar10 import tiny_cifar

FIXTURES = Path(os.environ.get("SCORE_SDE_OFFICIAL_FIXTURES", "/work/shared/fixtures/official"))
needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / "ddpmpp_vp.pth").is_file(),
    reason=f"official fixtures not found at {FIXTURES} (set SCORE_SDE_OFFICIAL_FIXTURES)")


def official_args(case):
    return dict(official_checkpoint=str(FIXTURES / f"{case}.pth"),
                official_config=str(FIXTURES / f"{case}.json"))


@needs_fixtures
@pytest.mark.parametrize("case,config_name,prediction", [
    ("ddpmpp_vp", "vp_cifar10", "eps"), ("ncsnpp_ve", "ve_cifar10", "score"), ("ddpm_vp", "ddpm_cifar10", "eps")])
def test_official_checkpoint_loads_ema_weights_and_samples(case, config_name, prediction, tmp_path):
    config = tiny_cifar(config_name, tmp_path)
    official = factory.read_official_config(FIXTURES / f"{case}.json")
    factory.apply_official_config(config, official)
    assert (config.model.prediction, config.data.image_size) == (prediction, 16)
    exp = factory.build_experiment(config, check_network=False)
    model = loading.load_official(exp, str(FIXTURES / f"{case}.pth"), official, torch.device("cpu"))
    io = torch.load(FIXTURES / f"{case}_io.pt", weights_only=True)
    with torch.no_grad():
        out = model.net(io["x"], io["labels"])
    # The EMA weights, not the raw ones (parity itself is tests/test_official.py's job).
    assert (out - io["out_ema"]).abs().max() < 1e-3 * (io["out_model"] - io["out_ema"]).abs().max()

    config = tiny_cifar(config_name, tmp_path)
    summary = main.run(config, "sample", tmp_path, progress=False, **official_args(case))["sample"]
    assert summary["step"] == 12345 and summary["source"].endswith(f"{case}.pth")
    images = np.load(summary["files"]["npz"])["samples"]
    assert images.shape == (4, 3, 16, 16) and images.dtype == np.uint8
    assert (tmp_path / "samples" / f"official_step_00012345_{summary['method']}.png").is_file()


@needs_fixtures
def test_official_checkpoint_eval(tmp_path):
    from sde_app.data.testing import write_fake_cifar10

    write_fake_cifar10(tmp_path, n_train=10, n_test=4)
    config = tiny_cifar("vp_cifar10", tmp_path)
    report = main.run(config, "eval", tmp_path, progress=False, **official_args("ddpmpp_vp"))["eval"]
    saved = json.loads((tmp_path / "eval" / "official_step_00012345.json").read_text())
    assert saved["likelihood"]["bits_per_dim"]["n"] == 2
    assert np.isfinite(report["likelihood"]["bits_per_dim"]["mean"])


@needs_fixtures
def test_official_flags_are_checked(tmp_path):
    config = tiny_cifar("vp_cifar10", tmp_path)
    with pytest.raises(ValueError, match="go together"):
        main.run(config, "sample", tmp_path, official_checkpoint=str(FIXTURES / "ddpmpp_vp.pth"))
    with pytest.raises(ValueError, match="not train"):
        main.run(config, "train", tmp_path, **official_args("ddpmpp_vp"))
