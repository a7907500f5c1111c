"""Conditional generation in the application: class-conditional training with label dropout,
the noise-conditional classifier, guided sampling through main.run, inpainting and colorization
from PNG files, and the mistakes reported before any work starts."""
import importlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import main
from configs import default_config
from sde_app import data as data_lib
from sde_app import distributed, factory, loading
from sde_app.data.testing import write_fake_cifar10
from sde_lib.guidance import NetworkClassifier, drop_labels
from sde_lib.losses import NoisyClassifierLoss
from test_app_cifar10 import tiny_cifar
from test_app_cli import tiny_sampling
from test_app_training import assert_bitwise_equal, final_state, tiny_toy, make_trainer

ROOT = Path(__file__).resolve().parents[1]


def conditional_toy(n_iters=30):
    """tiny_toy as a class-conditional model, every class sampled at w = 0, 1, 2, and a small
    classifier."""
    c = tiny_sampling(tiny_toy(n_iters))
    c.training.conditional, c.training.p_uncond = True, 0.2
    c.sampling.class_label, c.sampling.guidance = -1, "classifier_free"
    c.sampling.guidance_scale = (0.0, 1.0, 2.0)
    clf = c.classifier
    clf.model.hidden_dim, clf.model.num_blocks = 32, 1
    t = clf.training
    t.batch_size, t.n_iters, t.log_freq, t.eval_freq, t.checkpoint_freq = 128, 150, 50, 50, 50
    c.controllable.num_samples = 40
    c.controllable.method, c.controllable.sampler = "replacement", "pc"
    return c


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("toy_conditional")
    results = main.run(conditional_toy(), "train,train_classifier,sample", workdir, progress=False)
    return workdir, results


# ------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name,classes", [("vp_toy_conditional", 8), ("vp_cifar10_conditional", 10)])
def test_conditional_configs_wire_classes_from_the_data(name, classes):
    config = importlib.import_module(f"configs.{name}").get_config()
    factory.build_experiment(config)
    assert set(config) == set(default_config())
    assert config.training.conditional and 0.1 <= config.training.p_uncond <= 0.2
    assert factory.network_options(config)["num_classes"] == classes
    with torch.device("meta"):
        net = factory.build_network(config)
        clf = factory.build_classifier(config)
    assert net.class_embed.num_embeddings == classes + 1  # row `classes` is the null label
    assert clf.head.out_features == classes
    assert "num_classes" not in factory.network_options(importlib.import_module("configs.vp_toy").get_config())


# ---------------------------------------------------------------------------- label dropout
def test_label_dropout_rate():
    n, p, null = 20_000, 0.2, 8
    y = torch.arange(n) % 8
    dropped = drop_labels(y, p, null, torch.Generator().manual_seed(0))
    rate = (dropped == null).double().mean().item()
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n)  # 4 standard errors of a binomial rate
    kept = dropped != null
    assert torch.equal(dropped[kept], y[kept])
    assert torch.equal(drop_labels(y, 0.0, null), y)
    assert bool((drop_labels(y, 1.0, null) == null).all())
    with pytest.raises(ValueError, match="p_uncond"):
        drop_labels(y, 1.5, null)


def test_conditional_training_drops_labels_and_resumes_bitwise(tmp_path):
    ctx = distributed.Context()
    trainer = make_trainer(conditional_toy(), tmp_path / "ref", ctx, progress=False)
    seen = []
    loss_fn = trainer.loss_fn

    def recording_loss(score_fn, x, generator):
        if generator is trainer.loss_generator:  # training steps, not the test loss
            seen.append(score_fn.keywords["y"].clone())  # the labels bound into the score
        return loss_fn(score_fn, x, generator=generator)

    trainer.loss_fn = recording_loss
    assert trainer.run() == 30
    labels = torch.cat(seen)
    n, p = len(labels), 0.2
    assert labels.max() == 8 and labels.min() >= 0
    assert abs((labels == 8).double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)

    crashing = make_trainer(conditional_toy(), tmp_path / "run", ctx, progress=False)
    step_fn = crashing.train_step

    def crash_at_17(*args):
        if crashing.step == 17:
            raise KeyboardInterrupt("simulated crash")
        return step_fn(*args)

    crashing.train_step = crash_at_17
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    resumed = make_trainer(conditional_toy(), tmp_path / "run", ctx, progress=False)
    assert resumed.step == 10 and resumed.run() == 30
    assert_bitwise_equal(final_state(tmp_path / "ref"), final_state(tmp_path / "run"))


