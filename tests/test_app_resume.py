"""SIGKILL the training command at arbitrary points, also inside a checkpoint write, damage its
newest checkpoint, rerun the same command: it resumes and ends with exactly the weights of an
uninterrupted run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sde_app import checkpoints
from test_app_training import assert_bitwise_equal, final_state

ROOT = Path(__file__).resolve().parents[1]
N_ITERS = 600


def train_command(workdir):
    return [sys.executable, str(ROOT / "main.py"), "--mode=train", f"--workdir={workdir}",
            "--noprogress", "--config.model.hidden_dim=32", "--config.model.num_blocks=1",
            "--config.training.batch_size=32", f"--config.training.n_iters={N_ITERS}",
            "--config.training.log_freq=200", "--config.training.eval_freq=200",
            "--config.training.checkpoint_freq=50", "--config.training.snapshot_freq=0",
            "--config.data.num_train=512", "--config.data.num_test=64", "--config.optim.warmup=5"]


def start(workdir, **env):
    return subprocess.Popen(train_command(workdir), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})


def wait_for(predicate, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc={proc.returncode}) before it could be killed:\n"
                        + proc.stdout.read())
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the training run")
        time.sleep(0.01)


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return proc.stdout.read()


def test_sigkill_anywhere_then_resume_equals_uninterrupted_run(tmp_path):
    reference = start(tmp_path / "ref")  # runs alongside the interrupted runs
    run = tmp_path / "run"
    ckdir = checkpoints.CheckpointDir(run)

    # 1. Kill somewhere after the second resume checkpoint.
    proc = start(run)
    wait_for(ckdir.previous_path.is_file, proc)
    time.sleep(0.1)
    kill(proc)
    first = checkpoints.load_state(ckdir.resume_path)["step"]
    assert 100 <= first < N_ITERS

    # 2. Rerun, and kill it inside a checkpoint write (after the temporary file is complete,
    #    before it is moved into place).
    # The first kill may itself have left a temporary file; clear it (the rerun would do the same
    # at start-up) so that the wait below sees the new run's write, not the old leftover.
    ckdir.remove_temporaries()
    proc = start(run, **{checkpoints.SLOW_WRITE_ENV: "60"})
    wait_for(lambda: any(ckdir.dir.glob(".*.tmp")), proc)
    out = kill(proc)
    assert f"resuming from {ckdir.resume_path} at step {first}" in out
    assert checkpoints.load_state(ckdir.resume_path)["step"] == first  # untouched

    # 3. Damage the newest checkpoint as a failing disk would; the rerun reports it in one line,
    #    falls back to the previous one and still finishes with the reference weights.
    blob = ckdir.resume_path.read_bytes()
    ckdir.resume_path.write_bytes(blob[: len(blob) // 3])
    fallback_step = checkpoints.load_state(ckdir.previous_path)["step"]
    done = subprocess.run(train_command(run), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    damaged = [line for line in done.stderr.splitlines() if "damaged checkpoint" in line]
    assert len(damaged) == 1 and "checkpoint.pt" in damaged[0]
    assert f"at step {fallback_step}" in done.stdout
    assert not list(ckdir.dir.glob(".*.tmp"))

    assert reference.wait(timeout=300) == 0, reference.stdout.read()
    assert_bitwise_equal(final_state(tmp_path / "ref"), final_state(run))


def cifar_dropout_command(workdir, root):
    """DDPM++ with dropout 0.1 on a fake CIFAR-10 archive, shrunk to 16x16 and two levels."""
    return [sys.executable, str(ROOT / "main.py"), "--config=configs/vp_cifar10.py", "--mode=train",
            f"--workdir={workdir}", "--noprogress", f"--config.data.root={root}", "--config.data.image_size=16",
            "--config.model.nf=16", "--config.model.ch_mult=(1,2)", "--config.model.attn_resolutions=(8,)",
            "--config.model.num_res_blocks=1", "--config.model.dropout=0.1", "--config.training.batch_size=4",
            "--config.training.n_iters=120", "--config.training.checkpoint_freq=10",
            "--config.training.snapshot_freq=0", "--config.training.snapshot_sampling=False",
            "--config.training.log_freq=20", "--config.training.eval_freq=20", "--config.optim.warmup=0",
            "--config.threads=1"]


@pytest.mark.slow
def test_sigkill_five_times_with_dropout_on_cifar10_then_resume_equals_uninterrupted_run(tmp_path):
    """Five kills at random moments of one DDPM++ run with dropout, each rerun resuming: the final
    weights equal an uninterrupted run's bit for bit (dropout draws from the global torch RNG, whose
    state the checkpoint restores; nothing may draw from it between restore and the next step)."""
    import random

    from sde_app.data.testing import write_fake_cifar10

    write_fake_cifar10(tmp_path / "cifar", n_train=16, n_test=8)
    reference = subprocess.Popen(cifar_dropout_command(tmp_path / "ref", tmp_path / "cifar"), cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "run"
    ckdir = checkpoints.CheckpointDir(run)
    rng = random.Random(0)
    kills = 0
    while kills < 5:
        before = ckdir.resume_path.stat().st_mtime_ns if ckdir.resume_path.exists() else 0
        proc = subprocess.Popen(cifar_dropout_command(run, tmp_path / "cifar"), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # after this run's first checkpoint write, a random moment within the next few steps
        wait_for(lambda: ckdir.resume_path.exists() and ckdir.resume_path.stat().st_mtime_ns > before, proc)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is not None:
            break  # the run finished first: nothing left to kill
        kill(proc)
        kills += 1
    assert kills == 5
    assert checkpoints.load_state(ckdir.resume_path)["step"] < 120
    done = subprocess.run(cifar_dropout_command(run, tmp_path / "cifar"), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert reference.wait(timeout=300) == 0, reference.stdout.read()
    assert_bitwise_equal(final_state(tmp_path / "ref"), final_state(run))
