"""`--mode sample`: draw samples with any sampler of `sde_lib.sampling`, split over the ranks,
and write them to `<workdir>/samples/`: a PNG (image grid, or 2-D scatter beside the data), an
.npz of the samples and a JSON summary (NFE, wall time, settings).

Class labels and guidance (`specs.SamplingSettings`: labels, guidance, scales) turn the model
into the score the sampler follows (`guided_score_fn`): the conditional score of a
class-conditional model, classifier-free guidance with weight w, or classifier guidance with scale
s. A list of scales gives one run per scale (same noise) and `samples/guidance_grid.png`.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from sde_lib import guidance as guidance_lib
from sde_lib.sampling import Sampler

from . import data as data_lib
from . import distributed, memory, plots
from .data import DataSpec
from .jsonio import write_json
from .specs import Experiment, SamplingSettings

log = logging.getLogger(__name__)
MAX_GRID_IMAGES = 100  # images shown in a PNG grid (all of them go to the .npz)
GRID_IMAGES_PER_SCALE = 10  # images per guidance scale (one row each) in guidance_grid.png
GUIDANCE_TAGS = {"classifier_free": "w", "classifier": "s"}  # the scale's symbol in file names


def guided_score_fn(model, y: torch.Tensor, *, guidance: str, scale: float, null_label: int,
                    classifier=None) -> Callable:
    """The score a sampler follows for class labels y (B,) (or an int): `model.score_fn(x, t, y)`
    for guidance "none" (a conditional model), classifier-free guidance s(null) + w (s(y) -
    s(null)) for "classifier_free", s(x, t) + s_c grad log p_t(y | x) with the model's
    unconditional score for "classifier" (sde_lib.guidance)."""
    if guidance == "classifier":
        return guidance_lib.classifier(model.score_fn, classifier.log_prob_fn, y, scale)
    w = 1.0 if guidance == "none" else scale  # w = 1: the conditional score, one network call
    return guidance_lib.classifier_free(model.score_fn, y, w, null_label)


def sharded_batches(ctx: distributed.Context, num_samples: int, batch_size: int, seed: int,
                    shape: Tuple[int, ...], fn: Callable[..., Tuple[torch.Tensor, int]],
                    *, desc: str = "sampling", progress: bool = False) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Samples 0 .. num_samples - 1 split over the ranks and drawn in batches.

    Rank r runs fn(indices, generator, bar) -> (x (len(indices), *shape), nfe) on its samples r,
    r + W, ... in batches of `batch_size`, with one generator seeded by (seed, r); `bar` is the
    progress object to hand to the sampler (`sde_lib.progress`): one bar over all batches that
    moves within each batch and shows an ETA. The rows are gathered in sample order on every
    rank, so the result is reproducible for a given seed, world size and batch size.

    Returns:
      (samples (num_samples, *shape) float32 on the CPU, info) with info["nfe"] the score
      evaluations per sample trajectory (mean over all batches), info["nfe_per_batch"],
      info["wall_s"] the wall time.
    """
    start = time.perf_counter()
    indices = torch.tensor(list(distributed.shard(num_samples, ctx)), dtype=torch.long)
    generator = torch.Generator().manual_seed(data_lib.derive_seed(seed, ctx.rank))
    chunks, nfes = [torch.zeros((0, *shape), device=ctx.device)], []
    starts = range(0, len(indices), batch_size)
    with tqdm(total=len(starts), desc=desc, unit="batch", disable=not progress, leave=False,
              dynamic_ncols=True, bar_format=BAR_FORMAT) as bar:
        for i in starts:
            x, nfe = fn(indices[i:i + batch_size], generator, bar if progress else False)
            chunks.append(x.float().to(ctx.device))
            nfes.append(nfe)
    rows = distributed.gather_rows(ctx, torch.cat(chunks))
    samples = distributed.unshard(rows, num_samples, ctx.world_size).cpu()
    all_nfes = [n for part in distributed.gather_objects(ctx, nfes) for n in part]
    info = {"nfe": float(np.mean(all_nfes)) if all_nfes else 0.0,
            "nfe_per_batch": all_nfes, "wall_s": time.perf_counter() - start}
    return samples, info