def test_conditional_snapshot_samples_every_class_with_its_conditional_score(tmp_path):
    config = conditional_toy(n_iters=20)
    config.training.snapshot_sampling = True
    trainer = make_trainer(config, tmp_path, distributed.Context(), progress=False)
    K = factory.build_data(config).num_classes
    score_fn_y, seen = trainer.ema_score, []

    def recording_score(x, t, y=None):
        seen.append(None if y is None else y.clone())
        return score_fn_y(x, t, y)

    trainer.ema_score = recording_score
    assert trainer.run() == 20
    snapshot = np.load(tmp_path / "snapshots" / "samples_00000020.npz")
    n = config.sampling.batch_size
    expected = torch.arange(n) % K
    assert torch.equal(torch.from_numpy(snapshot["labels"]), expected)
    assert snapshot["samples"].shape == (n, 2)
    assert (tmp_path / "snapshots" / "samples_00000020.png").exists()
    assert seen and all(y is not None and torch.equal(y, expected) for y in seen)  # never the null label


def test_classifier_loss_is_the_cross_entropy_of_perturbed_data():
    """NoisyClassifierLoss with the exact posterior p_t(y | x_t) of the toy mixture: -log p_t(y | x_t)
    at x_t = alpha x_0 + std z; NetworkClassifier hands the network the SDE's labels 999 t."""
    gm, sde = data_lib.default_toy_mixture(), factory.build_sde(conditional_toy())
    g = torch.Generator().manual_seed(0)
    x, y = gm.sample(256, generator=g, return_labels=True)
    t, z = torch.rand(256, generator=g) * 0.9 + 0.05, torch.randn(256, 2, generator=g)
    losses = NoisyClassifierLoss(sde)(lambda xt, tt: gm.class_log_posterior(xt, sde, tt), x, y, t=t, noise=z)
    alpha, std = sde.marginal_coeffs(t)
    x_t = alpha[:, None].float() * x + std[:, None].float() * z
    torch.testing.assert_close(losses, -gm.class_log_posterior(x_t, sde, t).gather(1, y[:, None])[:, 0])
    seen = []
    log_prob_fn = NetworkClassifier(lambda xt, labels: seen.append(labels) or torch.zeros(len(xt), 8), sde)
    log_p = log_prob_fn(x, t)
    torch.testing.assert_close(log_p.exp().sum(1), torch.ones(256))
    torch.testing.assert_close(seen[0], 999 * t)


# ---------------------------------------------------------------------- sampling with guidance
def test_classifier_free_guidance_grid_through_main_run(toy_run):
    workdir, results = toy_run
    sample = results["sample"]
    assert sample["scales"] == [0.0, 1.0, 2.0] and len(sample["runs"]) == 3
    assert Path(sample["files"]["grid"]) == workdir / "samples" / "guidance_grid.png"
    assert Path(sample["files"]["grid"]).stat().st_size > 10_000
    for w, run in zip(sample["scales"], sample["runs"]):
        stem = workdir / "samples" / f"step_00000030_ode_classifier_free_w{w:g}"
        assert run["files"]["npz"] == str(stem.with_suffix(".npz")) and run["nfe"] > 0
        saved = np.load(stem.with_suffix(".npz"))
        assert np.array_equal(saved["labels"], np.arange(20) % 8)  # -1: every class, cycled
        assert np.isfinite(saved["samples"]).all()
        classes = run["toy"]["classes"]
        assert set(classes["per_class"]) == set(range(8)) and 0 <= classes["purity_soft"] <= 1
        assert classes["class_entropy"] == pytest.approx(
            data_lib.default_toy_mixture().component_entropies()[np.arange(20) % 8].mean().item())


@pytest.mark.parametrize("method,extra", [("pc", {}), ("ddim", {"eta": 0.5}), ("ddpm", {"N": 50}),
                                          ("dpm_solver", {}), ("langevin", {"n_steps_each": 1}),
                                          ("sde_solver", {})])
