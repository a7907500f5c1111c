"""The digits job end to end, timed, and its figures: the table of benchmarks/RESULTS.md (model vs
Gaussian mixture vs floor: test bits/dim, FID, KID, IS with standard errors) and the sample grids
of docs/evaluation.md.

    python benchmarks/bench_digits.py --workdir runs/bench_digits [--conditional] [--figures docs/figures]

Runs `main.py --config configs/vp_digits.py --mode train,sample,eval` (and with --conditional
`configs/vp_digits_conditional.py --mode train,sample`) as a user would, each in a fresh
workdir, then prints the wall times and the table in Markdown and writes
`<figures>/digits_samples.png` (real digits | samples) and `<figures>/digits_guidance.png`.
"""
import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UPSCALE = 4  # 8x8 digits drawn as 32x32 blocks


def run_job(config: str, modes: str, workdir: Path, extra=()) -> float:
    if workdir.exists():
        shutil.rmtree(workdir)
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "main.py"), "--config", str(ROOT / "configs" / config),
                    "--mode", modes, f"--workdir={workdir}", "--noprogress", *extra], cwd=ROOT, check=True)
    return time.perf_counter() - start


def fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, dict):
        se = v.get("stderr")
        return f"{v['mean']:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")
    return f"{v:.{digits}f}"


def table(report) -> str:
    rows = [("score model (VP, DDPM++)", report)] + [
        (name, report["references"][key]) for key, name in
        (("gaussian_mixture", "Gaussian mixture (sklearn)"), ("floor", "floor: test split"))]
    lines = ["| model | test bits/dim | FID | KID | IS | samples |", "|---|---|---|---|---|---|"]
    for name, row in rows:
        kid = row.get("kid")
        lines.append(f"| {name} | {fmt(row.get('bits_per_dim'), 4)} | {fmt(row.get('fid'), 2)} |"
                     f" {fmt(kid and {'mean': kid['mean'], 'stderr': kid.get('stderr')}, 2)} |"
                     f" {fmt(row['inception_score'], 3)} | {row.get('num_samples', report['sample_quality']['num_samples'])} |")
    return "\n".join(lines)


def upscaled(images: np.ndarray, nrow: int) -> Image.Image:
    """uint8 (B, 1, 8, 8) -> one grey grid image, each digit UPSCALE times larger, 2 px gaps."""
    b = len(images)
    rows = (b + nrow - 1) // nrow
    size = 8 * UPSCALE
    grid = np.full((rows * (size + 2) + 2, nrow * (size + 2) + 2), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        block = np.kron(img[0], np.ones((UPSCALE, UPSCALE), dtype=np.uint8))
        grid[2 + r * (size + 2):2 + r * (size + 2) + size, 2 + c * (size + 2):2 + c * (size + 2) + size] = block
    return Image.fromarray(grid, mode="L")


def sample_figure(workdir: Path, out: Path) -> None:
    from sde_app.data import DataSpec
    from sde_app.features import data_images

    real, _ = data_images(DataSpec(dataset="digits", image_size=8, num_channels=1), "test")
    samples = np.load(next((workdir / "samples").glob("step_*.npz")))["samples"]
    left, right = upscaled(real[:100].numpy(), 10), upscaled(samples[:100], 10)
    canvas = Image.new("L", (left.width + right.width + 16, left.height), 255)
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 16, 0))
    canvas.save(out)


def guidance_figure(workdir: Path, out: Path) -> None:
    """Rows: w = 0, 1, 2, 4; columns: the digits 0..9 (the first sample of each class)."""
    rows = []
    for w in (0, 1, 2, 4):
        f = next((workdir / "samples").glob(f"step_*_classifier_free_w{w:g}.npz"))
        blob = np.load(f)
        samples, labels = blob["samples"], blob["labels"]
        rows.append(np.stack([samples[np.flatnonzero(labels == k)[0]] for k in range(10)]))
    upscaled(np.concatenate(rows), 10).save(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/bench_digits")
    parser.add_argument("--conditional", action="store_true")
    parser.add_argument("--figures", default=None, help="folder for the sample grids (e.g. docs/figures)")
    args = parser.parse_args()
    base = Path(args.workdir)
    wall = run_job("vp_digits.py", "train,sample,eval", base / "vp_digits")
    report = json.loads(next((base / "vp_digits" / "eval").glob("step_*.json")).read_text())
    print(f"\nvp_digits train,sample,eval: {wall:.0f} s")
    sq = report["sample_quality"]
    print(f"sampler {sq['sampler']['method']}, NFE per sample {sq['nfe_per_sample']:.0f}, likelihood NFE"
          f" {report['likelihood']['nfe']:.0f}, classifier test accuracy {sq['feature_network']['test_accuracy']:.4f},"
          f" Gaussian mixture components {report['references']['gaussian_mixture']['components']}")
    print(json.dumps(report["versus_references"], indent=1))
    print(table(report))
    if args.figures:
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        sample_figure(base / "vp_digits", Path(args.figures) / "digits_samples.png")
    if args.conditional:
        wall_c = run_job("vp_digits_conditional.py", "train,sample", base / "vp_digits_conditional")
        print(f"vp_digits_conditional train,sample: {wall_c:.0f} s")
        if args.figures:
            guidance_figure(base / "vp_digits_conditional", Path(args.figures) / "digits_guidance.png")


if __name__ == "__main__":
    main()
