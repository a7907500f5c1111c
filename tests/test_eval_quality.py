"""--mode eval with FID, IS and KID: end to end on the fake CIFAR-10 archive with an Inception
network of the FID architecture and random weights (written by the test), and on the digits with
the shipped classifier; a kill between rounds resumes to the identical FID; missing weights or
statistics are one error line before any sampling."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from configs import vp_digits
from sde_app import evaluation, features
from sde_app.data.testing import write_fake_cifar10
from test_app_cifar10 import tiny_cifar

ROOT = Path(__file__).resolve().parents[1]
HAS_FIDELITY = importlib.util.find_spec("torch_fidelity") is not None
needs_fidelity = pytest.mark.skipif(not HAS_FIDELITY, reason="torch-fidelity is not installed (pip install"
                                    " --no-deps 'torch-fidelity>=0.3'; .ci/run does)")


# ------------------------------------------------------------------------------- helpers
def tiny_digits(tmp, n_iters=4, num_samples=120):
    """vp_digits shrunk: a narrow network trained a few steps, DDIM with 5 steps, 8 likelihood
    points, rounds of 40 samples."""
    c = vp_digits.get_config()
    c.threads = 0
    c.model.nf, c.model.num_res_blocks, c.model.attn_resolutions = 8, 1, ()
    t = c.training
    t.batch_size, t.n_iters, t.log_freq, t.eval_freq, t.checkpoint_freq = 32, n_iters, 2, 2, 2
    c.optim.warmup = 0
    c.sampling.method, c.sampling.N = "ddim", 5
    e = c.eval
    e.num_points, e.batch_size, e.num_samples, e.bootstrap, e.kid_subsets = 8, 40, num_samples, 0, 10
    e.gmm_components = (1, 2)
    e.stats_dir = str(Path(tmp) / "stats")
    return c


def cifar_fid_config(cifar_root, tmp, weights, num_samples=200):
    """The tiny CIFAR-10 config of test_app_cifar10 with FID on: `num_samples` samples in rounds of
    50, the random-weight Inception network."""
    c = tiny_cifar("vp_cifar10", cifar_root)
    e = c.eval
    e.num_samples, e.batch_size, e.inception_weights = num_samples, 50, str(weights)
    e.stats_dir, e.kid_subsets, e.kid_subset_size = str(Path(tmp) / "stats"), 10, 50
    return c


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    results = main.run(tiny_digits(tmp), "train,eval", tmp / "run", progress=False)
    return tmp, results


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    if not HAS_FIDELITY:
        pytest.skip("torch-fidelity is not installed (pip install --no-deps 'torch-fidelity>=0.3'; .ci/run does)")
    return features.write_random_inception_weights(tmp_path_factory.mktemp("inception") / "random.pth", seed=0)


@pytest.fixture(scope="module")
def cifar_trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    write_fake_cifar10(root, n_train=32, n_test=8)
    tmp = tmp_path_factory.mktemp("cifar_run")
    config = tiny_cifar("vp_cifar10", root)
    config.eval.num_samples = 0
    main.run(config, "train", tmp / "run", progress=False)
    return root, tmp


# ------------------------------------------------------------------------- digits, end to end
def test_digits_eval_reports_model_and_references(digits_run):
    tmp, results = digits_run
    text = (tmp / "run" / "eval" / "step_00000004.json").read_text()
    report = json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert report["fid"] == results["eval"]["fid"]
    for row in [report] + [report["references"][k] for k in ("floor", "gaussian_mixture")]:
        assert np.isfinite(row["fid"]) and row["fid"] > 0
        assert np.isfinite(row["kid"]["mean"]) and 1 <= row["inception_score"]["mean"] <= 10
    assert report["bits_per_dim"] == report["likelihood"]["bits_per_dim"] and report["likelihood"]["levels"] == 17
    gm = report["references"]["gaussian_mixture"]
    assert gm["components"] in (1, 2) and np.isfinite(gm["bits_per_dim"]["mean"]) and gm["num_samples"] == 120
    assert report["references"]["floor"]["bits_per_dim"] is None and report["references"]["floor"]["num_samples"] == 297
    sq = report["sample_quality"]
    assert sq["num_samples"] == 120 and sq["rounds"] == 3 and sq["nfe_per_sample"] == 5
    assert sq["feature_network"]["test_accuracy"] > 0.98 and Path(sq["stats_file"]).is_file()
    assert "digits_8px_" in sq["stats_file"] and "digits_classifier-" in sq["stats_file"]
    gap = report["versus_references"]["gaussian_mixture"]["fid"]["difference"]
    assert gap == pytest.approx(report["fid"] - gm["fid"])
    assert list((tmp / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_statistics_are_cached_and_reused(digits_run, tmp_path):
    tmp, results = digits_run
    stats = Path(results["eval"]["sample_quality"]["stats_file"])
    before = stats.stat().st_mtime_ns
    config = tiny_digits(tmp)
    config.eval.references = ()
    again = main.run(config, "eval", tmp / "run", progress=False)["eval"]
    assert again["sample_quality"]["stats_file"] == str(stats) and stats.stat().st_mtime_ns == before
    # Every round was read back: the same samples, the same FID.
    assert again["sample_quality"]["rounds_read"] == 3 and again["fid"] == results["eval"]["fid"]


def test_more_samples_reuse_the_rounds_drawn(digits_run):
    tmp, results = digits_run
    config = tiny_digits(tmp, num_samples=160)
    config.eval.references = ()
    more = main.run(config, "eval", tmp / "run", progress=False)["eval"]
    assert more["sample_quality"]["rounds_read"] == 3 and more["sample_quality"]["rounds_drawn"] == 1
    assert more["sample_quality"]["num_samples"] == 160


def test_user_statistics_file(digits_run, tmp_path):
    tmp, results = digits_run
    with np.load(results["eval"]["sample_quality"]["stats_file"]) as f:
        np.savez(tmp_path / "mine.npz", mu=f["mu"], sigma=f["sigma"])
    config = tiny_digits(tmp)
    config.eval.references, config.eval.stats = (), str(tmp_path / "mine.npz")
    report = main.run(config, "eval", tmp / "run", progress=False)["eval"]
    assert report["fid"] == pytest.approx(results["eval"]["fid"], rel=1e-12)
    assert report["kid"] is None and "features" in report["kid_note"]
    assert report["sample_quality"]["stats_file"] == str(tmp_path / "mine.npz")


def test_interrupted_evaluation_resumes_to_the_identical_fid(digits_run, tmp_path, monkeypatch):
    tmp, results = digits_run
    checkpoint = str(tmp / "run" / "checkpoints" / "checkpoint.pt")
    config = tiny_digits(tmp)
    config.eval.references = ()
    real_save, written = evaluation.atomic_save, []

    class Killed(Exception):
        pass

    def save_then_die(state, path, **kw):
        real_save(state, path, **kw)
        written.append(path)
        if len(written) == 2:
            raise Killed

    monkeypatch.setattr(evaluation, "atomic_save", save_then_die)
    with pytest.raises(Killed):
        main.run(config, "eval", tmp_path / "w", checkpoint=checkpoint, progress=False)
    monkeypatch.setattr(evaluation, "atomic_save", real_save)
    resumed = main.run(config, "eval", tmp_path / "w", checkpoint=checkpoint, progress=False)["eval"]
    assert resumed["sample_quality"]["rounds_read"] == 2 and resumed["sample_quality"]["rounds_drawn"] == 1
    assert resumed["fid"] == results["eval"]["fid"]
    assert resumed["kid"]["mean"] == results["eval"]["kid"]["mean"]


def test_range_of_snapshots(tmp_path):
    config = tiny_digits(tmp_path, n_iters=4, num_samples=40)
    config.training.snapshot_freq = 2
    config.eval.references = ()
    main.run(config, "train", tmp_path / "run", progress=False)
    config.eval.begin_ckpt, config.eval.end_ckpt = 1, 4
    out = main.run(config, "eval", tmp_path / "run", progress=False)["eval"]
    assert [r["step"] for r in out["reports"]] == [2, 4]
    for step in (2, 4):
        report = json.loads((tmp_path / "run" / "eval" / f"step_{step:08d}.json").read_text())
        assert np.isfinite(report["fid"]) and np.isfinite(report["bits_per_dim"]["mean"])
    config.eval.begin_ckpt, config.eval.end_ckpt = 5, 9
    with pytest.raises(ValueError, match=r"no snapshot in that range .*snapshot steps: \[2, 4\]"):
        main.run(config, "eval", tmp_path / "run", progress=False)


# ------------------------------------------------------------------- mistakes before any work
@needs_fidelity
def test_missing_inception_weights_is_one_line_before_sampling(cifar_trained, tmp_path, monkeypatch):
    root, tmp = cifar_trained
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty torch-fidelity cache
    config = cifar_fid_config(root, tmp_path, weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError) as err:
        main.run(config, "eval", tmp / "run", progress=False)
    message = str(err.value)
    assert "\n" not in message and "missing.pth" in message and "--config.eval.num_samples=0" in message
    config.eval.inception_weights = None
    with pytest.raises(ValueError) as err:
        main.run(config, "eval", tmp / "run", progress=False)
    message = str(err.value)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / features.INCEPTION_FILE) in message
    assert "--config.eval.download_inception=True" in message and "--config.eval.inception_weights=PATH" in message
    assert not (tmp / "run" / "eval").exists()  # nothing was sampled or written


def test_missing_statistics_file_is_one_line(digits_run, tmp_path):
    tmp, _ = digits_run
    config = tiny_digits(tmp)
    config.eval.stats = str(tmp_path / "nowhere.npz")
    with pytest.raises(ValueError, match=r"^--config.eval.stats=.*nowhere.npz.*: no such file"):
        main.run(config, "eval", tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()


def test_without_torch_fidelity_the_error_says_how_to_install(cifar_trained, tmp_path, monkeypatch):
    root, tmp = cifar_trained

    def missing():
        raise ImportError("No module named 'torch_fidelity'")

    monkeypatch.setattr(features, "inception_class", missing)
    with pytest.raises(ValueError, match="pip install --no-deps 'torch-fidelity>=0.3'.*num_samples=0"):
        main.run(cifar_fid_config(root, tmp_path, weights=tmp_path / "w.pth"), "eval", tmp / "run", progress=False)


def test_fid_on_toy_data_is_refused():
    from configs import vp_toy

    config = vp_toy.get_config()
    config.eval.num_samples = 10
    with pytest.raises(ValueError, match="need image data.*--config.eval.num_samples=0"):
        main.run(config, "eval", "/nonexistent/w", progress=False)


@needs_fidelity
def test_cli_missing_weights_exit_code_2(cifar_trained, tmp_path):
    root, tmp = cifar_trained
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--noprogress", "--mode=eval", f"--workdir={tmp / 'run'}",
         "--config", str(ROOT / "configs" / "vp_cifar10.py"), f"--config.data.root={root}",
         "--config.data.image_size=16", f"--config.eval.inception_weights={tmp_path / 'none.pth'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "TORCH_HOME": str(tmp_path)})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: FID needs the Inception weights") and "none.pth" in lines[-1]


# ------------------------------------------------- CIFAR-10, random-weight Inception network
def test_torch_fidelity_names_the_cache_file_we_check(inception_weights):
    assert features.inception_url().endswith("/" + features.INCEPTION_FILE)


def eval_command(root, tmp, weights, workdir):
    """A subprocess that evaluates the tiny CIFAR run with FID (so that the test can SIGKILL it)."""
    code = ("import sys; sys.path.insert(0, {tests!r}); import torch; torch.set_num_threads(1);"
            " import main; from test_eval_quality import cifar_fid_config;"
            " main.run(cifar_fid_config({root!r}, {tmp!r}, {weights!r}), 'eval', {workdir!r}, progress=False)"
            ).format(tests=str(ROOT / "tests"), root=str(root), tmp=str(tmp), weights=str(weights),
                     workdir=str(workdir))
    return [sys.executable, "-c", code]


def test_cifar10_fid_end_to_end_resumes_after_a_kill(cifar_trained, inception_weights, tmp_path):
    root, tmp = cifar_trained
    run = tmp / "run"
    # 1. An uninterrupted evaluation: 200 samples in 4 rounds of 50.
    reference = main.run(cifar_fid_config(root, tmp_path, inception_weights), "eval", run, progress=False)["eval"]
    assert reference["sample_quality"]["rounds"] == 4 and reference["sample_quality"]["rounds_drawn"] == 4
    assert np.isfinite(reference["fid"]) and reference["fid"] > 0 and np.isfinite(reference["kid"]["mean"])
    assert 1.0 <= reference["inception_score"]["mean"] <= 1008
    assert reference["sample_quality"]["feature_network"]["identity"].startswith("inception-2015-12-05-")
    with np.load(reference["sample_quality"]["stats_file"]) as f:
        assert f["mu"].shape == (2048,) and f["sigma"].shape == (2048, 2048) and f["features"].shape == (32, 2048)

    # 2. The same evaluation in another workdir (same weights), SIGKILLed after its first round.
    other = tmp_path / "other"
    other.mkdir()
    for name in ("checkpoints",):
        os.symlink(run / name, other / name)
    proc = subprocess.Popen(eval_command(root, tmp_path, inception_weights, other), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, evaluation.ROUND_SLEEP_ENV: "30"})
    deadline = time.monotonic() + 300
    while not list((other / "eval").glob("rounds_*/round_00000.pt")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the evaluation never wrote its first round"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(list((other / "eval").glob("rounds_*/round_*.pt"))) == 1

    # 3. Rerun: it reads round 0, draws rounds 1-3, and ends with the identical FID.
    resumed = main.run(cifar_fid_config(root, tmp_path, inception_weights), "eval", other, progress=False)["eval"]
    assert resumed["sample_quality"]["rounds_read"] == 1 and resumed["sample_quality"]["rounds_drawn"] == 3
    assert resumed["fid"] == reference["fid"] and resumed["kid"] == reference["kid"]
    assert resumed["inception_score"] == reference["inception_score"]
    report = json.loads((other / "eval" / "step_00000002.json").read_text())
    assert report["fid"] == reference["fid"] and np.isfinite(report["bits_per_dim"]["mean"])


def test_inception_features_of_grey_images_and_batches(inception_weights):
    extractor = features.FEATURES["inception"].load(Path(inception_weights), False, torch.device("cpu"))
    grey = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    f1, z1 = extractor(grey, batch_size=3)
    f2, _ = extractor(grey.expand(-1, 3, -1, -1), batch_size=1)
    assert f1.shape == (3, 2048) and z1.shape == (3, 1008) and np.isfinite(f1).all()
    np.testing.assert_allclose(f1, f2, rtol=1e-4, atol=1e-5)  # batch size changes only round-off
    assert f1.std() > 1e-3  # random weights keep the activations' scale


def test_torchrun_two_processes_split_the_rounds(tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(ROOT / "main.py"), "--config", str(ROOT / "configs" / "vp_digits.py"), "--mode=train,eval",
        f"--workdir={tmp_path / 'run'}", "--device=cpu", "--noprogress",
        "--config.model.nf=8", "--config.model.attn_resolutions=()", "--config.training.batch_size=32",
        "--config.training.n_iters=2", "--config.training.log_freq=1", "--config.optim.warmup=0",
        "--config.sampling.method=ddim", "--config.sampling.N=3", "--config.eval.num_points=4",
        "--config.eval.batch_size=10", "--config.eval.num_samples=50", "--config.eval.bootstrap=0",
        "--config.eval.kid_subsets=5", "--config.eval.references=()", f"--config.eval.stats_dir={tmp_path}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "run" / "eval" / "step_00000002.json").read_text())
    sq = report["sample_quality"]
    assert report["world_size"] == 2 and sq["rounds"] == 3 and np.isfinite(report["fid"])  # 20, 20, 10
    rounds = sorted(Path(sq["rounds_folder"]).glob("round_*.pt"))
    images = torch.cat([evaluation.load_state(p)["images"] for p in rounds])
    assert images.shape == (50, 1, 8, 8)
    assert len({bytes(im.numpy()) for im in images}) == 50  # each rank drew its own share