@pytest.mark.parametrize("guidance", ["classifier_free", "classifier"])
def test_guidance_with_every_sampler(toy_run, method, extra, guidance):
    workdir, _ = toy_run
    config = conditional_toy()
    config.sampling.method, config.sampling.guidance, config.sampling.guidance_scale = method, guidance, 2.0
    for k, v in extra.items():
        (config.sampling if k == "N" else config.sampling[method])[k] = v
    summary = main.run(config, "sample", workdir, progress=False)["sample"]
    assert summary["method"] == method and summary["guidance"] == guidance and summary["nfe"] > 0
    symbol = "w" if guidance == "classifier_free" else "s"
    assert summary["files"]["npz"].endswith(f"step_00000030_{method}_{guidance}_{symbol}2.npz")
    assert np.isfinite(np.load(summary["files"]["npz"])["samples"]).all()


def test_classifier_training_reduces_cross_entropy(toy_run):
    workdir, results = toy_run
    config = conditional_toy()
    assert results["train_classifier"] == 150
    assert (workdir / "classifier" / "config.json").is_file()
    exp = factory.build_experiment(config)
    sde = exp.sde
    trained = loading.load_classifier(exp, workdir, torch.device("cpu"))  # weights_only
    torch.manual_seed(0)
    fresh = factory.build_classifier(config).eval()
    _, test_ds = exp.data.datasets(config.seed)
    loss = exp.classifier.loss

    def cross_entropy(log_prob_fn):
        with torch.no_grad():
            return loss(log_prob_fn, test_ds.x, test_ds.y, generator=torch.Generator().manual_seed(1)).mean().item()

    before, after = cross_entropy(NetworkClassifier(fresh, sde)), cross_entropy(trained.log_prob_fn)
    assert before == pytest.approx(math.log(8), abs=0.3)  # an untrained head: near-uniform
    assert after < before - 0.3, (before, after)


def test_classifier_guidance_of_an_unconditional_model(toy_run, tmp_path):
    """The toy run's classifier guides another (unconditional) score model: --classifier_checkpoint."""
    workdir, _ = toy_run
    config = tiny_sampling(tiny_toy(n_iters=20))
    config.training.snapshot_sampling = False
    config.classifier = conditional_toy().classifier
    config.sampling.class_label, config.sampling.guidance = [2, 6], "classifier"
    config.sampling.guidance_scale = 2.0
    ckpt = workdir / "classifier" / "checkpoints" / "checkpoint.pt"
    summary = main.run(config, "train,sample", tmp_path, classifier_checkpoint=str(ckpt),
                       progress=False)["sample"]
    assert summary["classifier"] == {"source": str(ckpt), "step": 150}
    assert summary["guidance"] == "classifier" and summary["guidance_scale"] == 2.0 and summary["nfe"] > 0
    saved = np.load(tmp_path / "samples" / "step_00000020_ode_classifier_s2.npz")
    assert np.array_equal(saved["labels"], np.arange(20) % 2 * 4 + 2)  # [2, 6] cycled


def test_toy_inpainting_keeps_the_known_coordinate(toy_run):
    workdir, _ = toy_run
    summary = main.run(conditional_toy(), "inpaint", workdir, progress=False)["inpaint"]
    samples = np.load(summary["files"]["npz"])["samples"]
    assert samples.shape == (40, 2) and np.all(samples[:, 0] == np.float32(1.5))
    assert np.isfinite(samples).all() and summary["nfe"] == 5  # N = 5 Euler-Maruyama steps
    toy = summary["toy"]
    assert toy["exact_mean"][0] == pytest.approx(1.558, abs=0.01)  # the mixture's E[x1 | x0 = 1.5]
    assert Path(summary["files"]["png"]).name == "step_00000030_inpaint_x0=1.5.png"


