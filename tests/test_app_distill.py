"""`--mode distill` (progressive distillation through the training loop): a killed round resumes
and ends with exactly the weights of an uninterrupted one; each student is a checkpoint that
`--mode sample` samples with its step count; `--mode consistency` from the same teacher gives a
checkpoint that `--config.sampling.method=consistency` samples in N steps; bad settings are named before any work (main.py turns
the factory's ValueError into one `error:` line and exit 2, as for every config field)."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import vp_toy
from sde_app import checkpoints, distill_run, factory
from test_app_resume import kill, wait_for
from test_app_training import assert_bitwise_equal, final_state

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--noprogress", "--config.model.hidden_dim=32", "--config.model.num_blocks=1",
        "--config.data.num_train=512", "--config.data.num_test=64"]
DISTILL = ["--config.distill.rounds=2", "--config.distill.student_steps=4", "--config.distill.n_iters=60",
           "--config.distill.batch_size=32", "--config.distill.checkpoint_freq=10", "--config.distill.log_freq=50"]


def command(workdir, mode, *extra):
    return [sys.executable, str(ROOT / "main.py"), f"--mode={mode}", f"--workdir={workdir}", *TINY, *extra]


@pytest.mark.slow
def test_killed_distillation_resumes_bit_exactly_and_students_and_consistency_models_sample(tmp_path):
    teacher = tmp_path / "teacher"
    done = subprocess.run(command(teacher, "train", "--config.training.n_iters=50", "--config.training.batch_size=64"),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("ref", "run"):
        shutil.copytree(teacher, tmp_path / name)
    reference = subprocess.Popen(command(tmp_path / "ref", "distill", *DISTILL), cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "run"
    round_1 = checkpoints.CheckpointDir(run / "distill" / "round_1")
    proc = subprocess.Popen(command(run, "distill", *DISTILL), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for(round_1.previous_path.is_file, proc)
    kill(proc)
    first = checkpoints.load_state(round_1.resume_path)["step"]
    assert 10 <= first < 60
    done = subprocess.run(command(run, "distill", *DISTILL), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {round_1.resume_path} at step {first}" in done.stdout
    assert reference.wait(timeout=300) == 0, reference.stdout.read()
    for k in (1, 2):
        assert_bitwise_equal(final_state(tmp_path / "ref" / "distill" / f"round_{k}"),
                             final_state(run / "distill" / f"round_{k}"))
    state = checkpoints.load_state(checkpoints.CheckpointDir(run / "distill" / "round_2").resume_path)
    assert state["distill"] == {"round": 2, "student_steps": 2, "schedule": "logsnr", "eps": 1e-3}

    # The round's printed flags (its checkpoint) sample the student with the 2 DDIM steps it learnt,
    # read from the checkpoint: the same samples as that sampler set by hand.
    flags = [line.split("sample it with: ")[1] for line in done.stdout.splitlines() if "round 2: 2 steps" in line]
    assert len(flags) == 1
    checkpoint = flags[0].split()[1]
    assert checkpoint == f"--checkpoint={checkpoints.CheckpointDir(run / 'distill' / 'round_2').resume_path}"
    sampled = subprocess.run(command(run, "sample", "--config.sampling.num_samples=100", checkpoint),
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert sampled.returncode == 0, sampled.stderr
    assert "method=ddim, NFE=2" in sampled.stdout and "a distilled student (round 2)" in sampled.stdout
    npz = next((run / "samples").glob("*_ddim.npz"))
    automatic = np.load(npz)["samples"]
    by_hand = ["--config.sampling.method=ddim", "--config.sampling.N=2", "--config.sampling.denoise=False",
               "--config.sampling.ddim.schedule=logsnr", "--config.sampling.eps=0.001",
               "--config.sampling.student_sampler=False"]
    sampled = subprocess.run(command(run, "sample", "--config.sampling.num_samples=100", checkpoint, *by_hand),
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert sampled.returncode == 0, sampled.stderr
    assert "a distilled student" not in sampled.stdout
    np.testing.assert_array_equal(np.load(npz)["samples"], automatic)
    # student_sampler=False: the config's own sampler (vp_toy: the probability-flow ODE).
    sampled = subprocess.run(command(run, "sample", "--config.sampling.num_samples=100", checkpoint,
                                     "--config.sampling.student_sampler=False"),
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert sampled.returncode == 0, sampled.stderr
    assert "method=ode" in sampled.stdout

    # --mode consistency (distillation) from the same teacher: a checkpoint that samples in N steps.
    done = subprocess.run(command(run, "consistency", "--config.consistency.n_iters=20", "--config.consistency.batch_size=64",
                                  "--config.consistency.n_levels=10", "--config.consistency.checkpoint_freq=10"),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ck = checkpoints.CheckpointDir(run / "consistency" / "distillation")
    state = checkpoints.load_state(ck.resume_path)
    assert state["step"] == 20 and state["consistency"] == {"kind": "distillation", "eps": 1e-3, "sigma_data": 0.5}
    assert (ck.dir.parent / "tensorboard").is_dir()
    flags = done.stdout.split("sample it with: ")[1].split()
    sampled = subprocess.run(command(run, "sample", "--config.sampling.num_samples=100", *flags[1:-1],
                                     "--config.sampling.N=3"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert sampled.returncode == 0, sampled.stderr
    assert "method=consistency, NFE=3" in sampled.stdout


@pytest.mark.parametrize("field, value, message", [
    ("student_steps", 6, "config.distill.student_steps=6 does not halve 2 times"),
    ("rounds", 0, "config.distill.rounds=0"),
    ("schedule", "edm", "distill.schedule"),
    ("eps", 2.0, "config.distill.eps=2.0"),
    ("weighting", "snr", "distill.weighting"),
])
def test_bad_distill_settings_are_named(field, value, message):
    config = vp_toy.get_config()
    config.distill.rounds = 3
    config.distill[field] = value
    with pytest.raises(ValueError, match=message):
        factory.build_experiment(config, ["distill"])


def test_distill_settings_reach_the_rounds_loss():
    config = vp_toy.get_config()
    factory.apply_overrides(config, [("distill.weighting", "output"), ("distill.schedule", "uniform"),
                                     ("distill.eps", "0.01")])
    exp = factory.build_experiment(config, ["distill"], check_network=False)
    loss = distill_run.round_loss(exp, exp.score_model.build_net(), 4)
    assert (loss.weighting, loss.schedule, loss.eps, loss.student_steps) == ("output", "uniform", 0.01, 4)
