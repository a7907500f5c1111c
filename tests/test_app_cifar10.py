"""Every CIFAR-10 config trains, samples and evaluates end to end on a small fake CIFAR-10 archive
in the official format, shrunk to fit a CPU (16x16 images, narrow two-level networks, a few
sampler steps, two likelihood points)."""
import importlib
import json

import numpy as np
import pytest

import main
from sde_app.data.testing import write_fake_cifar10

CIFAR_CONFIGS = ["vp_cifar10", "subvp_cifar10", "ve_cifar10", "vp_cifar10_deep",
                 "subvp_cifar10_deep", "ve_cifar10_deep", "ddpm_cifar10", "edm_cifar10", "iddpm_cifar10"]



@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    write_fake_cifar10(root, n_train=16, n_test=8)
    return root


def tiny_cifar(name, root):
    c = importlib.import_module(f"configs.{name}").get_config()
    c.data.root, c.data.image_size = str(root), 16
    m = c.model
    m.nf = 32 if m.name == "ddpm" else 16  # the DDPM U-Net uses GroupNorm(32) everywhere
    m.ch_mult, m.attn_resolutions = (1, 2), (8,)
    m.num_res_blocks = 2 if name.endswith("_deep") else 1
    t = c.training
    t.batch_size, t.n_iters, t.log_freq, t.eval_freq = 4, 2, 1, 1
    t.checkpoint_freq, t.snapshot_freq, t.snapshot_sampling = 1, 0, False
    c.optim.warmup = 0
    # DDPM's chain needs N > beta_max = 20 levels (beta_i = beta(t_i) / N < 1); the others take 3.
    c.sampling.N = 21 if c.sampling.method == "ddpm" else 3
    c.sampling.num_samples, c.sampling.batch_size = 4, 4
    e = c.eval
    e.num_points, e.batch_size, e.loss_batches, e.rtol, e.atol = 2, 2, 1, 1e-2, 1e-2
    e.num_samples = 0  # FID on the fake archive: tests/test_eval_quality.py
    return c


@pytest.mark.parametrize("name", CIFAR_CONFIGS)
def test_cifar10_config_end_to_end(name, cifar_root, tmp_path):
    config = tiny_cifar(name, cifar_root)
    if name == "vp_cifar10":  # one config also samples at its snapshot
        config.training.snapshot_freq, config.training.snapshot_sampling = 2, True
    results = main.run(config, "train,sample,eval", tmp_path, progress=False)
    assert results["train"] == 2

    sample = results["sample"]
    steps = config.sampling.N
    if sample["method"] == "edm":  # Heun: two evaluations per step but the last (Karras et al. 2022, Alg. 1)
        assert sample["nfe"] == 2 * steps - 1
    elif config.model.learned_variance:  # the cosine chain's level 0 has beta_0 = 0 (the data): skipped
        assert sample["nfe"] == steps - 1
    else:
        assert sample["nfe"] == (2 * steps if config.sampling.pc.corrector == "langevin" and sample["method"] == "pc" else steps)
    images = np.load(sample["files"]["npz"])["samples"]
    assert images.shape == (4, 3, 16, 16) and images.dtype == np.uint8
    assert (tmp_path / "samples" / "step_00000002_{}.png".format(sample["method"])).is_file()

    report = json.loads((tmp_path / "eval" / "step_00000002.json").read_text())
    bpd = report["likelihood"]["bits_per_dim"]
    assert np.isfinite(bpd["mean"]) and bpd["n"] == 2 and report["likelihood"]["nfe"] > 0
    assert np.isfinite(report["test_loss"]["mean"]) and report["test_loss"]["n"] == 2
    if config.model.learned_variance:  # the discrete-time bound beside the ODE likelihood
        vlb = report["vlb"]["bits_per_dim"]
        assert np.isfinite(vlb["mean"]) and vlb["n"] == 2
    if name == "vp_cifar10":
        assert (tmp_path / "snapshots" / "samples_00000002.png").is_file()


def test_cifar10_missing_is_reported_before_work(tmp_path):
    config = tiny_cifar("vp_cifar10", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found") as err:
        main.run(config, "train", tmp_path / "run", progress=False)
    assert "config.data.root" in str(err.value)
    assert not (tmp_path / "run").exists()
