"""`--mode eval`: the test loss, the exact likelihood by the probability-flow ODE, and sample
quality (FID, Inception Score, KID), written to `<workdir>/eval/<tag>.json`.

The test loss of a class-conditional model is its conditional loss (the test labels, no label
dropout); the likelihood is always the unconditional one (the null label).

Likelihood (Song et al. 2021, sec. 4.3): bits/dim of uniformly dequantised test images (the
test split is read with `uniform_dequantization = True` whatever the training setting, as the
official evaluation does; over the data's levels: 256, or 17 for the digits), nats per example and
per dimension for 2-D data. On the Gaussian-mixture toy the true values sit beside the model's:
the mixture's exact NLL of the same test points and its entropy. Standard errors are over test
points (they include the Hutchinson probe noise).

Sample quality (`config.eval.num_samples > 0`, as the official `evaluate`): samples of the
configured sampler in rounds of `eval.batch_size` per rank, each round's images, features and
logits written atomically to `<workdir>/eval/rounds_<tag>_<key>/round_<r>.pt` (`atomic_save`), so
a killed evaluation resumes at the next round and ends with the figures of an uninterrupted run;
round r's noise comes from (seed, r, rank) alone. Samples are quantised to the data's levels
before the feature network (`sde_app.features`) reads them, as real images are. FID and KID
against the training split's statistics (or a user's file), IS from the logits; references beside
them (`eval.references`): the floor (test split against training split) and a Gaussian mixture
(`sde_app.references`). `eval.begin_ckpt`..`end_ckpt` evaluates a range of snapshots (one JSON
each, and TensorBoard scalars against the training step). docs/evaluation.md has the details.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from sde_lib import metrics
from sde_lib.learned_variance import DiscreteChain, find_learned_variance, network_outputs, vlb_terms
from sde_lib.likelihood import bits_per_dim, log_likelihood

from . import data as data_lib
from . import distributed, features, loading, references
from .checkpoints import CheckpointDir, CorruptCheckpointError, atomic_save, load_state
from .data import DataSpec
from .data.transforms import quantize
from .jsonio import write_json
from .sampling_run import BAR_FORMAT, guided_score_fn, sharded_batches
from .specs import Experiment, SampleQualitySettings

# Test hook: seconds to sleep after each evaluation round is written, so that tests can SIGKILL an
# evaluation between rounds.
ROUND_SLEEP_ENV = "SCORE_SDE_TEST_EVAL_ROUND_SLEEP"
EVAL_SEED_KEY = 11  # round r's samples use derive_seed(seed, EVAL_SEED_KEY, r, rank)



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


def has_learned_variance(score_fn) -> bool:
    """Whether score_fn is that of a network with learned variances (its VLB can be reported)."""
    try:
        find_learned_variance(score_fn)
    except ValueError:
        return False
    return True


def per_example_vlb(ctx: distributed.Context, sde, score_fn: Callable, x: torch.Tensor, decoder, *,
                    batch_size: int, seed: int, progress: bool = False) -> Dict[str, torch.Tensor]:
    """The discrete-time variational bound (`sde_lib.learned_variance.vlb_terms`, Ho et al. 2020
    eq. 5 with improved DDPM's learned variances) of every row of x, split over the ranks: N
    network calls per batch, x_k drawn from a generator seeded by (seed, rank).

    Returns {"vlb": (N,) nats, "prior": (N,) nats of L_N, "decoder": (N,) nats of L_0}, CPU float64.
    """
    n = x.shape[0]
    mine = list(distributed.shard(n, ctx))
    generator = torch.Generator(device=ctx.device).manual_seed(data_lib.derive_seed(seed, ctx.rank, 3))
    chain, model = DiscreteChain(sde), network_outputs(score_fn)
    parts = {"vlb": [], "prior": [], "decoder": []}
    with torch.no_grad():
        for start in tqdm(range(0, len(mine), batch_size), desc="vlb", disable=not progress, leave=False):
            xb = x[mine[start:start + batch_size]].to(ctx.device)
            terms, prior = vlb_terms(chain, model, xb, decoder=decoder, generator=generator)
            parts["vlb"].append((terms.sum(1) + prior).double())
            parts["prior"].append(prior.double())
            parts["decoder"].append(terms[:, 0].double())
    out = {}
    for key, rows in parts.items():
        local = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.float64, device=ctx.device)
        out[key] = distributed.unshard(distributed.gather_rows(ctx, local), n, ctx.world_size).cpu()
    return out


# ------------------------------------------------------------------------- sample quality
def sample_images(samples: torch.Tensor, data: DataSpec) -> torch.Tensor:
    """Model-space samples -> uint8 images (B, C, H, W) in 0..255 as the data's own images are
    stored: clipped to [0, 1], rounded to the data's levels (256, or 17 for the digits)."""
    x01 = data.inverse_scaler()(samples.float()).clamp(0.0, 1.0)
    return data_lib.to_uint8(quantize(x01, data.levels))


def quality_metrics(feats: np.ndarray, logits: np.ndarray, ref: Dict[str, Any], q: SampleQualitySettings,
                    generator: torch.Generator) -> Dict[str, Any]:
    """FID and KID of features (N, D) against the reference statistics, IS of the logits; with
    `q.bootstrap` resamples, the bootstrap standard errors of FID and KID.

    Returns:
      {"fid": number or {"mean", "stderr"}, "kid": {"mean", "std_over_subsets", "stderr"?, ...} or
      None (a statistics file without features), "inception_score": {"mean", "std_over_splits"}}.
    """
    f = torch.from_numpy(np.asarray(feats, dtype=np.float64))

    def fid_of(rows: torch.Tensor) -> float:
        return metrics.frechet_distance(*metrics.feature_statistics(rows), ref["mu"], ref["sigma"])

    out: Dict[str, Any] = {"fid": fid_of(f)}
    if q.bootstrap:
        out["fid"] = {"mean": out["fid"], "stderr": metrics.bootstrap_std(fid_of, f, resamples=q.bootstrap,
                                                                          generator=generator)}
    if ref.get("features") is not None:
        ref_f = np.asarray(ref["features"], dtype=np.float64)

        def kid_of(rows: torch.Tensor, subsets: int = q.kid_subsets) -> float:
            return metrics.kernel_inception_distance(rows, ref_f, subsets=subsets, subset_size=q.kid_subset_size,
                                                     generator=generator)[0]

        mean, std = metrics.kernel_inception_distance(f, ref_f, subsets=q.kid_subsets,
                                                      subset_size=q.kid_subset_size, generator=generator)
        out["kid"] = {"mean": mean, "std_over_subsets": std, "subsets": q.kid_subsets,
                      "subset_size": min(q.kid_subset_size, len(f), len(ref_f))}
        if q.bootstrap:  # each resample's KID over a tenth of the subsets: the spread is the samples'
            out["kid"]["stderr"] = metrics.bootstrap_std(functools.partial(kid_of, subsets=max(q.kid_subsets // 10, 1)),
                                                         f, resamples=q.bootstrap, generator=generator)
    else:
        out["kid"] = None
        out["kid_note"] = "the statistics file has no features: KID needs them"
    splits = min(q.is_splits, len(logits))
    is_mean, is_std = metrics.inception_score(logits, splits=splits)
    out["inception_score"] = {"mean": is_mean, "std_over_splits": is_std, "splits": splits}
    return out


def round_key(exp: Experiment, model, q: SampleQualitySettings, extractor: features.Extractor,
              world_size: int) -> str:
    """What makes two evaluations' round r the same samples: weights, sampler, seed, round size,
    world size, labels and guidance, feature network (not the number of samples: a larger
    `num_samples` reuses the rounds already drawn)."""
    s = exp.sampling
    facts = {"tag": model.tag, "sampler": s.sampler.describe(), "seed": q.seed, "round_size": q.round_size,
             "world_size": world_size, "labels": s.labels, "guidance": s.guidance, "scale": s.scales[0],
             "features": extractor.identity}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _load_round(path: Path, key: str, n: int) -> Optional[Dict[str, Any]]:
    """A round file's state if it is readable, of these settings and complete, else None."""
    if not path.is_file():
        return None
    try:
        state = load_state(path)
    except CorruptCheckpointError:
        return None
    if state.get("key") != key or int(state.get("n", -1)) != n:
        return None
    return state


def sample_rounds(ctx: distributed.Context, exp: Experiment, model, q: SampleQualitySettings,
                  extractor: features.Extractor, folder: Path, key: str, *,
                  progress: bool = False) -> Tuple[np.ndarray, np.ndarray, torch.Tensor, Dict[str, Any]]:
    """Draw `q.num_samples` samples in rounds of `q.round_size` per rank, with features; rounds
    already on disk (complete, same `key`) are read instead of drawn. One progress bar over the
    rounds that moves within each (the sampler reports fractions) and shows an ETA.

    Returns:
      (features (N, D) float32, logits (N, K) float32, images uint8 (N, C, H, W), info: NFE per
      sample, rounds drawn and read, wall time of the drawn ones); on ranks other than 0 the
      arrays are None.
    """
    s, data = exp.sampling, exp.data
    per_round = q.round_size * ctx.world_size
    n_rounds = math.ceil(q.num_samples / per_round)
    sizes = [min(per_round, q.num_samples - r * per_round) for r in range(n_rounds)]
    paths = [folder / f"round_{r:05d}.pt" for r in range(n_rounds)]
    done = None
    if ctx.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob(".*.tmp"):  # a write interrupted by a kill
            tmp.unlink(missing_ok=True)
        done = [r for r in range(n_rounds) if _load_round(paths[r], key, sizes[r]) is not None]
    done = set(distributed.broadcast_object(ctx, done))
    labels = s.class_labels(q.num_samples)
    score_fn = model.score_fn
    if labels is not None:
        score_fn = functools.partial(guided_score_fn, model, guidance=s.guidance, scale=s.scales[0],
                                     null_label=s.null_label)
    start, nfes = time.perf_counter(), []
    with tqdm(total=n_rounds, initial=len(done), desc=f"eval samples ({s.sampler.name})", unit="round",
              disable=not progress, leave=False, dynamic_ncols=True, bar_format=BAR_FORMAT) as bar:
        for r in range(n_rounds):
            if r in done:
                continue
            first = r * per_round
            round_labels = None if labels is None else labels[first:first + sizes[r]]

            def batch(indices, generator, _bar):
                fn = score_fn if round_labels is None else score_fn(round_labels[indices].to(ctx.device))
                return s.sampler(model.sde, fn, (len(indices), *data.shape), generator=generator,
                                 device=ctx.device, progress=bar if progress else False)

            samples, info = sharded_batches(ctx, sizes[r], q.round_size,
                                            data_lib.derive_seed(q.seed, EVAL_SEED_KEY, r), data.shape, batch)
            images = sample_images(samples, data)
            mine = list(distributed.shard(sizes[r], ctx))
            f_local, z_local = extractor(images[mine], batch_size=q.round_size, device=ctx.device)
            f = distributed.unshard(distributed.gather_rows(ctx, torch.from_numpy(f_local).to(ctx.device)),
                                    sizes[r], ctx.world_size).cpu()
            z = distributed.unshard(distributed.gather_rows(ctx, torch.from_numpy(z_local).to(ctx.device)),
                                    sizes[r], ctx.world_size).cpu()
            nfes.append(info["nfe"])
            if ctx.is_main:
                atomic_save({"key": key, "round": r, "n": sizes[r], "images": images, "features": f,
                             "logits": z, "nfe": float(info["nfe"])}, paths[r])
                sleep = float(os.environ.get(ROUND_SLEEP_ENV, "0") or 0)
                if sleep > 0:
                    time.sleep(sleep)
            distributed.barrier(ctx)
    wall = time.perf_counter() - start
    info = {"rounds": n_rounds, "round_size_per_rank": q.round_size, "rounds_drawn": n_rounds - len(done),
            "rounds_read": len(done), "wall_s_drawn": wall}
    if not ctx.is_main:  # rank 0 computes the metrics
        return None, None, None, info
    states = [load_state(p) for p in paths]
    info["nfe_per_sample"] = float(np.mean([float(st["nfe"]) for st in states]))
    return (torch.cat([st["features"] for st in states]).numpy(), torch.cat([st["logits"] for st in states]).numpy(),
            torch.cat([st["images"] for st in states]), info)


def load_extractor(exp: Experiment, q: SampleQualitySettings, device: torch.device) -> features.Extractor:
    """The feature network of `q.features` (downloads the Inception weights only when allowed)."""
    spec = features.FEATURES[q.features]
    try:
        return spec.load(spec.weights_path(q.inception_weights), q.download_inception, device)
    except OSError as err:  # a failed download
        raise ValueError(f"config.eval.features={q.features!r}: the weights could not be loaded ({err});"
                         f" put them at {spec.weights_path(q.inception_weights)} or pass"
                         " --config.eval.inception_weights=PATH, or set --config.eval.num_samples=0") from None


def reference_stats(exp: Experiment, q: SampleQualitySettings, extractor: features.Extractor,
                    device: torch.device, progress: bool) -> Dict[str, Any]:
    """A user's statistics file, or the training split's (cached)."""
    if q.stats:
        return features.load_user_statistics(q.stats, features.FEATURES[q.features].dim)
    return features.reference_statistics(exp.data, extractor, q.stats_dir, batch_size=exp.evaluation.batch_size,
                                         device=device, progress=progress)


def sample_quality(ctx: distributed.Context, exp: Experiment, workdir: Path, model, *, progress: bool,
                   ll_points: Optional[torch.Tensor]) -> Dict[str, Any]:
    """FID, IS, KID of the model's samples and of the references (`eval.references`). Loads the
    feature network and the reference statistics before any sampling."""
    q = exp.evaluation.quality
    start = time.perf_counter()
    extractor = load_extractor(exp, q, ctx.device)
    ref = None
    if ctx.is_main:
        ref = reference_stats(exp, q, extractor, ctx.device, progress)
    ref = distributed.broadcast_object(ctx, ref)
    key = round_key(exp, model, q, extractor, ctx.world_size)
    folder = Path(workdir) / "eval" / f"rounds_{model.tag}_{key}"
    feats, logits, _, info = sample_rounds(ctx, exp, model, q, extractor, folder, key, progress=progress)
    out: Dict[str, Any] = {}
    if not ctx.is_main:
        return out
    generator = torch.Generator().manual_seed(data_lib.derive_seed(q.seed, EVAL_SEED_KEY, -1))
    out.update(quality_metrics(feats, logits, ref, q, generator))
    s = exp.sampling
    out["sample_quality"] = {
        "sampler": s.sampler.describe(), "num_samples": q.num_samples, "seed": q.seed, "features": q.features,
        "feature_network": {"identity": extractor.identity, "weights": extractor.weights, **extractor.info},
        "stats_file": ref["file"], "rounds_folder": str(folder), "labels": s.labels,
        "guidance": s.guidance if s.labels is not None else "none",
        "guidance_scale": s.scales[0] if s.labels is not None and s.guidance != "none" else None,
        **info, "wall_s": time.perf_counter() - start}
    if q.references:
        out["references"] = reference_rows(exp, q, extractor, ref, generator, ll_points, ctx.device,
                                           progress)
    return out


def references_gap(model: Dict[str, Any], reference: Dict[str, Any], key: str) -> Dict[str, Any]:
    """model[key] - reference[key] (negative: the model is lower, i.e. better), with the standard
    error of the difference where both have one (independent estimates)."""
    def split(v):
        return (v.get("mean"), v.get("stderr")) if isinstance(v, dict) else (v, None)

    (a, sa), (b, sb) = split(model.get(key)), split(reference.get(key))
    if a is None or b is None:
        return {"difference": None}
    out: Dict[str, Any] = {"difference": a - b}
    if sa is not None and sb is not None:
        out["stderr"] = math.sqrt(sa ** 2 + sb ** 2)
    return out


def reference_rows(exp: Experiment, q: SampleQualitySettings, extractor: features.Extractor, ref: Dict[str, Any],
                   generator: torch.Generator, ll_points: Optional[torch.Tensor],
                   device: torch.device, progress: bool = False) -> Dict[str, Any]:
    """The rows of `q.references`, with the model's keys (bits_per_dim, fid, kid, inception_score)."""
    data, rows = exp.data, {}

    def quality_of(images: torch.Tensor) -> Dict[str, Any]:
        f, z = extractor(images, batch_size=exp.evaluation.batch_size, device=device)
        return quality_metrics(f, z, ref, q, generator)

    if "floor" in q.references:
        test_images, _ = features.data_images(data, "test")
        rows["floor"] = {"bits_per_dim": None, "bits_per_dim_note": "real images: no model, no likelihood",
                         **quality_of(test_images), "num_samples": len(test_images),
                         "what": "the test split against the training split's statistics"}
    if "gaussian_mixture" in q.references:
        ll_data = data.dequantized()
        train_ds = ll_data.datasets(exp.seed)[0]
        x_train = stack_items(train_ds, range(len(train_ds))).float()
        if ll_points is None:  # the likelihood was skipped: all dequantised test points
            test_ds = ll_data.datasets(exp.seed)[1]
            ll_points = stack_items(test_ds, range(len(test_ds))).float()
        bpd, samples, facts = references.gaussian_mixture_reference(data, x_train, ll_points, q.num_samples,
                                                                    q.gmm_components, seed=q.seed,
                                                                    progress=progress)
        rows["gaussian_mixture"] = {"bits_per_dim": mean_and_stderr(bpd),
                                    **quality_of(sample_images(samples, data)),
                                    "num_samples": q.num_samples, **facts}
    return rows


# ----------------------------------------------------------------------------------- the mode
def run(ctx: distributed.Context, exp: Experiment, workdir: Path, model, *, progress: bool = True) -> Dict[str, Any]:
    """The eval mode: `evaluate` the given weights (a `loading.LoadedModel`), or with
    `eval.begin_ckpt`/`end_ckpt` every numbered snapshot in that range of training steps.

    Returns the report (also written to `<workdir>/eval/<tag>.json` on rank 0); for a range,
    {"reports": [one per snapshot, by step]}.
    """
    e = exp.evaluation
    if e.begin_ckpt is None:
        return evaluate(ctx, exp, workdir, model, progress=progress)
    found = sorted(CheckpointDir(workdir).snapshots())
    chosen = [(step, path) for step, path in found if e.begin_ckpt <= step <= e.end_ckpt]
    if not chosen:
        raise ValueError(f"config.eval.begin_ckpt={e.begin_ckpt}, end_ckpt={e.end_ckpt}: no snapshot in that range"
                         f" in {Path(workdir) / 'checkpoints'} (snapshot steps: {[st for st, _ in found]});"
                         " set the range to training steps that have one")
    reports = []
    for step, path in chosen:
        snapshot = loading.load_trained(exp, workdir, ctx.device, str(path))
        if ctx.is_main:
            print(f"[eval] snapshot {path} (step {step})", flush=True)
        reports.append(evaluate(ctx, exp, workdir, snapshot, progress=progress))
    return {"reports": reports}


def evaluate(ctx: distributed.Context, exp: Experiment, workdir: Path, model, *, progress: bool = True) -> Dict[str, Any]:
    """Test loss, likelihood and sample quality of one model; the report is written to
    `<workdir>/eval/<tag>.json` and its scalars to TensorBoard at the model's training step."""
    e, data = exp.evaluation, exp.data
    start_all = time.perf_counter()
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

    x = None
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
            ll["bits_per_dim"] = mean_and_stderr(bits_per_dim(-nll, dim, centered=ll_data.centered,
                                                           num_bins=ll_data.levels))
            ll["levels"] = ll_data.levels
            report["bits_per_dim"] = ll["bits_per_dim"]
        density = data.toy_density()
        if density is not None:
            true_nll = -density.log_prob(x.double())
            entropy, entropy_se = density.entropy()
            ll["true"] = {"nll_nats_per_example": mean_and_stderr(true_nll),
                          "entropy_nats": {"mean": entropy, "stderr": entropy_se},
                          "gap_nats_per_example": mean_and_stderr(nll - true_nll)}
        report["likelihood"] = ll
        if has_learned_variance(model.score_fn):
            report["vlb"] = vlb_report(ctx, exp, model, progress=progress, n=n,
                                       true_nll=ll.get("true", {}).get("nll_nats_per_example"))

    if e.quality is not None:
        report.update(sample_quality(ctx, exp, workdir, model, progress=progress, ll_points=x))
        if "references" in report:
            report["versus_references"] = {
                name: {k: references_gap(report, row, k) for k in ("bits_per_dim", "fid", "kid")}
                for name, row in report["references"].items()}
    report["wall_s"] = time.perf_counter() - start_all

    if ctx.is_main:
        path = write_json(Path(workdir) / "eval" / f"{model.tag}.json", report)
        report["file"] = str(path)
        write_scalars(Path(workdir) / "tensorboard", report)
        print("[eval] " + summary_line(report) + f" -> {path}", flush=True)
    distributed.barrier(ctx)
    return report


def vlb_report(ctx: distributed.Context, exp: Experiment, model, *, progress: bool, n: int,
               true_nll: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The discrete VLB of the first n test points beside the ODE likelihood: for images the
    8-bit test values (not dequantised; the bound is on -log2 P of the discrete data) in bits/dim,
    for the toy nats per example with the Gaussian decoder (and the gap to the true NLL)."""
    e, data = exp.evaluation, exp.data
    test = data.datasets(exp.seed)[1]
    x = stack_items(test, range(min(n, len(test)))).float()
    start = time.perf_counter()
    decoder = data.vlb_decoder()
    out = per_example_vlb(ctx, model.sde, model.score_fn, x, decoder, batch_size=e.batch_size, seed=exp.seed,
                          progress=progress)
    dim = x[0].numel()
    rep: Dict[str, Any] = {"n_points": x.shape[0], "levels": model.sde.N, "decoder": decoder.kind,
                           "wall_s": time.perf_counter() - start,
                           "nats_per_example": mean_and_stderr(out["vlb"]),
                           "prior_nats_per_example": mean_and_stderr(out["prior"]),
                           "decoder_nats_per_example": mean_and_stderr(out["decoder"])}
    if data.is_image:
        rep["bits_per_dim"] = mean_and_stderr(out["vlb"] / (dim * math.log(2.0)))
    elif true_nll is not None:
        density = data.toy_density()
        rep["gap_to_true_nll_nats_per_example"] = mean_and_stderr(out["vlb"] + density.log_prob(x.double()))
    return rep


def _number(v) -> Optional[float]:
    return v.get("mean") if isinstance(v, dict) else v


def write_scalars(logdir: Path, report: Dict[str, Any]) -> None:
    """eval/test_loss, eval/bits_per_dim, eval/fid, eval/kid, eval/inception_score at the step."""
    from torch.utils.tensorboard import SummaryWriter

    values = {"test_loss": report["test_loss"]["mean"], "bits_per_dim": _number(report.get("bits_per_dim")),
              "fid": _number(report.get("fid")), "kid": _number(report.get("kid")),
              "inception_score": _number(report.get("inception_score"))}
    with SummaryWriter(str(logdir)) as writer:
        for name, v in values.items():
            if v is not None and math.isfinite(v):
                writer.add_scalar(f"eval/{name}", v, report["step"])


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
    if "vlb" in report:
        v = report["vlb"]
        parts.append(f"VLB {pm(v['bits_per_dim'])} bits/dim" if "bits_per_dim" in v
                     else f"VLB {pm(v['nats_per_example'])} nats/example"
                     + (f" (gap to true NLL {pm(v['gap_to_true_nll_nats_per_example'])})"
                        if "gap_to_true_nll_nats_per_example" in v else ""))
    if "fid" in report:
        sq = report["sample_quality"]
        fid, kid = _number(report["fid"]), _number(report.get("kid"))
        parts.append(f"FID {fid:.3f}" + (f", KID {kid:.5f}" if kid is not None else "")
                     + f", IS {report['inception_score']['mean']:.3f} of {sq['num_samples']} samples"
                     f" ({sq['features']}, NFE {sq['nfe_per_sample']:.0f})")
        for name, row in report.get("references", {}).items():
            bpd = _number(row.get("bits_per_dim"))
            parts.append(f"{name}: " + (f"{bpd:.4f} bits/dim, " if bpd is not None else "")
                         + f"FID {_number(row['fid']):.3f}")
    return "; ".join(parts)
