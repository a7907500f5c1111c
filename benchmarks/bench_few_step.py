"""Few-step samplers on the exact scores of the 192-D mixture, paired with the converged
probability-flow ODE started from the same noise.

For each seed, n prior draws x_T are carried (a) by every fast method at each NFE and (b) by the
probability-flow ODE solved to convergence (DOP853, rtol = atol = `--ref-tol`, float64, the same
probability-flow final step from eps = 1e-3). Columns:
  * paired gap: mean over the draws of  -log p_0(x_fast) - (-log p_0(x_ref))  in nats: what the
    few steps lose against the converged ODE on the same noise (0: as good; the issue's target is
    |gap| <= 1 at 10 NFE). Standard error over all 3 n pairs (draws are independent across seeds).
  * NLL gap: mean of -log p_0(x) minus the entropy H(p_0) (as in bench_samplers.py; its standard
    error, about 2 nats, is mostly how many samples land in each component, shared with the
    reference row, which is why the paired column is the one to read).
NFE is what `sample()` counts (exact).

Usage:
    python benchmarks/bench_few_step.py --mixtures ../shared/peer/mixtures.npz --threads 1
    python benchmarks/bench_few_step.py --methods "dpm_solver:order=3" --nfe 10 --seeds 0
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sde_lib import VPSDE, GaussianMixture  # noqa: E402
from sde_lib.sampling import sample  # noqa: E402

METHODS = [
    "dpm_solver:order=2",
    "dpm_solver:order=3",
    "unipc:order=2",
    "unipc:order=3",
    "dpm_solver:order=2:schedule=optimized",
    "dpm_solver:order=3:schedule=optimized",
    "unipc:order=2:schedule=optimized",
    "unipc:order=3:schedule=optimized",
]
NFES = [5, 6, 8, 10, 15, 20]


def parse_method(row: str):
    method, *pairs = row.split(":")
    options = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        try:
            options[key] = int(value)
        except ValueError:
            try:
                options[key] = float(value)
            except ValueError:
                options[key] = {"True": True, "False": False}.get(value, value)
    return method, options


def mean_se(values: torch.Tensor):
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mixtures", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peer", "mixtures.npz"))
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated method[:key=value]*")
    p.add_argument("--nfe", default=",".join(map(str, NFES)))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n", type=int, default=1000, help="prior draws per seed")
    p.add_argument("--ref-tol", type=float, default=1e-8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    gm = GaussianMixture.from_npz(args.mixtures, "image")
    sde = VPSDE()
    score_fn = gm.score_fn(sde)
    H, H_se = gm.entropy(n=200_000)
    seeds = [int(s) for s in args.seeds.split(",")]
    nfes = [int(k) for k in args.nfe.split(",")]
    shape = (args.n, *gm.event_shape)

    priors, ref_nll = [], []
    t0 = time.perf_counter()
    for seed in seeds:
        x_T = sde.prior_sampling(shape, generator=torch.Generator().manual_seed(seed))
        x_ref, nfe_ref = sample(sde, score_fn, shape, method="ode", solver="DOP853", rtol=args.ref_tol,
                                atol=args.ref_tol, x_T=x_T.double(), dtype=torch.float64)
        priors.append(x_T)
        ref_nll.append(-gm.log_prob(x_ref).double())
    ref_all = torch.cat(ref_nll)
    ref_gap, ref_se = mean_se(ref_all - H)
    print(f"# 192-D mixture, VP, {len(seeds)} seeds x {args.n} draws; H(p_0) = {H:.3f} +- {H_se:.3f}; "
          f"reference ODE (DOP853, tol {args.ref_tol:g}, float64): NLL gap {ref_gap:+.2f} +- {ref_se:.2f}, "
          f"{time.perf_counter() - t0:.0f} s")
    print("| method | options | NFE | paired gap vs converged ODE (nats) | NLL gap (nats) | wall per seed (s) |")
    print("|---|---|---|---|---|---|")
    for row in args.methods.split(","):
        method, options = parse_method(row)
        for N in nfes:
            diffs, nlls, walls, counted = [], [], [], set()
            for x_T, ref in zip(priors, ref_nll):
                t0 = time.perf_counter()
                x, nfe = sample(sde, score_fn, shape, method=method, N=N, x_T=x_T, **options)
                walls.append(time.perf_counter() - t0)
                nll = -gm.log_prob(x.double()).double()
                diffs.append(nll - ref)
                nlls.append(nll)
                counted.add(nfe)
            paired, paired_se = mean_se(torch.cat(diffs))
            gap, gap_se = mean_se(torch.cat(nlls) - H)
            opts = " ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
            nfe_shown = "/".join(map(str, sorted(counted)))
            print(f"| {method} | {opts} | {nfe_shown} | {paired:+.2f} +- {paired_se:.2f} | {gap:+.2f} +- {gap_se:.2f} "
                  f"| {sum(walls) / len(walls):.2f} |", flush=True)


if __name__ == "__main__":
    main()
