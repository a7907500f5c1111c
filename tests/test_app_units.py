"""Application building blocks: configs, factory, EMA, learning rate, RNG capture, checkpoints."""
import importlib
import logging
import random

import numpy as np
import pytest
import torch

from configs import default_config
from sde_lib import sampling as sampling_lib
from sde_app import checkpoints, ema, factory, rng, training

CONFIGS = ["vp_toy", "ve_toy", "subvp_toy", "vp_cifar10", "subvp_cifar10", "ve_cifar10",
           "vp_cifar10_deep", "subvp_cifar10_deep", "ve_cifar10_deep", "ddpm_cifar10"]


def get_config(name):
    return importlib.import_module(f"configs.{name}").get_config()


# ------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_is_valid(name):
    config = get_config(name)
    factory.build_experiment(config)  # builds the network on the meta device
    assert set(config) == set(default_config())  # the same groups everywhere


def test_sampling_groups_are_the_sampler_declarations():
    """config.sampling.<method> holds exactly the options each method declares, at its defaults
    (but for the default config's choice of predictor and corrector)."""
    sampling = default_config().sampling
    for method, declaration in sampling_lib.METHODS.items():
        defaults = declaration.option_defaults()
        assert set(sampling[method].keys()) == set(defaults), method
        changed = {k for k, v in defaults.items() if sampling[method][k] != v}
        assert changed <= ({"predictor", "corrector"} if method == "pc" else set()), method


def test_paper_hyperparameters():
    """Song et al. (2021) App. H / official configs/default_cifar10_configs.py and per-model files."""
    for name in CONFIGS[3:]:
        c = get_config(name)
        assert (c.optim.lr, c.optim.warmup, c.optim.grad_clip, c.optim.beta1, c.optim.eps) == \
            (2e-4, 5000, 1.0, 0.9, 1e-8)
        assert c.training.batch_size == 128 and c.training.eps == 1e-5 and c.sampling.eps == 1e-3
        assert c.training.n_iters == (950_000 if name.endswith("_deep") else 1_300_000)
        assert c.model.num_res_blocks == (8 if name.endswith("_deep") else 2 if name == "ddpm_cifar10" else 4)
    ve = get_config("ve_cifar10")
    assert (ve.model.ema_rate, ve.model.prediction, ve.model.scale_by_sigma, ve.data.centered) == \
        (0.999, "score", True, False)
    assert (ve.sampling.pc.predictor, ve.sampling.pc.corrector, ve.sampling.pc.snr) == ("reverse_diffusion", "langevin", 0.16)
    assert (ve.sde.sigma_min, ve.sde.sigma_max, ve.training.reduce_mean) == (0.01, 50.0, False)
    vp = get_config("vp_cifar10")
    assert (vp.model.ema_rate, vp.model.prediction, vp.model.embedding_type, vp.data.centered) == \
        (0.9999, "eps", "positional", True)
    assert (vp.sampling.pc.predictor, vp.sampling.pc.corrector, vp.training.reduce_mean) == ("euler_maruyama", "none", True)
    ddpm = get_config("ddpm_cifar10")
    assert (ddpm.training.loss, ddpm.model.time_labels, ddpm.sampling.method, ddpm.sde.N) == \
        ("ddpm", "discrete", "ddpm", 1000)


@pytest.mark.parametrize("field,value,words", [
    ("sampling.method", "euler", ["sampling.method", "'euler'", "ode"]),
    ("sampling.pc.predictor", "rk4", ["sampling.pc", "predictor", "'rk4'", "euler_maruyama"]),
    ("training.loss", "ddsm", ["training.loss", "dsm"]),
    ("training.loss", "smld", ["smld", "vesde"]),
    ("eval.solver", "euler", ["fixed-step", "RK45"]),
    ("model.prediction", "noise", ["model.prediction", "eps"]),
    ("sde.name", "vp", ["sde.name", "vpsde"]),
    ("training.mixed_precision", "fp16", ["bf16"]),
])
def test_check_config_names_field_and_choices(field, value, words):
    config = get_config("vp_toy")
    *groups, key = field.split(".")
    node = config
    for g in groups:
        node = node[g]
    node[key] = value
    with pytest.raises(ValueError) as err:
        factory.build_experiment(config)
    for w in words:
        assert w in str(err.value)


def test_build_sde_takes_only_its_fields():
    config = get_config("ve_toy")
    sde = factory.build_sde(config)
    assert (type(sde).__name__, sde.sigma_max, sde.N) == ("VESDE", 10.0, 1000)
    config.sde.sigmamax = 3.0
    with pytest.raises(ValueError, match="sigmamax"):
        factory.build_sde(config)


