"""`--mode inpaint` and `--mode colorize`: controllable generation from PNG inputs with the trained
score model (`sde_lib.controllable`, Song et al. 2021, Sec. 5 and App. I).

    main.py --mode inpaint  --input photo.png --mask mask.png --workdir W   (mask: white = known)
    main.py --mode colorize --input photo.png --workdir W                   (grey levels kept)

`specs.ControllableSettings`: `num_samples` samples of one input, in batches of the sampling batch
size, with the inpainting method and its sampler (`sde_lib.controllable.Inpainter`), seeded by the
sampling seed. Written beside the input: `<stem>_<mode>_<tag>.png` (a grid: the input, the masked
or grey input, the samples), `.npz` (uint8 `samples`, `input`, `mask` or `gray`) and `.json` (NFE,
wall time, options, and the largest change of a known pixel (uint8 levels) or of the grey level
(model space), 0 by construction up to float rounding).

On 2-D toys inpainting fixes one coordinate (`known_dim`, `known_value`) and draws
the other; `<workdir>/samples/<tag>_inpaint_x<d>=<value>.{png,npz,json}` hold a scatter plot (the
samples on the data, and their histogram beside the exact conditional density) and, on the
Gaussian-mixture toy, the exact conditional's NLL of the samples next to its entropy.

The class label (None: unconditional, or one class), guidance and its scale pick the score as in
sample mode. Under torchrun the samples are split over the ranks as in sample mode (rank r draws
samples r, r + W, ... with its own generator); rank 0 writes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch
from PIL import Image

from . import distributed, plots
from .data import DataSpec, derive_seed
from .jsonio import write_json
from .sampling_run import batch_size_for, guided_score_fn, sharded_batches, to_images
from .specs import ControllableSettings, Experiment

Tensor = torch.Tensor
GRID_ROW = 10  # images per row of the output grid


# ------------------------------------------------------------------------------------ inputs
def _open(path, what: str) -> Image.Image:
    if path is None:
        raise ValueError(f"{what} is required: a PNG file")
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as err:
        raise ValueError(f"{what}={str(path)!r} cannot be read as an image ({err})") from err
    return image


def read_image(path, data: DataSpec) -> Tensor:
    """A PNG as one image (1, C, S, S) in model space; RGB or grey as the data's channels.

    Raises:
      ValueError: unreadable, or not S x S (the model's image size).
    """
    image = _open(path, "--input")
    size = data.image_size
    if image.size != (size, size):
        raise ValueError(f"--input={str(path)!r} is {image.size[0]}x{image.size[1]} pixels; the model"
                         f" takes {size}x{size} images: resize or crop it to {size}x{size}")
    mode = "RGB" if data.num_channels == 3 else "L"
    pixels = np.asarray(image.convert(mode), dtype=np.uint8).reshape(size, size, -1)
    x01 = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255.0
    return data.scaler()(x01)


def read_mask(path, size: Tuple[int, int]) -> Tensor:
    """A PNG mask (white 255 = known, black 0 = to fill in) as (1, 1, H, W) of 0/1, shared by
    all channels.

    Raises:
      ValueError: unreadable, of another size than the input, or with other grey levels (after
        conversion to grey) than 0 and 255.
    """
    image = _open(path, "--mask")
    if image.size != size:
        raise ValueError(f"--mask={str(path)!r} is {image.size[0]}x{image.size[1]} pixels but the input"
                         f" is {size[0]}x{size[1]}: the mask must have the input's size")
    grey = np.asarray(image.convert("L"), dtype=np.uint8)
    other = np.setdiff1d(np.unique(grey), [0, 255])
    if other.size:
        raise ValueError(f"--mask={str(path)!r} is not binary: it has grey levels {other[:5].tolist()}"
                         " besides 0 (unknown) and 255 (known); save it with pure black and white"
                         " (no anti-aliasing, no JPEG)")
    return torch.from_numpy(grey == 255)[None, None].float()


def check_inputs(data: DataSpec, modes, input_path, mask_path) -> None:
    """Everything inpaint/colorize need, before any work (also reads the PNGs).

    Raises:
      ValueError: a missing or extra flag, an unreadable file, a size mismatch, a non-binary mask,
        colorization of non-RGB data.
    """
    modes = [m for m in modes if m in ("inpaint", "colorize")]
    if not modes:
        if input_path or mask_path:
            raise ValueError("--input and --mask are for --mode inpaint and colorize")
        return
    if mask_path and "inpaint" not in modes:
        raise ValueError("--mask is for --mode inpaint (colorize keeps the grey levels of --input)")
    if not data.is_image:
        if "colorize" in modes:
            raise ValueError("--mode colorize needs RGB images; the data are 2-D points")
        if input_path or mask_path:
            raise ValueError("on 2-D data --mode inpaint fixes one coordinate: set"
                             " config.controllable.known_dim and known_value, without --input/--mask")
        return
    x = read_image(input_path, data)
    if "inpaint" in modes:
        if not mask_path:
            raise ValueError("--mode inpaint needs --mask=PNG (white = known, black = to fill in)")
        read_mask(mask_path, (x.shape[-1], x.shape[-2]))
    if "colorize" in modes and data.num_channels != 3:
        raise ValueError(f"--mode colorize needs RGB images; config.data.num_channels="
                         f"{data.num_channels}")


# ------------------------------------------------------------------------------------ runs
def score_for(c: ControllableSettings, model, classifier=None) -> Callable[[Tensor, Tensor], Tensor]:
    """The score controllable generation follows: the model's (unconditional, the null label for
    a conditional model), or guided for the class `c.class_label`."""
    if c.class_label is None:
        return model.score_fn
    return guided_score_fn(model, int(c.class_label), guidance=c.guidance, scale=c.scale,
                           null_label=c.null_label, classifier=classifier)


def _batched(ctx: distributed.Context, c: ControllableSettings, sample_shape: Tuple[int, ...],
             fn: Callable[[int, torch.Generator, Any], Tuple[Tensor, int]], progress: bool,
             desc: str, model, score_fn: Callable) -> Tuple[Tensor, Dict[str, Any]]:
    """Run fn(batch size, generator, bar) over num_samples split over the ranks, in batches
    (`sharded_batches`; batch size 0: from free memory, probed with `model` and `score_fn`);
    (samples (num_samples, *sample_shape) on the CPU, info)."""
    seed = derive_seed(c.seed, 5)
    copies = getattr(c.inpainter.method, "particles", 1)  # smc: each score call is on particles x B
    batch_size = c.batch_size or max(batch_size_for(ctx, 0, model, score_fn, sample_shape, c.num_samples * copies,
                                                    mode=desc) // copies, 1)
    samples, info = sharded_batches(ctx, c.num_samples, batch_size, seed, sample_shape,
                                    lambda indices, generator, bar: fn(len(indices), generator, bar),
                                    desc=desc, progress=progress)
    return samples, {**info, "world_size": ctx.world_size, "batch_size": batch_size}


def _summary(c: ControllableSettings, model, mode: str, info: Dict[str, Any], classifier) -> Dict[str, Any]:
    summary = {"mode": mode, "source": model.source, "step": model.step,
               "options": c.inpainter.describe(), "num_samples": c.num_samples, "seed": c.seed,
               "class_label": c.class_label, "guidance": c.guidance, **info}
    if classifier is not None:
        summary["classifier"] = {"source": classifier.source, "step": classifier.step}
    return summary


def _write(stem: Path, grid: Tensor, arrays: Dict[str, np.ndarray], summary: Dict[str, Any]) -> Dict[str, Any]:
    png, npz, js = (stem.with_name(stem.name + ext) for ext in (".png", ".npz", ".json"))
    plots.save_image_grid(grid, png, nrow=min(len(grid), GRID_ROW))
    np.savez_compressed(npz, **arrays)
    summary["files"] = {"png": str(png), "npz": str(npz), "json": str(js)}
    write_json(js, summary)
    print(f"[{summary['mode']}] {summary['num_samples']} samples, NFE={summary['nfe']:.0f},"
          f" wall={summary['wall_s']:.1f}s -> {png}", flush=True)
    return summary


def run_inpaint(ctx: distributed.Context, exp: Experiment, workdir: Path, model, *, input_path=None,
                mask_path=None, classifier=None, progress: bool = True) -> Dict[str, Any]:
    """--mode inpaint: images from --input/--mask, or one known coordinate on 2-D data; the
    summary on rank 0 ({} on the others)."""
    progress = progress and ctx.is_main
    if exp.data.is_image:
        summary = _inpaint_image(ctx, exp, model, Path(input_path), Path(mask_path), classifier, progress)
    else:
        summary = _inpaint_toy(ctx, exp, Path(workdir), model, classifier, progress)
    distributed.barrier(ctx)
    return summary


def _inpaint_image(ctx: distributed.Context, exp: Experiment, model, input_path: Path, mask_path: Path,
                   classifier, progress) -> Dict[str, Any]:
    c, data = exp.controllable, exp.data
    x = read_image(input_path, data).to(ctx.device)
    mask = read_mask(mask_path, (x.shape[-1], x.shape[-2])).to(x.device)
    score_fn = score_for(c, model, classifier)

    def batch(b, generator, bar):
        return c.inpainter.inpaint(model.sde, score_fn, x.expand(b, -1, -1, -1), mask, generator=generator,
                                   progress=bar)

    samples, info = _batched(ctx, c, tuple(x.shape[1:]), batch, progress, "inpainting", model, score_fn)
    if not ctx.is_main:
        return {}
    images, known = to_images(samples, data), mask.cpu().bool().expand_as(samples)
    source = to_images(x.cpu(), data)
    masked = torch.where(mask.cpu().bool(), source, torch.zeros_like(source))
    summary = _summary(c, model, "inpaint", info, classifier)
    summary["known_pixels"] = int(mask.sum())
    summary["max_known_pixel_change"] = int((images.int() - source.int()).abs()[known].max()) if known.any() else 0
    stem = input_path.parent / f"{input_path.stem}_inpaint_{model.tag}"
    return _write(stem, torch.cat([source, masked, images]),
                  {"samples": images.numpy(), "input": source.numpy(),
                   "mask": (mask.cpu() * 255).to(torch.uint8).numpy()}, summary)


def run_colorize(ctx: distributed.Context, exp: Experiment, workdir: Path, model, *, input_path=None,
                 classifier=None, progress: bool = True) -> Dict[str, Any]:
    """--mode colorize: colour images whose grey level (R + G + B) / 3 is the input's; the summary
    on rank 0 ({} on the others)."""
    progress = progress and ctx.is_main
    c, data = exp.controllable, exp.data
    input_path = Path(input_path)
    x = read_image(input_path, data).to(ctx.device)
    score_fn = score_for(c, model, classifier)

    def batch(b, generator, bar):
        return c.inpainter.colorize(model.sde, score_fn, x.expand(b, -1, -1, -1), generator=generator,
                                    progress=bar)

    samples, info = _batched(ctx, c, tuple(x.shape[1:]), batch, progress, "colorization", model, score_fn)
    summary: Dict[str, Any] = {}
    if ctx.is_main:
        images = to_images(samples, data)
        source = to_images(x.cpu(), data)
        gray = to_images(x.cpu().mean(dim=1, keepdim=True).expand_as(x.cpu()), data)
        summary = _summary(c, model, "colorize", info, classifier)
        # The channel mean of every sample is the input's grey level in model space (the saved
        # uint8 images round and clip each channel, which can move it).
        summary["max_gray_level_change"] = (samples.mean(1) - x.cpu().mean(1)).abs().max().item()
        stem = input_path.parent / f"{input_path.stem}_colorize_{model.tag}"
        summary = _write(stem, torch.cat([source, gray, images]),
                         {"samples": images.numpy(), "input": source.numpy(), "gray": gray[:, :1].numpy()},
                         summary)
    distributed.barrier(ctx)
    return summary


def _inpaint_toy(ctx: distributed.Context, exp: Experiment, workdir: Path, model, classifier,
                 progress) -> Dict[str, Any]:
    c, data = exp.controllable, exp.data
    d, value = c.known_dim, c.known_value
    dim = data.dim
    mask = torch.zeros(1, dim)
    mask[0, d] = 1.0
    score_fn = score_for(c, model, classifier)

    def batch(b, generator, bar):
        x_known = torch.zeros(b, dim, device=ctx.device)
        x_known[:, d] = value
        return c.inpainter.inpaint(model.sde, score_fn, x_known, mask.to(x_known.device), generator=generator,
                                   progress=bar)

    samples, info = _batched(ctx, c, (dim,), batch, progress, "inpainting", model, score_fn)
    if not ctx.is_main:
        return {}
    summary = _summary(c, model, "inpaint", info, classifier)
    summary.update(known_dim=d, known_value=value)
    exact = None
    density = data.toy_density()
    unknown = [i for i in range(dim) if i != d]
    if density is not None:
        exact = density.conditional(mask[0].bool(), torch.full((1,), value))
        nll = -exact.log_prob(samples[:, unknown].double())
        entropy, entropy_se = exact.entropy(50_000)
        summary["toy"] = {"exact_conditional_nll_of_samples": nll.mean().item(),
                          "exact_conditional_nll_stderr": (nll.std() / len(nll) ** 0.5).item(),
                          "exact_conditional_entropy": entropy, "exact_conditional_entropy_stderr": entropy_se,
                          "sample_mean": samples[:, unknown].mean(0).tolist(),
                          "exact_mean": exact.mean().tolist()}
    train_ds, _ = data.datasets(exp.seed)
    out = workdir / "samples"
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{model.tag}_inpaint_x{d}={value:g}"
    png, npz, js = (stem.with_name(stem.name + ext) for ext in (".png", ".npz", ".json"))
    method = c.inpainter
    plots.save_inpainting_scatter(train_ds.x[: max(len(samples), 2000)], samples, d, value, png,
                                  exact=exact, title=f"{type(model.sde).__name__}, {method.name}"
                                  f" ({method.sampler_name}), NFE {info['nfe']:.0f}")
    np.savez_compressed(npz, samples=samples.numpy())
    summary["files"] = {"png": str(png), "npz": str(npz), "json": str(js)}
    write_json(js, summary)
    print(f"[inpaint] {len(samples)} samples with x{d} = {value:g}, NFE={info['nfe']:.0f},"
          f" wall={info['wall_s']:.1f}s -> {png}", flush=True)
    return summary
