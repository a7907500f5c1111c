"""`--mode eval`: the test loss and the exact likelihood by the probability-flow ODE, written to
`<workdir>/eval/<tag>.json`.

The test loss of a class-conditional model is its conditional loss (the test labels, no label
dropout); the likelihood is always the unconditional one (the null label).

Likelihood (Song et al. 2021, sec. 4.3): bits/dim of uniformly dequantised test images (the
test split is read with `uniform_dequantization = True` whatever the training setting, as the
official evaluation does), nats per example and per dimension for 2-D data. On the Gaussian-mixture
toy the true values sit beside the model's: the mixture's exact NLL of the same test points and
its entropy. Standard errors are over test points (they include the Hutchinson probe noise).
"""
from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from tqdm.auto import tqdm

from sde_lib.likelihood import bits_per_dim, log_likelihood

from . import data as data_lib
from . import distributed
from .jsonio import write_json
from .sampling_run import BAR_FORMAT
from .specs import Experiment



def mean_and_stderr(v: torch.Tensor) -> Dict[str, Any]:
    """Mean and standard error over the values (B,); with one value the standard error is
    undefined: None, with a note."""
    v = v.double()
    out: Dict[str, Any] = {"mean": v.mean().item(), "stderr": None, "n": len(v)}
    if len(v) > 1:
        out["stderr"] = (v.std() / math.sqrt(len(v))).item()
    else:
        out["stderr_note"] = "one value: no standard error"
    return out


def stack_items(dataset, indices) -> torch.Tensor:
    """x of the items at `indices`, stacked (B, ...)."""
    return torch.stack([torch.as_tensor(dataset[i][0]) for i in indices])


def per_example_test_loss(ctx: distributed.Context, loss_fn: Callable, score_fn: Callable, dataset, *,
                          batch_size: int, num_batches: int, seed: int, conditional: bool = False,
                          progress: bool = False) -> torch.Tensor:
    """Per-example losses of the first `num_batches * batch_size` test items (all when
    num_batches = 0), split over the ranks; the loss's t and noise come from a generator seeded
    by (seed, rank); a `conditional` score gets the items' class labels. Returns the losses of
    all ranks, in item order (CPU float64)."""
    n = len(dataset) if num_batches <= 0 else min(len(dataset), num_batches * batch_size)
    mine = list(distributed.shard(n, ctx))
    generator = torch.Generator().manual_seed(data_lib.derive_seed(seed, ctx.rank, 1))
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(mine), batch_size), desc="test loss", disable=not progress,
                          leave=False):
            rows = mine[start:start + batch_size]
            x = stack_items(dataset, rows).to(ctx.device)
            fn = score_fn
            if conditional:
                y = torch.tensor([int(dataset[i][1]) for i in rows], device=ctx.device)
                fn = functools.partial(score_fn, y=y)
            out.append(loss_fn(fn, x, generator=generator).double())
    local = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=ctx.device)
    return distributed.unshard(distributed.gather_rows(ctx, local), n, ctx.world_size).cpu()


def per_example_log_likelihood(ctx: distributed.Context, sde, score_fn: Callable, x: torch.Tensor, *,
                               batch_size: int, seed: int, likelihood_kwargs: Dict[str, Any],
                               progress: bool = False) -> Dict[str, Any]:
    """log p(x) (nats) of every row of x by the probability-flow ODE, split over the ranks; one
    progress bar over the batches that moves within each ODE solve.

    Returns {"logp": (N,) float64 CPU, "nfe": mean score evaluations per batch}.
    """
    n = x.shape[0]
    mine = list(distributed.shard(n, ctx))
    generator = torch.Generator().manual_seed(data_lib.derive_seed(seed, ctx.rank, 2))
    logps, nfes = [], []
    starts = range(0, len(mine), batch_size)
    with tqdm(total=len(starts), desc="likelihood", unit="batch", disable=not progress, leave=False,
              dynamic_ncols=True, bar_format=BAR_FORMAT) as bar:
        for start in starts:
            xb = x[mine[start:start + batch_size]].to(ctx.device)
            result = log_likelihood(sde, score_fn, xb, generator=generator, progress=bar if progress else False,
                                    **likelihood_kwargs)
            logps.append(result.logp)
            nfes.append(result.nfe)
    local = torch.cat(logps) if logps else torch.zeros(0, dtype=torch.float64, device=ctx.device)
    logp = distributed.unshard(distributed.gather_rows(ctx, local.to(ctx.device)), n,
                               ctx.world_size).cpu()
    all_nfes = [v for part in distributed.gather_objects(ctx, nfes) for v in part]
    return {"logp": logp, "nfe": sum(all_nfes) / max(len(all_nfes), 1)}


