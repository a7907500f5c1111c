"""Likelihood accuracy and cost on the peer Gaussian mixtures, with the exact score.

For each SDE (VP, sub-VP, VE) and case (2-D: 2000 points; 192-D "images" 3x8x8: 1000 points) it
runs `sde_lib.likelihood.log_likelihood` under several estimator settings and prints a table:

  NFE        score calls (one per ODE evaluation here; the official code calls the model twice)
  wall       seconds for the whole batch
  MAE p0     mean |logp - log p_0(x)| in nats per point, and in bits/dim (/ (d ln 2)): what the
             official figures in /work/shared/peer/README.md report
  bias p0    mean (logp - log p_0(x)) +- its standard error over points
  MAE tgt    mean |logp - (log p_eps(x) + log prior(z) - log p_T(z))|: the error against the value
             the ODE actually targets (the solver's and the estimator's own error)
  |prior|    mean |log prior(z) - log p_T(z)| (the prior-mismatch term, `prior_mismatch`)
  |eps|      mean |log p_eps(x) - log p_0(x)| (starting at eps instead of 0; VE's sigma_min blur)

Example:
    python benchmarks/bench_likelihood.py --threads 1
    python benchmarks/bench_likelihood.py --cases 2d --sdes vp --rows official exact
    python benchmarks/bench_likelihood.py --cases image --rows exact exact_tdq
    python benchmarks/bench_likelihood.py --compare rademacher1_tol1e-3 --repeats 3
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import types

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import sde_lib  # noqa: E402
from sde_lib import EDMVESDE, VESDE, VPSDE, GaussianMixture, LinearInterpolantSDE, subVPSDE  # noqa: E402
from sde_lib.likelihood import log_likelihood, prior_mismatch  # noqa: E402
from sde_lib.ode import odeint  # noqa: E402

SDES = {"vp": VPSDE, "subvp": subVPSDE, "ve": VESDE, "linear": LinearInterpolantSDE, "edm_ve": EDMVESDE}
CASES = {"2d": "two_d", "image": "image"}

# Estimator settings, by row name. "official" is the official likelihood.py's setting (RK45,
# rtol = atol = 1e-5, eps = 1e-5, one Rademacher probe) run by our code. Every torch row names
# its error norm; "_tdq" rows run torchdiffeq's own dopri5 (controller="torchdiffeq").
ROWS = {
    "official": dict(method="RK45", divergence="rademacher", n_probes=1),
    "rademacher2": dict(method="dopri5", divergence="rademacher", n_probes=2, error_norm="rms"),
    "rademacher2_pe": dict(method="dopri5", divergence="rademacher", n_probes=2,
                           error_norm="per_example"),
    "rademacher2_tdq": dict(method="dopri5", divergence="rademacher", n_probes=2,
                            error_norm="per_example", controller="torchdiffeq"),
    "rademacher4": dict(method="dopri5", divergence="rademacher", n_probes=4, error_norm="rms"),
    "rademacher16": dict(method="dopri5", divergence="rademacher", n_probes=16, error_norm="rms"),
    "exact_rk45": dict(method="RK45", divergence="exact"),
    "exact": dict(method="dopri5", divergence="exact", error_norm="per_example"),
    "exact_tdq": dict(method="dopri5", divergence="exact", error_norm="per_example",
                      controller="torchdiffeq"),
    # The official estimator with the solver's tolerance matched to the probe noise: one probe
    # errs by ~13 nats/pt in 192-D, the solver at 1e-3 by ~0.1 (MAE tgt of the exact rows).
    "rademacher1_tol1e-3": dict(method="RK45", divergence="rademacher", n_probes=1, rtol=1e-3, atol=1e-3),
    "rademacher1_tol1e-2": dict(method="RK45", divergence="rademacher", n_probes=1, rtol=1e-2, atol=1e-2),
    "rademacher2_tol1e-2": dict(method="RK45", divergence="rademacher", n_probes=2, rtol=1e-2, atol=1e-2),
}
DEFAULT_ROWS = {
    "2d": ["official", "exact_rk45", "exact"],
    "image": ["official", "rademacher2", "rademacher4", "rademacher16", "exact"],
}


def official_algorithm(sde, score_fn, x, *, rtol, atol, eps, generator):
    """The official likelihood.py's algorithm, transcribed onto this library's pieces: one
    Rademacher probe drawn once; per ODE evaluation the drift from one score call without
    gradients (its `drift_fn`) and the Hutchinson divergence from a second score call with
    gradients (its `div_fn`); scipy's RK45 on the flattened [x, int div] state from eps to T
    (eq. 39); log p = prior log-density at x(T) + int div. Returns (logp (B,), score calls)."""
    B, d = x.shape[0], x[0].numel()
    probe = torch.randint(0, 2, x.shape, generator=generator).to(x.dtype) * 2 - 1
    calls = [0]

    def counted(x_t, t):
        calls[0] += 1
        return score_fn(x_t, t)

    reverse = sde.reverse(counted, probability_flow=True)

    def rhs(t, state):
        x_t = state[:, :d].reshape(x.shape).to(x.dtype)
        vec_t = torch.full((B,), t, dtype=x.dtype)
        with torch.no_grad():
            drift = reverse.sde(x_t, vec_t)[0]
        with torch.enable_grad():
            x_g = x_t.clone().requires_grad_(True)
            grad = torch.autograd.grad((reverse.sde(x_g, vec_t)[0] * probe).sum(), x_g)[0]
        div = (grad * probe).reshape(B, d).sum(1)
        return torch.cat([drift.reshape(B, d), div[:, None]], 1).to(torch.float64)

    state0 = torch.cat([x.reshape(B, d).to(torch.float64), torch.zeros(B, 1, dtype=torch.float64)], 1)
    state1, _ = odeint(rhs, state0, eps, sde.T, method="RK45", rtol=rtol, atol=atol)
    return sde.prior_logp(state1[:, :d].reshape(x.shape)) + state1[:, d], calls[0]


def run_row(sde, gm, x, row: str, seed: int):
    if row == "official_code":
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        logp, calls = official_algorithm(sde, gm.score_fn(sde), x, rtol=1e-5, atol=1e-5, eps=1e-5,
                                         generator=generator)
        return types.SimpleNamespace(logp=logp, nfe=calls), time.perf_counter() - start
    options = dict(ROWS[row])
    options.setdefault("rtol", 1e-5)
    options.setdefault("atol", 1e-5)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    res = log_likelihood(sde, gm.score_fn(sde), x, eps=1e-5, generator=generator, **options)
    wall = time.perf_counter() - start
    return res, wall


def describe(row: str) -> str:
    if row == "official_code":
        return "official algorithm: rademacher x1, 2 score calls per evaluation (RK45)"
    o = ROWS[row]
    probes = "" if o["divergence"] == "exact" else f" x{o['n_probes']}"
    norm = {"per_example": ", per-example norm", "rms": ", RMS norm"}.get(o.get("error_norm"), "")
    library = ", torchdiffeq" if o.get("controller") == "torchdiffeq" else ""
    tol = f", rtol = atol = {o['rtol']:g}" if "rtol" in o else ""
    return f"{o['divergence']}{probes} ({o['method']}{library}{norm}{tol})"


def compare(args, rows):
    """The official algorithm (`official_algorithm`: two score calls per evaluation), the
    official estimator as this library runs it ("official": one score call per evaluation) and
    `rows`, interleaved `--repeats` times on the same points of the 192-D mixture (fresh probes
    per repeat: seeds seed+1, seed+2, ...); medians of wall time; ratios against the official
    algorithm."""
    gm = GaussianMixture.from_npz(args.mixtures, CASES["image"])
    x = gm.sample(args.n_image, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    logp0 = gm.log_prob(x)
    run_row(SDES[args.sdes[0]](), gm, x[:8], "official", 0)  # warm-up, untimed
    names = ["official_code", "official"] + [r for r in rows if r not in ("official", "official_code")]
    print(f"\n## official estimator vs {', '.join(names[1:])}: image d = {gm.dim}, {len(x)} points,"
          f" {args.repeats} interleaved repeats (median wall; MAE and bias over all repeats)")
    print("| SDE | estimator (solver) | score calls | wall s (median) | wall / official | MAE p0 nats/pt"
          " | MAE / official | bias p0 nats |")
    print("|---|---|---|---|---|---|---|---|")
    for sde_name in args.sdes:
        sde = SDES[sde_name]()
        walls, errs, nfes = {n: [] for n in names}, {n: [] for n in names}, {n: [] for n in names}
        for rep in range(args.repeats):
            for name in names:
                res, wall = run_row(sde, gm, x, name, args.seed + 1 + rep)
                walls[name].append(wall)
                errs[name].append(res.logp - logp0)
                nfes[name].append(res.nfe)
        med = {n: statistics.median(walls[n]) for n in names}
        mae = {n: torch.cat(errs[n]).abs().mean().item() for n in names}
        for name in names:
            err = torch.cat(errs[name])
            print(f"| {sde_name} | {describe(name)} | {'/'.join(map(str, nfes[name]))} | {med[name]:.2f}"
                  f" | {med[name] / med['official_code']:.2f} | {mae[name]:.3f}"
                  f" | {mae[name] / mae['official_code']:.3f}"
                  f" | {err.mean():+.2f} +- {err.std() / math.sqrt(len(err)):.2f} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mixtures", default="/work/shared/peer/mixtures.npz")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--sdes", nargs="+", default=list(SDES), choices=list(SDES))
    parser.add_argument("--rows", nargs="+", default=None, choices=list(ROWS),
                        help="estimator settings (default: per case, see DEFAULT_ROWS)")
    parser.add_argument("--n-2d", type=int, default=2000)
    parser.add_argument("--n-image", type=int, default=1000)
    parser.add_argument("--n-exact-image", type=int, default=200,
                        help="points for the exact trace in 192-D (192 VJPs per evaluation); "
                             "the first n of the same data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", nargs="+", default=None, choices=list(ROWS),
                        help="interleave the official estimator with these rows on the 192-D case")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of --compare")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.compare:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), data float64, eps = 1e-5,"
              f" load average {os.getloadavg()[0]:.1f}")
        compare(args, args.compare)
        return

    print(f"library: {os.path.dirname(os.path.abspath(sde_lib.__file__))}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), data float64, "
          f"rtol = atol = 1e-5, eps = 1e-5, seed {args.seed}")
    for case in args.cases:
        gm = GaussianMixture.from_npz(args.mixtures, CASES[case])
        n = args.n_2d if case == "2d" else args.n_image
        generator = torch.Generator().manual_seed(args.seed)
        x_all = gm.sample(n, generator=generator, dtype=torch.float64)
        logp0_all = gm.log_prob(x_all)
        d = gm.dim
        run_row(SDES[args.sdes[0]](), gm, x_all[:8], "official", 0)  # warm-up, untimed
        print(f"\n## {case}: d = {d}, {gm.n_components} components, {n} points")
        print("| SDE | estimator (solver) | points | NFE | wall s | MAE p0 nats/pt "
              "| MAE p0 bits/dim | bias p0 nats | MAE tgt nats/pt | mean SE nats "
              "| abs prior | abs eps |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for sde_name in args.sdes:
            sde = SDES[sde_name]()
            for row in args.rows or DEFAULT_ROWS[case]:
                exact_image = case == "image" and ROWS[row]["divergence"] == "exact"
                m = args.n_exact_image if exact_image else n
                x, logp0 = x_all[:m], logp0_all[:m]
                res, wall = run_row(sde, gm, x, row, args.seed + 1)
                mismatch = prior_mismatch(sde, res.z, lambda z: gm.log_prob(z, sde, sde.T))
                logp_eps = gm.log_prob(x, sde, 1e-5)
                err0 = res.logp - logp0
                err_tgt = res.logp - (logp_eps + mismatch)
                se = res.stderr.mean().item()
                print(
                    f"| {sde_name} | {describe(row)} | {m} | {res.nfe} | {wall:.2f} "
                    f"| {err0.abs().mean():.3f} | {err0.abs().mean() / (d * math.log(2)):.2e} "
                    f"| {err0.mean():+.2e} +- {err0.std() / math.sqrt(m):.1e} "
                    f"| {err_tgt.abs().mean():.2e} | {'-' if math.isnan(se) else f'{se:.3f}'} "
                    f"| {mismatch.abs().mean():.1e} | {(logp_eps - logp0).abs().mean():.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
