"""`--mode sample`: draw samples with any sampler of `sde_lib.sampling`, split over the ranks,
and write them to `<workdir>/samples/`: a PNG (image grid, or 2-D scatter beside the data), an
.npz of the samples and a JSON summary (NFE, wall time, settings)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import data as data_lib
from ..sampling import sample
from . import distributed, factory, plots

log = logging.getLogger(__name__)
MAX_GRID_IMAGES = 100  # images shown in a PNG grid (all of them go to the .npz)


def draw_samples(ctx: distributed.Context, sde, score_fn: Callable, data_shape: Tuple[int, ...], *,
                 num_samples: int, batch_size: int, seed: int, sample_kwargs: Dict[str, Any],
                 progress: bool = False) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """`num_samples` samples in model space, drawn in batches split over the ranks.

    Rank r draws samples r, r + W, ... in batches of `batch_size` with a generator seeded by
    (seed, r); the result is the same on every rank (gathered, in sample order) and is
    reproducible for a given seed, world size and batch size.

    Returns:
      (samples (num_samples, *data_shape) float32 on the CPU, info) with info["nfe"] the score
      evaluations per sample trajectory (mean over batches), info["wall_s"] the wall time.
    """
    start = time.perf_counter()
    mine = len(distributed.shard(num_samples, ctx))
    generator = torch.Generator().manual_seed(data_lib.derive_seed(seed, ctx.rank))
    chunks, nfes = [], []
    sizes = [min(batch_size, mine - i) for i in range(0, mine, batch_size)]
    for b in tqdm(sizes, desc=f"sampling ({sample_kwargs['method']})", disable=not progress,
                  leave=False):
        x, nfe = sample(sde, score_fn, (b, *data_shape), generator=generator, device=ctx.device,
                        **sample_kwargs)
        chunks.append(x.float())
        nfes.append(nfe)
    local = torch.cat(chunks) if chunks else torch.zeros((0, *data_shape), device=ctx.device)
    rows = distributed.gather_rows(ctx, local)
    samples = distributed.unshard(rows, num_samples, ctx.world_size).cpu()
    all_nfes = [n for part in distributed.gather_objects(ctx, nfes) for n in part]
    info = {"nfe": float(np.mean(all_nfes)) if all_nfes else 0.0,
            "nfe_per_batch": all_nfes, "wall_s": time.perf_counter() - start}
    return samples, info


def save_samples(samples: torch.Tensor, config, path_stem: Path, *, reference: Optional[torch.Tensor] = None,
                 title: str = "") -> Dict[str, str]:
    """Write `<stem>.png` and `<stem>.npz`: uint8 images (B, C, H, W) as the official code stores
    them, or float 2-D points plotted beside `reference` data points."""
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    png, npz = path_stem.with_suffix(".png"), path_stem.with_suffix(".npz")
    if data_lib.is_image_data(config.data):
        images = data_lib.to_uint8(data_lib.inverse_data_scaler(config.data)(samples))
        plots.save_image_grid(images[:MAX_GRID_IMAGES], png)
        np.savez_compressed(npz, samples=images.numpy())
    else:
        plots.save_scatter(samples, reference if reference is not None else samples, png, title)
        np.savez_compressed(npz, samples=samples.numpy())
    return {"png": str(png), "npz": str(npz)}


def toy_sample_quality(config, samples: torch.Tensor) -> Optional[Dict[str, float]]:
    """On the Gaussian-mixture toy: the true density's NLL of the samples next to its entropy
    (equal in expectation for perfect samples; a large gap means misplaced samples)."""
    density = data_lib.toy_density(config.data)
    if density is None:
        return None
    nll = -density.log_prob(samples.double())
    entropy, entropy_se = density.entropy()
    return {"true_nll_of_samples": nll.mean().item(),
            "true_nll_of_samples_stderr": (nll.std() / len(nll) ** 0.5).item(),
            "entropy": entropy, "entropy_stderr": entropy_se}


def run(ctx: distributed.Context, config, workdir: Path, model, *, progress: bool = True) -> Dict[str, Any]:
    """The sample mode. `model` is a `loading.LoadedModel` (score, SDE, step, source).

    Returns the summary (also written to `<workdir>/samples/<tag>.json` on rank 0).
    """
    s = config.sampling
    kwargs = factory.sample_kwargs(config)
    shape = data_lib.data_shape(config.data)
    samples, info = draw_samples(ctx, model.sde, model.score_fn, shape, num_samples=s.num_samples,
                                 batch_size=s.batch_size, seed=factory.sampling_seed(config),
                                 sample_kwargs=kwargs, progress=progress)
    tag = f"{model.tag}_{s.method}"
    summary = {"source": model.source, "step": model.step, "method": s.method,
               "options": kwargs, "num_samples": s.num_samples, "batch_size": s.batch_size,
               "seed": factory.sampling_seed(config), "world_size": ctx.world_size, **info}
    if ctx.is_main:
        out = Path(workdir) / "samples"
        reference = None
        if not data_lib.is_image_data(config.data):
            train_ds, _ = data_lib.build_datasets(config.data, seed=config.seed)
            reference = train_ds.x[: s.num_samples]
            quality = toy_sample_quality(config, samples)
            if quality:
                summary["toy"] = quality
        title = f"{config.sde.name}, {s.method}, NFE {info['nfe']:.0f}"
        summary["files"] = save_samples(samples, config, out / tag, reference=reference, title=title)
        (out / f"{tag}.json").write_text(json.dumps(summary, indent=2, default=str))
        log.info("Sampled %d in %.1f s with %s (NFE %.0f per sample): %s", s.num_samples,
                 info["wall_s"], s.method, info["nfe"], summary["files"]["png"])
        print(f"[sample] {s.num_samples} samples, method={s.method}, NFE={info['nfe']:.0f},"
              f" wall={info['wall_s']:.1f}s -> {summary['files']['png']}", flush=True)
    distributed.barrier(ctx)
    return summary