# ------------------------------------------------------------------------- optimizer and EMA
def test_learning_rate_warmup_and_cosine():
    optim = default_config().optim
    assert training.learning_rate(1, optim) == pytest.approx(2e-4 / 5000)
    assert training.learning_rate(5000, optim) == training.learning_rate(10**6, optim) == 2e-4
    optim.schedule, optim.warmup = "cosine", 10
    optim.n_iters = 110
    assert training.learning_rate(10, optim) == pytest.approx(2e-4)
    assert training.learning_rate(60, optim) == pytest.approx(1e-4)
    assert training.learning_rate(110, optim) == pytest.approx(0.0, abs=1e-20)


def test_ema_follows_the_official_rate_warmup():
    net = torch.nn.Linear(2, 1)
    avg = ema.ExponentialMovingAverage(net, rate=0.999)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    avg.update(net)  # decay min(0.999, 1/10)
    torch.testing.assert_close(avg.shadow.weight, start + 0.9)
    assert avg.decay() == pytest.approx(2 / 11)
    state = avg.state_dict()
    other = ema.ExponentialMovingAverage(torch.nn.Linear(2, 1), rate=0.999)
    other.load_state_dict(state)
    assert other.num_updates == 1 and torch.equal(other.shadow.weight, avg.shadow.weight)
    assert not any(p.requires_grad for p in avg.shadow.parameters())


def test_rng_capture_restore_roundtrip():
    g = torch.Generator().manual_seed(3)
    state = rng.capture(g)
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    rng.restore(state, g)
    again = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    assert first == again


# ---------------------------------------------------------------------------------- checkpoints
def _state():
    return {"step": 7, "model": {"w": torch.randn(3, 4), "b": torch.zeros(2, dtype=torch.bfloat16)},
            "list": [1, 2.5, "x", None, torch.arange(3)], "config": '{"a": 1}'}


def test_checkpoint_roundtrip_and_checksum(tmp_path):
    state = _state()
    checkpoints.atomic_save(state, tmp_path / "c.pt")
    back = checkpoints.load_state(tmp_path / "c.pt")
    assert checkpoints.state_digest(back) == checkpoints.state_digest(state)
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert not list(tmp_path.glob(".*.tmp"))
    # A value changed inside a file that still loads: the checksum catches it.
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    payload["state"]["model"]["w"][0, 0] += 1.0
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(checkpoints.CorruptCheckpointError, match="checksum"):
        checkpoints.load_state(tmp_path / "tampered.pt")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_is_detected(tmp_path, damage):
    path = tmp_path / "c.pt"
    checkpoints.atomic_save(_state(), path)
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[: len(blob) // 2], "empty": b"",
                      "garbage": blob[:100] + bytes(200) + blob[300:]}[damage])
    with pytest.raises(checkpoints.CorruptCheckpointError):
        checkpoints.load_state(path)


def test_fallback_to_previous_checkpoint(tmp_path, caplog):
    ckdir = checkpoints.CheckpointDir(tmp_path)
    for step in (1, 2, 3):
        ckdir.save_resume({"step": step})
    ckdir.save_snapshot({"step": 2}, 2)
    assert [p.name for p in ckdir.candidates()] == ["checkpoint.pt", "checkpoint.prev.pt", "snapshot_00000002.pt"]
    assert ckdir.load_latest()[0]["step"] == 3
    ckdir.resume_path.write_bytes(ckdir.resume_path.read_bytes()[:40])
    with caplog.at_level(logging.WARNING):
        state, path = ckdir.load_latest()
    assert (state["step"], path.name) == (2, "checkpoint.prev.pt")
    assert sum("damaged checkpoint" in r.getMessage() for r in caplog.records) == 1
    ckdir.previous_path.write_bytes(b"junk")
    assert ckdir.load_latest()[1].name == "snapshot_00000002.pt"
    (ckdir.dir / ".checkpoint.pt.abc.tmp").write_bytes(b"partial")
    ckdir.remove_temporaries()
    assert not list(ckdir.dir.glob(".*.tmp"))


def test_checkpoint_loads_with_weights_only(tmp_path):
    """Only tensors, numbers, strings, lists and dicts: torch.load(weights_only=True) reads it."""
    path = tmp_path / "c.pt"
    checkpoints.atomic_save(_state(), path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format"] == checkpoints.FORMAT and len(payload["sha256"]) == 64
