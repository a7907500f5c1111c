"""`--mode consistency`: consistency distillation through the training loop gives a normal
checkpoint that `--mode sample --config.sampling.method=consistency` samples with N evaluations;
bad settings are named before any work."""
import subprocess
import sys
from pathlib import Path

import pytest

from configs import vp_toy
from sde_app import checkpoints, factory

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--noprogress", "--config.model.hidden_dim=32", "--config.model.num_blocks=1",
        "--config.data.num_train=512", "--config.data.num_test=64"]


def run(workdir, mode, *extra):
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), f"--mode={mode}", f"--workdir={workdir}", *TINY,
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_consistency_distillation_checkpoint_samples_in_n_steps(tmp_path):
    run(tmp_path, "train", "--config.training.n_iters=30", "--config.training.batch_size=64")
    out = run(tmp_path, "consistency", "--config.consistency.n_iters=20", "--config.consistency.batch_size=64",
              "--config.consistency.n_levels=10", "--config.consistency.checkpoint_freq=10")
    ck = checkpoints.CheckpointDir(tmp_path / "consistency" / "distillation")
    state = checkpoints.load_state(ck.resume_path)
    assert state["step"] == 20 and state["consistency"] == {"kind": "distillation", "eps": 1e-3, "sigma_data": 0.5}
    assert (ck.dir.parent / "tensorboard").is_dir()
    flags = out.split("sample it with: ")[1].split()
    sampled = run(tmp_path, "sample", "--config.sampling.num_samples=100", *flags[1:-1], "--config.sampling.N=3")
    assert "method=consistency, NFE=3" in sampled


@pytest.mark.parametrize("field, value, message", [
    ("kind", "improved", "consistency.kind"),
    ("n_levels", 1, "n_levels=1"),
    ("rate", 1.0, "config.consistency.rate=1.0"),
    ("sigma_data", 0.0, "config.consistency.sigma_data=0.0"),
    ("eps", 0.0, "config.consistency.eps=0.0"),
])
def test_bad_consistency_settings_are_named(field, value, message):
    config = vp_toy.get_config()
    config.consistency[field] = value
    with pytest.raises(ValueError, match=message):
        factory.build_experiment(config, ["consistency"])
