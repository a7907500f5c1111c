"""main.py: mode lists, sampler choice by config, outputs, and mistakes reported in one line
before any work starts."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sde_lib import sampling as sampling_lib

import main
from test_app_training import tiny_toy

ROOT = Path(__file__).resolve().parents[1]


def tiny_sampling(config, method="ode"):
    config.sampling.method = method
    config.sampling.num_samples, config.sampling.batch_size = 20, 8
    config.sampling.ode.rtol = config.sampling.ode.atol = 1e-3
    config.sampling.N = 5
    e = config.eval
    e.num_points, e.batch_size, e.rtol, e.atol = 16, 16, 1e-3, 1e-3
    config.training.snapshot_sampling = False
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy run trained for a few steps, sampled and evaluated by one call."""
    workdir = tmp_path_factory.mktemp("toy")
    results = main.run(tiny_sampling(tiny_toy(n_iters=20)), "train,sample,eval", workdir, progress=False)
    return workdir, results


def test_train_sample_eval_outputs(trained):
    workdir, results = trained
    assert results["train"] == 20
    sample = results["sample"]
    assert sample["num_samples"] == 20 and sample["nfe"] > 0 and sample["wall_s"] > 0
    points = np.load(workdir / "samples" / "step_00000020_ode.npz")["samples"]
    assert points.shape == (20, 2) and np.isfinite(points).all()
    assert (workdir / "samples" / "step_00000020_ode.png").stat().st_size > 1000
    assert "true_nll_of_samples" in sample["toy"]
    report = json.loads((workdir / "eval" / "step_00000020.json").read_text())
    ll = report["likelihood"]
    assert ll["n_points"] == 16 and ll["divergence"] == "exact" and ll["nfe"] > 0
    true = ll["true"]
    assert true["entropy_nats"]["mean"] == pytest.approx(2.248, abs=0.01)  # docs/data.md
    gap = ll["nll_nats_per_example"]["mean"] - true["nll_nats_per_example"]["mean"]
    assert true["gap_nats_per_example"]["mean"] == pytest.approx(gap)
    assert ll["nll_nats_per_dim"]["mean"] == pytest.approx(ll["nll_nats_per_example"]["mean"] / 2)


@pytest.mark.parametrize("method,extra", [("pc", {}), ("ddim", {"eta": 0.5}), ("ddpm", {"N": 50}),
                                          ("langevin", {"n_steps_each": 1}), ("sde_solver", {})])
def test_any_sampler_by_config(trained, method, extra, tmp_path):
    workdir, _ = trained
    config = tiny_sampling(tiny_toy(n_iters=20), method)
    for k, v in extra.items():
        (config.sampling if k == "N" else config.sampling[method])[k] = v
    summary = main.run(config, "sample", workdir, progress=False)["sample"]
    assert summary["method"] == method and summary["nfe"] > 0
    assert np.isfinite(np.load(summary["files"]["npz"])["samples"]).all()


def test_explicit_checkpoint(trained, tmp_path):
    workdir, _ = trained
    snapshot = workdir / "checkpoints" / "snapshot_00000020.pt"
    summary = main.run(tiny_sampling(tiny_toy(n_iters=20)), "sample", tmp_path, progress=False,
                       checkpoint=str(snapshot))["sample"]
    assert summary["source"] == str(snapshot)


def test_checkpoint_of_another_model_is_refused(trained, tmp_path):
    workdir, _ = trained
    config = tiny_sampling(tiny_toy(n_iters=20))
    config.model.hidden_dim = 64
    with pytest.raises(ValueError, match="model.hidden_dim: checkpoint 32, config 64"):
        main.run(config, "sample", workdir, progress=False)


@pytest.mark.parametrize("modes,kwargs,words", [
    ("trian", {}, ["unknown mode 'trian'", "train, sample, eval"]),
    ("train,,", {"workdir": None}, ["--workdir is required"]),
    ("sample", {}, ["needs a trained model", "--mode=train,sample", "--checkpoint"]),
    ("eval", {"checkpoint": "missing.pt"}, ["--checkpoint='missing.pt': no such file"]),
])
def test_usage_mistakes(tmp_path, modes, kwargs, words):
    kwargs = {"workdir": tmp_path / "w", **kwargs}
    with pytest.raises(ValueError) as err:
        main.run(tiny_toy(), modes, kwargs.pop("workdir"), progress=False, **kwargs)
    for w in words:
        assert w in str(err.value)
    assert not (tmp_path / "w").exists()


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "--noprogress", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cli_config_override_error_exit_code(tmp_path):
    done = run_cli("--mode=sample", f"--workdir={tmp_path}", "--config.sampling.method=euler")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: config.sampling.method='euler' is not one of {list(sampling_lib.METHODS)};"
        " set --config.sampling.method=...")


def test_cli_diverging_run_exits_nonzero_without_later_checkpoint(tmp_path):
    done = run_cli("--mode=train", f"--workdir={tmp_path}", "--config.optim.lr=1e30",
                   "--config.optim.warmup=0", "--config.training.n_iters=50",
                   "--config.training.log_freq=10", "--config.training.checkpoint_freq=1",
                   "--config.model.hidden_dim=32", "--config.data.num_train=512")
    assert done.returncode == 3
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("error: non-finite training loss at step ")
    bad_step = int(message.split("at step ")[1].split(":")[0])
    from sde_app.checkpoints import load_state

    assert load_state(tmp_path / "checkpoints" / "checkpoint.pt")["step"] < bad_step
