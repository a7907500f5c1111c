"""benchmarks/gpu_check.py runs through on the CPU with --dry-run (tiny networks): every part of
the GPU check (correctness against the CPU, sampling and likelihood, timing tables) executes."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_check  # noqa: E402


def test_gpu_check_dry_run(tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    for heading in ("## Correctness against the CPU", "## Training step, batch 2", "## Sampling, DDPM++"):
        assert heading in out
    result = json.loads((tmp_path / "out.json").read_text())
    # On the CPU the "GPU" side is the CPU: fp32 agrees exactly, bf16 within its tolerance.
    fp32 = [r for r in result["correctness"] if r["precision"] == "fp32"]
    assert fp32 and all(r["loss_err"] == 0.0 and r["grad_err"] == 0.0 for r in fp32)
    assert all(r["ok"] for r in result["correctness"])
    assert result["runs"] == {"pc": True, "ode": True, "likelihood": True}
    assert [(r["network"], r["precision"]) for r in result["training"]] == [("ddpmpp", "fp32"), ("ddpmpp", "bf16")]
    assert all(r["finite"] for r in result["sampling"])
    # sampling.batch_size = 0 on DDPM++: the 4 wanted samples fit in the host's free memory.
    assert "## sampling.batch_size = 0 on DDPM++" in out
    auto = result["auto_batch"]
    assert auto["batch"] == 4 and auto["mib_per_sample"] > 0 and "upper bound" in auto["how"]
