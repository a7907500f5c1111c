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

import copy
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from tqdm.auto import tqdm

from .. import data as data_lib
from ..likelihood import log_likelihood
from . import distributed, factory



def mean_and_stderr(v: torch.Tensor) -> Dict[str, float]:
    v = v.double()
    se = (v.std() / math.sqrt(len(v))).item() if len(v) > 1 else float("nan")
    return {"mean": v.mean().item(), "stderr": se, "n": len(v)}


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
    """log p(x) (nats) of every row of x by the probability-flow ODE, split over the ranks.

    Returns {"logp": (N,) float64 CPU, "nfe": mean score evaluations per batch}.
    """
    n = x.shape[0]
    mine = list(distributed.shard(n, ctx))
    generator = torch.Generator().manual_seed(data_lib.derive_seed(seed, ctx.rank, 2))
    logps, nfes = [], []
    for start in tqdm(range(0, len(mine), batch_size), desc="likelihood", disable=not progress,
                      leave=False):
        xb = x[mine[start:start + batch_size]].to(ctx.device)
        result = log_likelihood(sde, score_fn, xb, generator=generator, **likelihood_kwargs)
        logps.append(result.logp)
        nfes.append(result.nfe)
    local = torch.cat(logps) if logps else torch.zeros(0, dtype=torch.float64, device=ctx.device)
    logp = distributed.unshard(distributed.gather_rows(ctx, local.to(ctx.device)), n,
                               ctx.world_size).cpu()
    all_nfes = [v for part in distributed.gather_objects(ctx, nfes) for v in part]
    return {"logp": logp, "nfe": sum(all_nfes) / max(len(all_nfes), 1)}


def likelihood_test_set(config):
    """The test split the likelihood is measured on: images uniformly dequantised."""
    data_cfg = config.data
    if data_lib.is_image_data(data_cfg) and not data_cfg.uniform_dequantization:
        data_cfg = copy.deepcopy(data_cfg)
        data_cfg.uniform_dequantization = True
    return data_cfg, data_lib.build_datasets(data_cfg, seed=config.seed)[1]


def run(ctx: distributed.Context, config, workdir: Path, model, *, progress: bool = True) -> Dict[str, Any]:
    """The eval mode: test loss and likelihood of `model` (a `loading.LoadedModel`).

    Returns the report (also written to `<workdir>/eval/<tag>.json` on rank 0).
    """
    e = config.eval
    report: Dict[str, Any] = {"source": model.source, "step": model.step, "dataset": config.data.dataset,
                              "world_size": ctx.world_size}
    _, test_ds = data_lib.build_datasets(config.data, seed=config.seed)
    start = time.perf_counter()
    loss_fn = factory.build_loss(config, model.sde)
    conditional = factory.is_conditional(config)
    losses = per_example_test_loss(ctx, loss_fn, model.score_fn, test_ds, batch_size=e.batch_size,
                                   num_batches=e.loss_batches, seed=config.seed,
                                   conditional=conditional, progress=progress)
    report["test_loss"] = {**mean_and_stderr(losses), "loss": config.training.loss,
                           "conditional": conditional, "wall_s": time.perf_counter() - start}

    if e.num_points >= 0:
        data_cfg, ll_ds = likelihood_test_set(config)
        n = len(ll_ds) if e.num_points == 0 else min(e.num_points, len(ll_ds))
        x = stack_items(ll_ds, range(n)).float()
        kwargs = factory.likelihood_kwargs(config)
        start = time.perf_counter()
        result = per_example_log_likelihood(ctx, model.sde, model.score_fn, x,
                                            batch_size=e.batch_size, seed=config.seed,
                                            likelihood_kwargs=kwargs, progress=progress)
        nll = -result["logp"]
        dim = x[0].numel()
        ll = {"n_points": n, "nfe": result["nfe"], "wall_s": time.perf_counter() - start, **kwargs,
              "nll_nats_per_example": mean_and_stderr(nll),
              "nll_nats_per_dim": mean_and_stderr(nll / dim)}
        if data_lib.is_image_data(config.data):
            bpd = nll / (dim * math.log(2.0)) + data_lib.bpd_offset(data_cfg)
            ll["bits_per_dim"] = mean_and_stderr(bpd)
        density = data_lib.toy_density(config.data)
        if density is not None:
            true_nll = -density.log_prob(x.double())
            entropy, entropy_se = density.entropy()
            ll["true"] = {"nll_nats_per_example": mean_and_stderr(true_nll),
                          "entropy_nats": {"mean": entropy, "stderr": entropy_se},
                          "gap_nats_per_example": mean_and_stderr(nll - true_nll)}
        report["likelihood"] = ll

    if ctx.is_main:
        out = Path(workdir) / "eval"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{model.tag}.json"
        path.write_text(json.dumps(report, indent=2, default=str))
        report["file"] = str(path)
        print("[eval] " + summary_line(report) + f" -> {path}", flush=True)
    distributed.barrier(ctx)
    return report


def summary_line(report: Dict[str, Any]) -> str:
    """One line for the console."""
    parts = [f"step {report['step']}",
             f"test loss {report['test_loss']['mean']:.4g} +- {report['test_loss']['stderr']:.2g}"]
    ll: Optional[Dict[str, Any]] = report.get("likelihood")
    if ll:
        if "bits_per_dim" in ll:
            b = ll["bits_per_dim"]
            parts.append(f"{b['mean']:.4f} +- {b['stderr']:.4f} bits/dim")
        else:
            v = ll["nll_nats_per_example"]
            parts.append(f"NLL {v['mean']:.4f} +- {v['stderr']:.4f} nats/example"
                         f" ({ll['nll_nats_per_dim']['mean']:.4f} nats/dim)")
        if "true" in ll:
            t = ll["true"]
            parts.append(f"true NLL {t['nll_nats_per_example']['mean']:.4f}, gap"
                         f" {t['gap_nats_per_example']['mean']:+.4f} +-"
                         f" {t['gap_nats_per_example']['stderr']:.4f}, entropy"
                         f" {t['entropy_nats']['mean']:.4f}")
        parts.append(f"NFE {ll['nfe']:.0f}, {ll['n_points']} points")
    return "; ".join(parts)