def run(ctx: distributed.Context, exp: Experiment, workdir: Path, model, *, progress: bool = True) -> Dict[str, Any]:
    """The eval mode: test loss and likelihood of `model` (a `loading.LoadedModel`).

    Returns the report (also written to `<workdir>/eval/<tag>.json` on rank 0).
    """
    e, data = exp.evaluation, exp.data
    report: Dict[str, Any] = {"source": model.source, "step": model.step, "dataset": data.dataset,
                              "world_size": ctx.world_size}
    _, test_ds = data.datasets(exp.seed)
    start = time.perf_counter()
    conditional = exp.train.conditional
    losses = per_example_test_loss(ctx, exp.train.loss, model.score_fn, test_ds, batch_size=e.batch_size,
                                   num_batches=e.loss_batches, seed=exp.seed,
                                   conditional=conditional, progress=progress)
    report["test_loss"] = {**mean_and_stderr(losses), "conditional": conditional,
                           "wall_s": time.perf_counter() - start}

    if e.num_points >= 0:
        ll_data = data.dequantized()  # bits/dim of uniformly dequantised test images
        ll_ds = ll_data.datasets(exp.seed)[1]
        n = len(ll_ds) if e.num_points == 0 else min(e.num_points, len(ll_ds))
        x = stack_items(ll_ds, range(n)).float()
        start = time.perf_counter()
        result = per_example_log_likelihood(ctx, model.sde, model.score_fn, x,
                                            batch_size=e.batch_size, seed=exp.seed,
                                            likelihood_kwargs=e.likelihood, progress=progress)
        nll = -result["logp"]
        dim = x[0].numel()
        ll = {"n_points": n, "nfe": result["nfe"], "wall_s": time.perf_counter() - start, **e.likelihood,
              "nll_nats_per_example": mean_and_stderr(nll),
              "nll_nats_per_dim": mean_and_stderr(nll / dim)}
        if data.is_image:
            ll["bits_per_dim"] = mean_and_stderr(bits_per_dim(-nll, dim, centered=ll_data.centered))
        density = data.toy_density()
        if density is not None:
            true_nll = -density.log_prob(x.double())
            entropy, entropy_se = density.entropy()
            ll["true"] = {"nll_nats_per_example": mean_and_stderr(true_nll),
                          "entropy_nats": {"mean": entropy, "stderr": entropy_se},
                          "gap_nats_per_example": mean_and_stderr(nll - true_nll)}
        report["likelihood"] = ll

    if ctx.is_main:
        path = write_json(Path(workdir) / "eval" / f"{model.tag}.json", report)
        report["file"] = str(path)
        print("[eval] " + summary_line(report) + f" -> {path}", flush=True)
    distributed.barrier(ctx)
    return report


def summary_line(report: Dict[str, Any]) -> str:
    """One line for the console."""
    def pm(v: Dict[str, Any], digits: int = 4) -> str:
        se = v.get("stderr")
        return f"{v['mean']:.{digits}f}" + ("" if se is None else f" +- {se:.{digits}f}")

    parts = [f"step {report['step']}", f"test loss {pm(report['test_loss'])}"]
    ll: Optional[Dict[str, Any]] = report.get("likelihood")
    if ll:
        if "bits_per_dim" in ll:
            parts.append(f"{pm(ll['bits_per_dim'])} bits/dim")
        else:
            parts.append(f"NLL {pm(ll['nll_nats_per_example'])} nats/example"
                         f" ({ll['nll_nats_per_dim']['mean']:.4f} nats/dim)")
        if "true" in ll:
            t = ll["true"]
            parts.append(f"true NLL {t['nll_nats_per_example']['mean']:.4f}, gap"
                         f" {pm(t['gap_nats_per_example'])}, entropy {t['entropy_nats']['mean']:.4f}")
        parts.append(f"NFE {ll['nfe']:.0f}, {ll['n_points']} points")
    return "; ".join(parts)
