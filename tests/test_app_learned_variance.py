"""Learned variances in the application: configs/iddpm_cifar10.py trains with the hybrid loss,
samples with the learned variances (respaced), and `--mode eval` reports the discrete VLB beside
the ODE likelihood; on the toy the VLB sits beside the true NLL. Tiny networks, few levels."""
import json

import numpy as np
import pytest

import main
from configs.vp_toy import get_config as toy_config
from sde_app.factory import build
from test_app_cifar10 import cifar_root, tiny_cifar  # noqa: F401  (the fixture)


def test_iddpm_cifar10_end_to_end(cifar_root, tmp_path):  # noqa: F811
    config = tiny_cifar("iddpm_cifar10", cifar_root)
    config.sde.N = 21                      # a short cosine chain: the VLB takes N network calls
    config.sampling.N = None               # respacing walks the trained chain
    config.sampling.ddpm.respace = 5
    # (eval's ODE likelihood on the stiff cosine SDE is too slow for the suite: the toy test
    # below covers eval)
    results = main.run(config, "train,sample", tmp_path, progress=False)
    assert results["train"] == 2
    assert results["sample"]["nfe"] == 5
    images = np.load(results["sample"]["files"]["npz"])["samples"]
    assert images.shape == (4, 3, 16, 16)


def lv_toy(n_iters=2):
    c = toy_config()
    c.sde.N = 50
    c.model.learned_variance = True
    c.model.hidden_dim, c.model.num_blocks = 32, 1
    c.training.loss = "hybrid"
    t = c.training
    t.batch_size, t.n_iters, t.log_freq, t.eval_freq, t.checkpoint_freq = 64, n_iters, 1, 1, 1
    c.sampling.method, c.sampling.ddpm.variance, c.sampling.num_samples = "ddpm", "learned", 8
    c.eval.num_points, c.eval.batch_size, c.eval.loss_batches = 16, 16, 1
    c.eval.rtol = c.eval.atol = 1e-3
    c.eval.num_samples = 0
    return c


def test_toy_eval_reports_vlb_beside_true_nll(tmp_path):
    config = lv_toy()
    results = main.run(config, "train,sample,eval", tmp_path, progress=False)
    assert results["sample"]["nfe"] == 50
    report = json.loads(next((tmp_path / "eval").glob("*.json")).read_text())
    vlb = report["vlb"]
    assert vlb["decoder"] == "gaussian" and vlb["n_points"] == 16
    gap = vlb["gap_to_true_nll_nats_per_example"]
    assert np.isfinite(gap["mean"])
    true_nll = report["likelihood"]["true"]["nll_nats_per_example"]["mean"]
    assert vlb["nats_per_example"]["mean"] == pytest.approx(true_nll + gap["mean"], rel=1e-9)


@pytest.mark.parametrize("change, message", [
    (dict(loss="dsm"), "hybrid loss only"),
    (dict(learned_variance=False), "hybrid loss only"),
    (dict(prediction="x0"), "prediction=eps"),
    (dict(variance_without_model=True), "variance='learned' needs a network"),
    (dict(hybrid_lambda=-1.0), "hybrid_lambda"),
])
def test_bad_learned_variance_settings_fail_before_work(change, message):
    c = lv_toy()
    if "loss" in change:
        c.training.loss = change["loss"]
    if "learned_variance" in change:
        c.model.learned_variance = False
    if "prediction" in change:
        c.model.prediction = change["prediction"]
    if "hybrid_lambda" in change:
        c.training.hybrid_lambda = change["hybrid_lambda"]
    if "variance_without_model" in change:
        c.model.learned_variance, c.training.loss = False, "dsm"
    with pytest.raises(ValueError, match=message):
        build.build_experiment(c, ["train", "sample"])
