"""The same command under torchrun: 2 CPU processes with gloo train with DDP, resume, and split
sampling, likelihood evaluation and inpainting over the ranks."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from sde_app.checkpoints import load_state

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_cpu_processes(tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(ROOT / "main.py"), "--mode=train,train,sample,eval,inpaint", f"--workdir={tmp_path}",
        "--device=cpu", "--noprogress",
        "--config.model.hidden_dim=32", "--config.model.num_blocks=1",
        "--config.training.batch_size=32", "--config.training.n_iters=20",
        "--config.training.log_freq=10", "--config.training.checkpoint_freq=10",
        "--config.data.num_train=512", "--config.data.num_test=64",
        "--config.sampling.num_samples=31", "--config.sampling.batch_size=8",
        "--config.sampling.ode.rtol=1e-3", "--config.sampling.ode.atol=1e-3",
        "--config.eval.num_points=31", "--config.eval.batch_size=8",
        "--config.eval.rtol=1e-3", "--config.eval.atol=1e-3",
        "--config.controllable.num_samples=31", "--config.controllable.method=replacement",
        "--config.controllable.sampler=ode",
        "--config.controllable.known_value=1.5"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # Rank 0 alone prints; the second "train" resumes every rank from the checkpoint and stops.
    assert out.count("[train] done: step 20") == 1
    assert "resuming from" in out and "already at step 20" in out

    state = load_state(tmp_path / "checkpoints" / "checkpoint.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["loss"], state["rng"][1]["loss"])  # per-rank seeds
    assert state["data"]["world_size"] == 2 and state["data"]["batch_size"] == 16

    samples = np.load(tmp_path / "samples" / "step_00000020_ode.npz")["samples"]
    assert samples.shape == (31, 2) and len(np.unique(samples[:, 0])) == 31  # no rank repeats
    report = json.loads((tmp_path / "eval" / "step_00000020.json").read_text())
    assert report["world_size"] == 2 and report["likelihood"]["n_points"] == 31
    assert report["likelihood"]["true"]["gap_nats_per_example"]["n"] == 31
    assert report["test_loss"]["n"] == 64

    stem = tmp_path / "samples" / "step_00000020_inpaint_x0=1.5"
    filled = np.load(f"{stem}.npz")["samples"]
    assert filled.shape == (31, 2) and np.all(filled[:, 0] == 1.5)
    assert len(np.unique(filled[:, 1])) == 31  # each rank drew its own share
    summary = json.loads(Path(f"{stem}.json").read_text())
    assert summary["world_size"] == 2 and len(summary["nfe_per_batch"]) == 2 + 2  # 16 and 15 samples, batches of 8


def test_torchrun_usage_error_is_printed_once(tmp_path):
    """A batch size the processes cannot split: one `error:` line (rank 0's), exit status 2 from
    the processes (torchrun then adds its own failure report), and no work done."""
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "main.py"), "--mode=train", f"--workdir={tmp_path / 'w'}", "--device=cpu",
                           "--noprogress", "--config.training.batch_size=33"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: config.training.batch_size=33 is not divisible by the 2 processes; pick a"
                      " multiple of 2, e.g. 32"]
    assert "exitcode: 2" in done.stderr
    assert not (tmp_path / "w").exists()
