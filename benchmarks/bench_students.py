"""Distilled students on the embedded 2-D mixture beside their teacher's own samplers.

After `python main.py --config=configs/vp_toy.py --mode=train,distill --workdir=W ...`, samples
n points from the same prior draws with:
  * each distillation round's student (`<W>/distill/round_<k>`), with its own step count (DDIM,
    the nested grid, ending at distill.eps);
  * the teacher (the trained model's EMA) with every fast sampler at 1, 2, 4, 8 evaluations, the
    best of which (smallest |gap|) is the row "teacher best";
  * the teacher's converged probability-flow ODE (RK45, rtol = atol = 1e-5, as `--mode sample`);
  * the consistency models of `--mode consistency` (`<W>/consistency/<kind>`), if any, with
    `method="consistency"` at each number of evaluations.
NLL gap: mean over samples of -log p_0(x) (the exact mixture) minus its entropy H(p_0), nats, with
its standard error; 0 for exact samples, so each row reads as a distance to the true mixture.
Paired: the mean over the same prior draws of -log p_0(sample) minus -log p_0(the converged ODE's
sample from that draw), with the standard error of those per-draw differences; it measures the
distance to the converged ODE without the spread of the few far-out draws both share.

Usage:
    python benchmarks/bench_students.py --workdir W [--n 4000] [--seed 0]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sde_app import factory, loading  # noqa: E402
from sde_app.checkpoints import CheckpointDir, load_state  # noqa: E402
from sde_app.factory.config_files import load_config  # noqa: E402
from sde_lib.sampling import sample  # noqa: E402

TEACHER_SAMPLERS = [
    ("ddim", {}), ("dpm_solver", {"order": 2}), ("dpm_solver", {"order": 3}), ("unipc", {"order": 2}),
    ("unipc", {"order": 3}), ("dpm_solver", {"order": 2, "schedule": "optimized"}),
    ("unipc", {"order": 2, "schedule": "optimized"}),
]
NFES = [1, 2, 4, 8]


def students_of(workdir: Path) -> List[Dict[str, Any]]:
    """Each finished distillation round of the workdir: {"round", "path", "steps", "schedule", "eps"}."""
    out = []
    for k in range(1, 64):
        ck = CheckpointDir(workdir / "distill" / f"round_{k}")
        if not ck.has_checkpoint():
            break
        info = load_state(ck.resume_path)["distill"]
        out.append({"round": k, "path": str(ck.resume_path), "steps": info["student_steps"],
                    "schedule": info["schedule"], "eps": info["eps"]})
    return out


def gap(gm, x, H):
    nll = -gm.log_prob(x.double())
    return (nll.mean() - H).item(), nll.std().item() / math.sqrt(len(nll))


def paired(gm, x, nll_ode):
    """Mean and standard error over draws of -log p_0(x) - (-log p_0(ODE sample)), nats."""
    d = -gm.log_prob(x.double()) - nll_ode
    return f"{d.mean().item():+.3f} +- {d.std().item() / math.sqrt(len(d)):.3f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    workdir = Path(args.workdir)
    exp = factory.build_experiment(load_config(str(workdir / "config.json")))
    gm = exp.data.toy_density()
    H, H_se = gm.entropy(n=200_000)
    sde, device = exp.sde, torch.device("cpu")
    teacher = loading.load_trained(exp, workdir, device)
    shape = (args.n, *exp.data.shape)
    x_T = sde.prior_sampling(shape, generator=torch.Generator().manual_seed(args.seed))
    print(f"# 2-D mixture, {args.n} samples, H(p_0) = {H:.4f} +- {H_se:.4f}; teacher {teacher.source} (step {teacher.step})")
    with torch.no_grad():
        ode, nfe_ode = sample(sde, teacher.score_fn, shape, method="ode", solver="RK45", rtol=1e-5, atol=1e-5, x_T=x_T)
    g_ode, se_ode = gap(gm, ode, H)
    nll_ode = -gm.log_prob(ode.double())
    print(f"# teacher's converged ODE (RK45 1e-5, NFE {nfe_ode}): NLL gap {g_ode:+.3f} +- {se_ode:.3f}")
    print("| model | sampler | NFE | NLL gap (nats) | minus the teacher's ODE | paired minus the ODE |")
    print("|---|---|---|---|---|---|")
    students = {st["steps"]: st for st in students_of(workdir)}
    for nfe in NFES:
        best = None
        with torch.no_grad():
            for method, options in TEACHER_SAMPLERS:
                x, used = sample(sde, teacher.score_fn, shape, method=method, N=nfe, x_T=x_T, **options)
                g, se = gap(gm, x, H)
                opts = " ".join(f"{a}={b}" for a, b in options.items())
                pd = paired(gm, x, nll_ode)
                print(f"| teacher | {method} {opts} | {used} | {g:+.3f} +- {se:.3f} | {g - g_ode:+.3f} | {pd} |", flush=True)
                if best is None or abs(g) < abs(best[0]):
                    best = (g, se, f"{method} {opts}", pd)
            print(f"| **teacher best** | {best[2]} | {nfe} | {best[0]:+.3f} +- {best[1]:.3f} | {best[0] - g_ode:+.3f}"
                  f" | {best[3]} |")
            if nfe in students:
                st = students[nfe]
                student = loading.load_trained(exp, workdir, device, st["path"])
                x, used = student.sampler(sde, student.score_fn, shape, x_T=x_T)  # its DDIM steps
                g, se = gap(gm, x, H)
                print(f"| **student, round {st['round']}** | ddim (distilled) | {used} | {g:+.3f} +- {se:.3f} | {g - g_ode:+.3f}"
                      f" | {paired(gm, x, nll_ode)} |", flush=True)
            for kind in ("distillation", "training"):
                ck = CheckpointDir(workdir / "consistency" / kind)
                if ck.has_checkpoint():
                    model = loading.load_trained(exp, workdir, device, str(ck.resume_path))
                    x, used = sample(sde, model.score_fn, shape, method="consistency", N=nfe, x_T=x_T,
                                     generator=torch.Generator().manual_seed(args.seed + 1))
                    g, se = gap(gm, x, H)
                    print(f"| **consistency {kind}** | consistency | {used} | {g:+.3f} +- {se:.3f} | {g - g_ode:+.3f}"
                          f" | {paired(gm, x, nll_ode)} |", flush=True)


if __name__ == "__main__":
    main()