def batch_size_for(ctx: distributed.Context, batch_size: int, model, score_fn: Callable,
                   shape: Tuple[int, ...], num_samples: int, mode: str = "sample") -> int:
    """`batch_size`, or for 0 the largest per-rank batch whose score calls `score_fn(x, t)` (x of
    shape (B, *shape)) fit in free memory (`memory.choose_batch_size`), said on rank 0."""
    if batch_size:
        return batch_size
    per_rank = math.ceil(num_samples / ctx.world_size)
    choice = memory.choose_batch_size(model.net, score_fn, shape, ctx.device, num_samples=per_rank,
                                      t=float(model.sde.T))
    if ctx.is_main:
        print(f"[{mode}] {choice.describe()}", flush=True)
    return choice.batch_size


# A bar over batches that move in fractions: two decimals of the count, elapsed and remaining time.
BAR_FORMAT = "{l_bar}{bar}| {n:.2f}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


def draw_samples(ctx: distributed.Context, sde, score_fn: Callable, data_shape: Tuple[int, ...], *,
                 sampler: Sampler, num_samples: int, batch_size: int, seed: int,
                 labels: Optional[torch.Tensor] = None, progress: bool = False,
                 desc: Optional[str] = None) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """`num_samples` samples in model space drawn by `sampler`, in batches split over the ranks
    (`sharded_batches`: reproducible for a given seed, world size and batch size).

    Args:
      score_fn: score_fn(x, t); with `labels`, a function of one batch's labels (B,) that returns
        the batch's score_fn(x, t) (e.g. `guided_score_fn` with the other arguments bound).
      sampler: a checked `sde_lib.sampling.Sampler`.
      labels: (num_samples,) class labels of the samples, or None.

    Returns:
      (samples (num_samples, *data_shape) float32 on the CPU, info) as `sharded_batches`.
    """
    def batch(indices, generator, bar):
        fn = score_fn if labels is None else score_fn(labels[indices].to(ctx.device))
        return sampler(sde, fn, (len(indices), *data_shape), generator=generator, device=ctx.device,
                       progress=bar)

    return sharded_batches(ctx, num_samples, batch_size, seed, data_shape, batch,
                           desc=desc or f"sampling ({sampler.name})", progress=progress)


def to_images(samples: torch.Tensor, data: DataSpec) -> torch.Tensor:
    """Model-space images -> uint8 (B, C, H, W)."""
    return data_lib.to_uint8(data.inverse_scaler()(samples))


def save_samples(samples: torch.Tensor, data: DataSpec, path_stem: Path, *,
                 reference: Optional[torch.Tensor] = None, title: str = "",
                 labels: Optional[torch.Tensor] = None) -> Dict[str, str]:
    """Write `<stem>.png` and `<stem>.npz`: uint8 images (B, C, H, W) as the official code stores
    them, or float 2-D points plotted beside `reference` data points; `labels` (B,) of
    class-conditional samples go to the .npz too (and colour 2-D points)."""
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    png, npz = path_stem.with_suffix(".png"), path_stem.with_suffix(".npz")
    extra = {} if labels is None else {"labels": labels.numpy()}
    if data.is_image:
        images = to_images(samples, data)
        plots.save_image_grid(images[:MAX_GRID_IMAGES], png)
        np.savez_compressed(npz, samples=images.numpy(), **extra)
    else:
        plots.save_scatter(samples, reference if reference is not None else samples, png, title,
                           labels=labels)
        np.savez_compressed(npz, samples=samples.numpy(), **extra)
    return {"png": str(png), "npz": str(npz)}


def toy_sample_quality(data: DataSpec, samples: torch.Tensor) -> Optional[Dict[str, float]]:
    """On the Gaussian-mixture toy: the true density's NLL of the samples next to its entropy
    (equal in expectation for perfect samples; a large gap means misplaced samples)."""
    density = data.toy_density()
    if density is None:
        return None
    nll = -density.log_prob(samples.double())
    entropy, entropy_se = density.entropy()
    return {"true_nll_of_samples": nll.mean().item(),
            "true_nll_of_samples_stderr": (nll.std() / len(nll) ** 0.5).item(),
            "entropy": entropy, "entropy_stderr": entropy_se}


