"""The default command end to end (slow, ~2 minutes on 2 CPU cores): trains, samples and
evaluates the VP toy, whose exact NLL must be within 0.3 nats of the true NLL."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_default_toy_run_matches_the_true_nll(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--config", str(ROOT / "configs/vp_toy.py"),
                           "--mode", "train,sample,eval", "--workdir", str(tmp_path), "--noprogress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "eval" / "step_00004000.json").read_text())
    gap = report["likelihood"]["true"]["gap_nats_per_example"]["mean"]
    assert abs(gap) < 0.3, report["likelihood"]
    assert (tmp_path / "samples" / "step_00004000_ode.png").is_file()
    assert (tmp_path / "checkpoints" / "checkpoint.pt").is_file()
