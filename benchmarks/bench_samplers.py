"""Samplers on exact Gaussian-mixture scores: NFE, wall time and distance to the true distribution.

Every error left is the sampler's own (the score is exact), so the table compares algorithms.
Metrics (as in ../shared/peer/README.md, so rows can sit beside the official code's):
  * NLL gap: mean of -log p_0 over the samples minus the entropy H(p_0), in nats (0 for exact
    samples; > 0 too spread, < 0 too concentrated).
  * SW2: sliced Wasserstein-2 distance to as many fresh true samples (512 random directions).
  * The NLL gap mixes two errors, and its standard error (about 2 nats in 192-D) comes mostly from
    how many samples land in each component (the components' entropies differ by tens of nats).
    Two columns separate them, each sample assigned to its most probable component:
    shape gap = sum_k w_k [mean over component k's samples of -log N_k(x) - H(N_k)], the error of
    the components' spreads (0 for exact samples, standard error about 0.2 in 192-D), and
    weight TV = 1/2 sum_k |fraction in k - w_k| (about 0.015 for 2000 exact samples).
  * ODE error (probability-flow rows, method "ode"): max and mean over samples of max |x - x_ref|,
    x_ref the same prior draw in float64 carried by DOP853 at rtol = atol = 1e-10 with the same
    final step (float64: float32 scores are too noisy for an adaptive solver at 1e-10):
    the solver's own error, which the distribution metrics are too noisy to see.

Usage:
    python benchmarks/bench_samplers.py --mixtures ../shared/peer/mixtures.npz --case image \
        --rows peer --threads 1
    python benchmarks/bench_samplers.py --case two_d --rows "pc:N=100,ddim:N=20:schedule=logsnr"
    python benchmarks/bench_samplers.py --case image --rows "vp/ode:solver=dopri5:controller=torchdiffeq"

A row is `method[:key=value]*` with sample() options; `--rows peer` runs the rows of the peer
table with our defaults, `--rows official` the official algorithms (grid, Langevin update, final
step) in this library, `--rows fast` DPM-Solver / DDIM at small NFE. `controller=...` in an "ode"
row goes to `sde_lib.ode.probability_flow_sample` (sample() has no such option).
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time
from unittest import mock

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import sde_lib  # noqa: E402
from sde_lib import EDMVESDE, VESDE, VPSDE, GaussianMixture, LinearInterpolantSDE, subVPSDE  # noqa: E402
from sde_lib import ode as ode_lib  # noqa: E402
from sde_lib.sampling import sample  # noqa: E402

SDES = {"vp": VPSDE, "subvp": subVPSDE, "ve": VESDE, "linear": LinearInterpolantSDE, "edm_ve": EDMVESDE}

PEER_ROWS = {
    "two_d": [
        "vp/pc:N=1000", "vp/pc:N=100",
        "vp/pc:predictor=euler_maruyama:corrector=none:N=1000",
        "vp/pc:predictor=euler_maruyama:corrector=none:N=100",
        "vp/ode", "subvp/ode", "ve/ode",
    ],
    "image": [
        "vp/pc:N=1000", "vp/pc:N=100",
        "vp/pc:predictor=euler_maruyama:corrector=none:N=1000",
        "vp/pc:predictor=euler_maruyama:corrector=none:N=100",
        "vp/ddpm:N=1000", "vp/ddpm:N=100",
        "vp/pc:predictor=ancestral_sampling:corrector=none:N=1000",
        "vp/pc:predictor=ancestral_sampling:corrector=none:N=100",
        "vp/ode", "subvp/ode", "ve/ode",
        "ve/pc:N=1000", "ve/pc:N=100",
        "subvp/pc:N=1000", "subvp/pc:N=100",
    ],
}
# The official predictor-corrector sampler run by this library (official grid, Langevin update and
# final step; it reproduces the peer's figures), to read our defaults against it with the
# lower-noise columns.
OFFICIAL = "schedule=uniform:corrector_update=euler_maruyama:denoise=mean"
OFFICIAL_ROWS = [f"{sde}/pc:N={n}:{OFFICIAL}" for sde in ("vp", "ve") for n in (1000, 100)]
FAST_ROWS = [f"vp/{m}:N={n}" for m in ("dpm_solver", "ddim") for n in (10, 15, 20, 25, 35, 50)]


def parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(v, v)


def parse_row(row: str):
    sde_name, rest = row.split("/", 1) if "/" in row else ("vp", row)
    method, *pairs = rest.split(":")
    options = dict(p.split("=", 1) for p in pairs)
    return sde_name, method, {k: parse_value(v) for k, v in options.items()}


def sliced_w2(a, b, dirs):
    pa = torch.sort(a.reshape(len(a), -1).double() @ dirs.T, 0).values
    pb = torch.sort(b.reshape(len(b), -1).double() @ dirs.T, 0).values
    return math.sqrt(((pa - pb) ** 2).mean().item())


def component_errors(gm, x):
    """(shape gap in nats, total variation of the component fractions) of samples x; see above."""
    k = gm.class_log_posterior(x).argmax(1)
    frac = torch.bincount(k, minlength=gm.n_components).double() / len(k)
    H_k = gm.component_entropies()
    shape = 0.0
    for j in range(gm.n_components):
        sel = k == j
        if sel.any():
            y = torch.full((int(sel.sum()),), j)
            shape += gm.weights[j].item() * ((-gm.log_prob(x[sel], y=y)).mean().item() - H_k[j].item())
    return shape, 0.5 * (frac - gm.weights.double()).abs().sum().item()


def run_sample(sde, score_fn, shape, method, options, generator, x_T=None):
    """sample(), with an "ode" row's `controller` handed to the probability-flow solver."""
    options = dict(options)
    controller = options.pop("controller", None)
    if controller is None:
        return sample(sde, score_fn, shape, method=method, generator=generator, x_T=x_T, **options)
    solve = functools.partial(ode_lib.probability_flow_sample, controller=controller)
    with mock.patch.object(ode_lib, "probability_flow_sample", solve):
        return sample(sde, score_fn, shape, method=method, generator=generator, x_T=x_T, **options)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mixtures", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peer", "mixtures.npz"))
    p.add_argument("--case", choices=["two_d", "image"], default="two_d")
    p.add_argument("--rows", default="peer", help="'peer', 'fast', 'official' or comma-separated rows sde/method:k=v")
    p.add_argument("--n", type=int, default=None, help="samples (default 4000 in 2-D, 2000 in 192-D)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    gm = GaussianMixture.from_npz(args.mixtures, args.case)
    n = args.n or (4000 if args.case == "two_d" else 2000)
    H, H_se = gm.entropy(n=200_000)
    g = torch.Generator().manual_seed(1234)
    dirs = torch.randn(512, gm.dim, generator=g, dtype=torch.float64)
    dirs /= dirs.norm(dim=1, keepdim=True)
    truth = gm.sample(n, generator=g, dtype=torch.float64)
    fresh = gm.sample(n, generator=g, dtype=torch.float64)
    floor_gap = (-gm.log_prob(fresh)).mean().item() - H
    floor_shape, floor_tv = component_errors(gm, fresh)
    floor_sw = sliced_w2(gm.sample(n, generator=g, dtype=torch.float64), truth, dirs)
    rows = {"peer": PEER_ROWS[args.case], "fast": FAST_ROWS, "official": OFFICIAL_ROWS}.get(args.rows, args.rows.split(","))

    print(f"# library: {os.path.dirname(os.path.abspath(sde_lib.__file__))}")
    print(f"# case {args.case}: d={gm.dim}, n={n}, H(p_0)={H:.3f} +- {H_se:.3f} nats; "
          f"floor (fresh true samples): NLL gap {floor_gap:+.2f}, SW2 {floor_sw:.4f}, "
          f"shape gap {floor_shape:+.2f}, weight TV {floor_tv:.3f}")
    print("| SDE | method | options | NFE | wall (s) | NLL gap (nats) | SW2 | shape gap (nats) | weight TV "
          "| ODE error max / mean |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    references = {}
    for row in rows:
        sde_name, method, options = parse_row(row)
        sde = SDES[sde_name]()
        sample_shape = (n, *gm.event_shape)
        t0 = time.perf_counter()
        x, nfe = run_sample(sde, gm.score_fn(sde), sample_shape, method, options,
                            torch.Generator().manual_seed(args.seed))
        wall = time.perf_counter() - t0
        ode_error = "-"
        if method == "ode":
            if sde_name not in references:  # the same prior draw as sample() makes
                x_T = sde.prior_sampling(sample_shape, generator=torch.Generator().manual_seed(args.seed))
                references[sde_name] = run_sample(sde, gm.score_fn(sde), sample_shape, "ode",
                                                  dict(solver="DOP853", rtol=1e-10, atol=1e-10),
                                                  None, x_T=x_T.double())[0]
            err = (x - references[sde_name]).reshape(n, -1).abs().amax(1).double()
            ode_error = f"{err.max():.1e} / {err.mean():.1e}"
        gap = (-gm.log_prob(x)).mean().item() - H
        sw = sliced_w2(x, truth, dirs)
        shape, tv = component_errors(gm, x)
        opts = " ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
        print(f"| {sde_name} | {method} | {opts} | {nfe} | {wall:.1f} | {gap:+.2f} | {sw:.4f} | {shape:+.2f} | {tv:.3f} "
              f"| {ode_error} |", flush=True)


if __name__ == "__main__":
    main()