def toy_class_quality(data: DataSpec, samples: torch.Tensor, labels: torch.Tensor) -> Optional[Dict[str, Any]]:
    """On the Gaussian-mixture toy, for samples of classes `labels` (components): the exact
    class-conditional NLL -log p_0(x | y) next to the class's exact entropy (equal in expectation
    for exact class samples), and the purity: the mean true posterior p_0(y | x) of the asked
    class ("soft") and the share of samples whose most probable class is it ("hard"). Overall
    and per class."""
    density = data.toy_density()
    if density is None:
        return None
    x, y = samples.double(), labels.long()
    nll = -density.log_prob(x, y=y)
    entropies = density.component_entropies()
    log_post = density.class_log_posterior(x)
    soft = log_post.gather(1, y[:, None])[:, 0].exp()
    hard = (log_post.argmax(1) == y).double()

    def stats(rows) -> Dict[str, float]:
        n = int(rows.sum())
        return {"n": n, "class_nll": nll[rows].mean().item(),
                "class_nll_stderr": (nll[rows].std() / n ** 0.5).item() if n > 1 else float("nan"),
                "class_entropy": entropies[y[rows]].mean().item(),
                "purity_soft": soft[rows].mean().item(), "purity_hard": hard[rows].mean().item()}

    per_class = {int(k): stats(y == k) for k in torch.unique(y)}
    return {**stats(torch.ones_like(y, dtype=torch.bool)), "per_class": per_class}


def _file_tag(model, s: SamplingSettings, scale: float, labelled: bool) -> str:
    tag = f"{model.tag}_{s.sampler.name}"
    if s.guidance in GUIDANCE_TAGS:
        return f"{tag}_{s.guidance}_{GUIDANCE_TAGS[s.guidance]}{scale:g}"
    return f"{tag}_conditional" if labelled else tag


def sample_once(ctx: distributed.Context, exp: Experiment, workdir: Path, model, *, scale: float,
                classifier=None, progress: bool = True) -> Tuple[Dict[str, Any], torch.Tensor,
                                                                 Optional[torch.Tensor]]:
    """One sampling run at guidance scale `scale`; returns (summary, samples, labels)."""
    s, data = exp.sampling, exp.data
    labels = s.class_labels(s.num_samples)
    score_fn = model.score_fn
    if labels is not None:
        score_fn = functools.partial(guided_score_fn, model, guidance=s.guidance, scale=scale,
                                     null_label=s.null_label, classifier=classifier)
    probe = score_fn if labels is None else score_fn(labels[torch.arange(memory.PROBE_BATCH) % len(labels)].to(ctx.device))
    batch_size = batch_size_for(ctx, s.batch_size, model, probe, data.shape, s.num_samples)
    samples, info = draw_samples(ctx, model.sde, score_fn, data.shape, sampler=s.sampler,
                                 num_samples=s.num_samples, batch_size=batch_size, seed=s.seed,
                                 labels=labels, progress=progress)
    tag = _file_tag(model, s, scale, labels is not None)
    summary = {"source": model.source, "step": model.step, "method": s.sampler.name,
               "options": s.sampler.describe(), "num_samples": s.num_samples, "batch_size": batch_size,
               "seed": s.seed, "world_size": ctx.world_size, **info}
    if labels is not None:
        summary.update(class_label=s.labels, guidance=s.guidance,
                       guidance_scale=scale if s.guidance != "none" else None)
        if classifier is not None:
            summary["classifier"] = {"source": classifier.source, "step": classifier.step}
    if ctx.is_main:
        out = Path(workdir) / "samples"
        reference = None
        if not data.is_image:
            train_ds, _ = data.datasets(exp.seed)
            reference = train_ds.x[: s.num_samples]
            quality = toy_sample_quality(data, samples)
            if quality:
                summary["toy"] = quality
                if labels is not None:
                    summary["toy"]["classes"] = toy_class_quality(data, samples, labels)
        title = f"{type(model.sde).__name__}, {s.sampler.name}, NFE {info['nfe']:.0f}"
        if s.guidance != "none":
            title += f", {s.guidance} {GUIDANCE_TAGS[s.guidance]} = {scale:g}"
        summary["files"] = save_samples(samples, data, out / tag, reference=reference, title=title,
                                        labels=labels)
        write_json(out / f"{tag}.json", summary)
        log.info("Sampled %d in %.1f s with %s (NFE %.0f per sample): %s", s.num_samples,
                 info["wall_s"], s.sampler.name, info["nfe"], summary["files"]["png"])
        guided = f", {s.guidance} {scale:g}" if s.guidance != "none" else ""
        print(f"[sample] {s.num_samples} samples, method={s.sampler.name}{guided}, NFE={info['nfe']:.0f},"
              f" wall={info['wall_s']:.1f}s -> {summary['files']['png']}", flush=True)
    return summary, samples, labels