# ---------------------------------------------------------------------------------- CIFAR-10
def tiny_conditional_cifar(root):
    c = tiny_cifar("vp_cifar10_conditional", root)
    c.sampling.num_samples = c.sampling.batch_size = 10
    clf = c.classifier
    clf.model.nf, clf.model.ch_mult = 16, (1, 2)
    clf.training.batch_size, clf.training.n_iters, clf.training.log_freq = 4, 2, 1
    c.controllable.num_samples = 3  # sampler "pc": Euler-Maruyama, N = 3 steps
    return c


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    write_fake_cifar10(root, n_train=16, n_test=8)
    workdir = tmp_path_factory.mktemp("cifar_conditional")
    results = main.run(tiny_conditional_cifar(root), "train,train_classifier,sample", workdir,
                       progress=False)
    return root, workdir, results


def test_cifar10_classifier_free_and_classifier_guidance(cifar_run):
    root, workdir, results = cifar_run
    assert results["train"] == 2 and results["train_classifier"] == 2
    sample = results["sample"]
    assert sample["guidance_scale"] == 2.0 and sample["nfe"] == 3
    saved = np.load(sample["files"]["npz"])
    assert saved["samples"].shape == (10, 3, 16, 16) and saved["samples"].dtype == np.uint8
    assert np.array_equal(saved["labels"], np.arange(10))
    assert Path(sample["files"]["png"]).name == "step_00000002_pc_classifier_free_w2.png"

    config = tiny_conditional_cifar(root)
    config.sampling.guidance, config.sampling.guidance_scale = "classifier", (0.0, 1.0)
    result = main.run(config, "sample", workdir, progress=False)["sample"]
    assert [r["classifier"]["step"] for r in result["runs"]] == [2, 2]
    grid = Image.open(result["files"]["grid"])
    assert grid.size == (10 * 18 + 2, 2 * 18 + 2)  # a row of 10 images per scale


def cli_config_file(config, folder):
    """A --config file that rebuilds `config` (from its JSON: main.py cannot import the tests)."""
    (folder / "config.json").write_text(config.to_json_best_effort())
    path = folder / "config.py"
    path.write_text("import json\nimport ml_collections\n\n\ndef get_config():\n"
                    f"    return ml_collections.ConfigDict(json.loads(open({str(folder / 'config.json')!r}).read()))\n")
    return path


def write_png(path, pixels):
    Image.fromarray(pixels).save(path)
    return str(path)


