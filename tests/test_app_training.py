"""The training loop in-process: resumes bit for bit, stops on a NaN, writes its outputs."""
import math

import pytest
import torch

from configs import vp_toy
from sde_app import checkpoints, distributed, factory, training


def experiment(config, modes=("train",)):
    return factory.build_experiment(config, modes)


def make_trainer(config, workdir, ctx, **kwargs):
    exp = experiment(config)
    return training.Trainer(exp.train, exp, workdir, ctx, **kwargs)


def tiny_toy(n_iters=30):
    """vp_toy shrunk to run in a fraction of a second."""
    c = vp_toy.get_config()
    c.model.hidden_dim, c.model.num_blocks = 32, 1
    t = c.training
    t.batch_size, t.n_iters, t.log_freq, t.eval_freq = 32, n_iters, 10, 10
    t.checkpoint_freq, t.snapshot_freq, t.snapshot_sampling = 10, 20, True
    c.optim.warmup = 5
    t.likelihood_weighting = t.importance_sampling = True  # t drawn by the loss generator too
    c.data.num_train, c.data.num_test = 512, 64
    c.sampling.num_samples = c.sampling.batch_size = 32
    c.sampling.ode.rtol = c.sampling.ode.atol = 1e-3
    return c


def final_state(workdir):
    state = checkpoints.load_state(checkpoints.CheckpointDir(workdir).resume_path)
    return {k: state[k] for k in ("step", "model", "ema", "optimizer", "data")}


def assert_bitwise_equal(a, b, where=""):
    if torch.is_tensor(a):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_bitwise_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), where


def test_resume_after_a_crash_is_bitwise_identical(tmp_path):
    ctx = distributed.Context()
    training.train(experiment(tiny_toy()), tmp_path / "ref", ctx, progress=False)

    crashing = make_trainer(tiny_toy(), tmp_path / "run", ctx, progress=False)
    step_fn = crashing.train_step

    def crash_at_17(x):
        if crashing.step == 17:
            raise KeyboardInterrupt("simulated crash")
        return step_fn(x)

    crashing.train_step = crash_at_17
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    assert checkpoints.load_state(tmp_path / "run/checkpoints/checkpoint.pt")["step"] == 10
    resumed = make_trainer(tiny_toy(), tmp_path / "run", ctx, progress=False)
    assert resumed.step == 10 and resumed.resumed_from.endswith("checkpoint.pt")
    assert resumed.run() == 30
    assert_bitwise_equal(final_state(tmp_path / "ref"), final_state(tmp_path / "run"))

    # Outputs: snapshots at 20 and 30 (final), their sample plots, TensorBoard events.
    names = sorted(p.name for p in (tmp_path / "ref/checkpoints").iterdir())
    assert names == ["checkpoint.prev.pt", "checkpoint.pt", "snapshot_00000020.pt", "snapshot_00000030.pt"]
    assert (tmp_path / "ref/snapshots/samples_00000020.png").is_file()
    assert list((tmp_path / "ref/tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "ref/config.json").is_file()
    # Training again with the same command does nothing more.
    assert training.train(experiment(tiny_toy()), tmp_path / "ref", ctx, progress=False) == 30


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tiny_toy(), tmp_path, distributed.Context(), progress=False)
    loss_fn = trainer.loss_fn

    def nan_at_step_15(score_fn, x, generator):
        losses = loss_fn(score_fn, x, generator=generator)
        return losses * float("nan") if trainer.step == 14 else losses

    trainer.loss_fn = nan_at_step_15
    with pytest.raises(training.NonFiniteLossError) as err:
        trainer.run()
    message = str(err.value)
    for words in ("step 15", "loss=nan", "learning rate", "grad_clip", "last good checkpoint"):
        assert words in message
    # Detected at the log step 20, before the checkpoint of step 20 was written.
    ckdir = checkpoints.CheckpointDir(tmp_path)
    assert checkpoints.load_state(ckdir.resume_path)["step"] == 10
    assert not ckdir.snapshot_path(20).exists()


def test_bf16_autocast_and_discrete_loss_train(tmp_path):
    config = tiny_toy(n_iters=3)
    config.training.mixed_precision = "bf16"
    config.training.loss = "ddpm"
    config.training.likelihood_weighting = config.training.importance_sampling = False
    config.model.time_labels = "discrete"
    config.training.snapshot_sampling = False
    assert training.train(experiment(config), tmp_path, distributed.Context(), progress=False) == 3
    state = checkpoints.load_state(tmp_path / "checkpoints/checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in state["ema"]["weights"].values())


def test_batch_size_must_split_over_ranks(tmp_path):
    config = tiny_toy()
    config.training.batch_size = 33
    with pytest.raises(ValueError, match="not divisible by the 2 processes"):
        make_trainer(config, tmp_path, distributed.Context(world_size=2), progress=False)


@pytest.mark.slow
def test_torch_compile_trains(tmp_path):
    config = tiny_toy(n_iters=3)
    config.training.compile = True
    config.training.snapshot_sampling = False
    assert training.train(experiment(config), tmp_path, distributed.Context(), progress=False) == 3