def run(ctx: distributed.Context, exp: Experiment, workdir: Path, model, *, classifier=None,
        progress: bool = True) -> Dict[str, Any]:
    """The sample mode. `model` is a `loading.LoadedModel` (score, SDE, step, source);
    `classifier` a `loading.LoadedClassifier` for guidance "classifier".

    Returns the summary (also written to `<workdir>/samples/<tag>.json` on rank 0); for a list
    of guidance scales {"scales", "runs": [summary per scale], "files": {"grid": PNG}}.
    """
    s = exp.sampling
    scales = list(s.scales)
    runs = [sample_once(ctx, exp, workdir, model, scale=w, classifier=classifier,
                        progress=progress) for w in scales]
    if len(runs) == 1:
        distributed.barrier(ctx)
        return runs[0][0]
    result = {"scales": scales, "runs": [r[0] for r in runs]}
    if ctx.is_main:
        grid = Path(workdir) / "samples" / "guidance_grid.png"
        save_guidance_grid(exp, [(w, x, y) for w, (_, x, y) in zip(scales, runs)], grid,
                           title=f"{model.tag}, {s.sampler.name}")
        result["files"] = {"grid": str(grid)}
        print(f"[sample] guidance grid over {s.guidance} scales {scales} -> {grid}", flush=True)
    distributed.barrier(ctx)
    return result


def save_guidance_grid(exp: Experiment, panels: List[Tuple[float, torch.Tensor, torch.Tensor]], path: Path,
                       title: str = "") -> None:
    """One figure of samples per guidance scale: for 2-D data, a column per scale beside the data,
    points coloured by class (with the purity on the toy); for images, a row per scale of the
    first GRID_IMAGES_PER_SCALE samples (classes cycled as the labels say)."""
    g, data = exp.sampling.guidance, exp.data
    symbol = GUIDANCE_TAGS[g]
    if data.is_image:
        rows = [to_images(x[:GRID_IMAGES_PER_SCALE], data) for _, x, _ in panels]
        n = min(len(r) for r in rows)
        plots.save_image_grid(torch.cat([r[:n] for r in rows]), path, nrow=n)
        return
    train_ds, _ = data.datasets(exp.seed)
    n = max(len(x) for _, x, _ in panels)
    columns = [("data", train_ds.x[:n], train_ds.y[:n])]
    for w, x, y in panels:
        name = f"{symbol} = {w:g}" + (" (unconditional)" if w == 0 else "")
        quality = toy_class_quality(data, x, y)
        if quality:  # soft purity; class NLL - class entropy (meaningless for unconditional samples)
            name += f"\npurity {quality['purity_soft']:.3f}"
            if w > 0:
                name += f", NLL - H {quality['class_nll'] - quality['class_entropy']:+.2f}"
        columns.append((name, x, y))
    plots.save_class_scatter_grid(columns, path, title=f"{title}, {g} guidance" if title else g)