def test_inpaint_and_colorize_from_png_on_the_command_line(cifar_run, tmp_path):
    root, workdir, _ = cifar_run
    rng = np.random.default_rng(0)
    image = write_png(tmp_path / "photo.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    known = np.zeros((16, 16), np.uint8)
    known[:, :9] = 255  # left 9 columns known
    mask = write_png(tmp_path / "mask.png", known)
    config_py = cli_config_file(tiny_conditional_cifar(root), tmp_path)
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--noprogress", f"--config={config_py}",
                           "--mode=inpaint,colorize", f"--workdir={workdir}", f"--input={image}",
                           f"--mask={mask}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stem = tmp_path / "photo_inpaint_step_00000002"
    out = np.load(stem.with_suffix(".npz"))
    assert out["samples"].shape == (3, 3, 16, 16)
    assert np.array_equal(out["samples"][:, :, :, :9], np.broadcast_to(out["input"][:, :, :, :9], (3, 3, 16, 9)))
    assert np.array_equal(out["input"][0].transpose(1, 2, 0), np.asarray(Image.open(image)))
    assert Image.open(stem.with_suffix(".png")).size == (5 * 18 + 2, 18 + 2)  # input, masked, 3 samples
    report = json.loads(stem.with_suffix(".json").read_text())
    assert report["max_known_pixel_change"] == 0 and report["known_pixels"] == 16 * 9

    colour = tmp_path / "photo_colorize_step_00000002"
    report = json.loads(colour.with_suffix(".json").read_text())
    assert report["max_gray_level_change"] < 1e-5  # channel means = the input's grey levels
    assert np.load(colour.with_suffix(".npz"))["samples"].shape == (3, 3, 16, 16)

    bad = known.copy()
    bad[0, 0] = 128
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--noprogress", f"--config={config_py}",
                           "--mode=inpaint", f"--workdir={workdir}", f"--input={image}",
                           f"--mask={write_png(tmp_path / 'bad.png', bad)}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "is not binary: it has grey levels [128]" in done.stderr.strip().splitlines()[-1]


# -------------------------------------------------------------------------------- mistakes
@pytest.mark.parametrize("changes,words", [
    ({"training.conditional": False}, ["guidance='classifier_free' needs a class-conditional model"]),
    ({"sampling.class_label": 8}, ["label(s) [8] out of range", "8 classes (0..7)"]),
    ({"sampling.class_label": "cat"}, ["class_label='cat'", "expected an int"]),
    ({"sampling.class_label": None}, ["needs class labels", "-1 for all"]),
    ({"sampling.guidance": "none"}, ["guidance_scale=(0.0, 1.0, 2.0) is a list", "guidance='none'"]),
    ({"sampling.guidance_scale": -1.0}, ["guidance_scale=-1.0", "number >= 0"]),
    ({"training.p_uncond": 0.0}, ["p_uncond=0 never learned"]),
    ({"model.num_classes": 10}, ["model.num_classes=10", "conditional on 8 classes"]),
    ({"training.conditional": False, "sampling.guidance": "none", "sampling.guidance_scale": 1.0},
     ["class_label=-1 on an unconditional model"]),
    ({"data.dataset": "two_moons"}, ["training.conditional=True", "'two_moons' has no class labels"]),
    ({"controllable.class_label": 9}, ["controllable.class_label=9", "label(s) [9] out of range"]),
    ({"controllable.method": "smc"}, ["controllable.sampler='pc'", "ddpm"]),
])
def test_conditional_mistakes_are_reported_before_work(tmp_path, changes, words):
    config = conditional_toy()
    for field, value in changes.items():
        group, key = field.split(".")
        with config[group].ignore_type():
            config[group][key] = value
    with pytest.raises(ValueError) as err:
        main.run(config, "train,sample", tmp_path / "w", progress=False)
    for w in words:
        assert w in str(err.value), str(err.value)
    assert not (tmp_path / "w").exists()


def test_missing_classifier_and_unlabelled_classifier_data(toy_run, tmp_path):
    workdir, _ = toy_run
    shutil.copytree(workdir / "checkpoints", tmp_path / "checkpoints")  # a score model, no classifier
    config = conditional_toy()
    config.sampling.guidance = "classifier"
    with pytest.raises(ValueError, match=r"needs a classifier, but .*classifier/checkpoints has none"
                                         r".*--mode=train_classifier,sample.*--classifier_checkpoint"):
        main.run(config, "sample", tmp_path, progress=False)
    with pytest.raises(ValueError, match="no such file"):
        main.run(config, "sample", tmp_path, classifier_checkpoint="missing.pt", progress=False)
    config = tiny_toy()
    config.data.dataset = "swiss_roll"
    with pytest.raises(ValueError, match="train_classifier needs labelled data"):
        main.run(config, "train_classifier", tmp_path / "w", progress=False)


@pytest.mark.parametrize("what,words", [
    ("image_size", ["is 20x20 pixels; the model takes 16x16 images"]),
    ("mask_size", ["--mask", "is 8x8 pixels but the input is 16x16"]),
    ("no_mask", ["--mode inpaint needs --mask"]),
    ("missing", ["cannot be read as an image"]),
    ("toy_input", ["on 2-D data --mode inpaint fixes one coordinate"]),
])
def test_input_mistakes(cifar_run, tmp_path, what, words):
    root, workdir, _ = cifar_run
    config = tiny_conditional_cifar(root)
    rng = np.random.default_rng(0)
    image = write_png(tmp_path / "in.png", rng.integers(0, 256, (20 if what == "image_size" else 16,) * 2 + (3,),
                                                        dtype=np.uint8))
    mask = write_png(tmp_path / "m.png", np.full((8, 8) if what == "mask_size" else (16, 16), 255, np.uint8))
    kwargs = {"input_path": image, "mask_path": mask}
    if what == "no_mask":
        kwargs["mask_path"] = None
    if what == "missing":
        kwargs["input_path"] = str(tmp_path / "nothing.png")
    if what == "toy_input":
        config, workdir = conditional_toy(), tmp_path
    with pytest.raises(ValueError) as err:
        main.run(config, "inpaint", workdir, progress=False, **kwargs)
    for w in words:
        assert w in str(err.value), str(err.value)
