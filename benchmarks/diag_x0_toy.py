"""Per-point exact NLL of a trained toy model against the truth, and, for its worst points, the
likelihood at later start times eps and the network's eps error at small t (the x0 diagnosis of
benchmarks/RESULTS.md, "The toy trained with the v, x0, EDM and flow-matching objectives").

Usage:
    python main.py --config configs/vp_toy.py --mode train --workdir runs/x0 --config.model.prediction=x0
    python benchmarks/diag_x0_toy.py runs/x0
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sde_app import factory  # noqa: E402
from sde_app.factory.config_files import load_config  # noqa: E402
from sde_app.loading import load_trained  # noqa: E402
from sde_lib.likelihood import log_likelihood  # noqa: E402


def main():
    torch.set_num_threads(1)
    workdir = Path(sys.argv[1])
    exp = factory.build_experiment(load_config(str(workdir / "config.json")), ["eval"])
    model = load_trained(exp, workdir, torch.device("cpu"))
    _, test = exp.data.datasets(exp.seed)
    x = torch.stack([test[i][0] for i in range(1000)]).float()
    gm = exp.data.toy_density()
    res = log_likelihood(exp.sde, model.score_fn, x, "exact", eps=1e-5, rtol=1e-5, atol=1e-5)
    gap = gm.log_prob(x.double()) - res.logp
    order = gap.argsort(descending=True)
    print(f"gap {gap.mean():.3f} +- {gap.std() / len(gap) ** 0.5:.3f}; median {gap.median():.3f};"
          f" mean without the worst point {gap[order[1:]].mean():.3f}")
    print("worst gaps", [round(v, 1) for v in gap[order[:5]].tolist()])
    worst = x[order[:3]]
    print("worst points", worst.tolist(), "log p_0", gm.log_prob(worst.double()).tolist())
    print("| eps | model log-likelihood (worst 3) | true log p_eps |")
    for eps in (1e-5, 1e-4, 1e-3, 1e-2):
        r = log_likelihood(exp.sde, model.score_fn, worst, "exact", eps=eps, rtol=1e-5, atol=1e-5)
        print(f"| {eps:g} | {[round(v, 1) for v in r.logp.tolist()]} |"
              f" {[round(v, 2) for v in gm.log_prob(worst.double(), exp.sde, eps).tolist()]} |")
    print("| t | std |s - s_true| (worst 3) |")
    for t in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
        tt = torch.full((3,), t)
        std = exp.sde.marginal_std(tt.double())[:, None]
        err = std * (model.score_fn(worst, tt).double() - gm.score(worst.double(), exp.sde, tt.double()))
        print(f"| {t:g} | {[round(v, 2) for v in err.norm(dim=1).tolist()]} |")


if __name__ == "__main__":
    main()
