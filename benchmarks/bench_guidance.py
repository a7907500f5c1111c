"""Guidance, inpainting and colorization with exact mixture scores, against exact answers.

Sections (`--sections`):
  guidance   classifier-free (w = 1) and classifier (scale = 1) guidance on the test mixtures,
             VP / sub-VP / VE: purity and SW2 to fresh samples of the class (with its floor).
  sweep      classifier-free guidance for w in {0, 0.5, 1, 2, 4, 8} on an overlapping 2-D
             mixture, probability-flow ODE and reverse SDE: purity (share classified as y),
             soft purity E p_0(y | x), total spread tr Cov(x), within-class spread tr Cov(x | x
             classified y). Writes docs/figures/guidance_samples.png and guidance_sweep.png.
  inpaint    every method against the exact conditional p_0(x_u | y) (GaussianMixture.conditional):
             1-D: KS against the exact CDF, W2 against exact samples, mean and variance, NLL gap;
             d-D: SW2 (and the floor between exact samples), largest |z| of per-coordinate means
             and variances against the exact moments, NLL gap E[-log p(x_u | y)] - H.
             Writes docs/figures/inpainting_2d.png.
  colorize   the same for colorization (exact conditional of the decoupled mixture).

Example:
    python benchmarks/bench_guidance.py --threads 1
    python benchmarks/bench_guidance.py --sections inpaint --n-2d 2000
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from sde_lib import VESDE, VPSDE, GaussianMixture, subVPSDE  # noqa: E402
from sde_lib.controllable import colorize, decouple, inpaint  # noqa: E402
from sde_lib.guidance import classifier, classifier_free  # noqa: E402
from sde_lib.sampling import sample  # noqa: E402
from mixtures import image_mixture, random_directions, sliced_w2, two_d_mixture  # noqa: E402
from test_controllable import color_mixture, correlated_gaussian, exact_ks, moment_z  # noqa: E402
from test_guidance import component, draw, noise_floor, overlapping_mixture  # noqa: E402

SDES = {"vp": VPSDE, "subvp": subVPSDE, "ve": VESDE}
FIGURES = os.path.join(ROOT, "docs", "figures")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


# ------------------------------------------------------------------------------- guidance at w = 1
def section_guidance(args):
    print("\n## Guidance at w = 1 / scale = 1: samples of class y vs the exact class-conditional")
    print("| case | SDE | guidance | sampler | NFE | wall s | purity (exact) | SW2 | SW2 floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    cases = {
        "2-D": (two_d_mixture(), 0, args.n_2d, dict(method="ode", solver="RK45"), "ODE RK45 1e-5"),
        "3x8x8": (image_mixture(), 1, args.n_image, dict(method="ddim", N=200, schedule="logsnr"), "DDIM 200 log-SNR"),
    }
    for case, (gm, y, n, options, label) in cases.items():
        dirs = random_directions(gm.dim)
        for sde_name, sde_cls in SDES.items():
            sde = sde_cls()
            mixture0 = gm
            target = component(mixture0, y)
            truth = draw(target, n, 12)
            floor, floor_sd = noise_floor(target, n, dirs)
            p_true = (mixture0.class_log_posterior(truth.reshape(n, -1)).argmax(1) == y).double().mean().item()
            for kind in ("classifier-free", "classifier"):
                if kind == "classifier-free":
                    fn = classifier_free(gm.labelled_score_fn(sde, -1), y, 1.0, -1)
                else:
                    fn = classifier(gm.score_fn(sde), lambda x, t, sde=sde: gm.class_log_posterior(x, sde, t), y, 1.0)
                (x, nfe), wall = timed(sample, sde, fn, (n, *gm.event_shape),
                                       generator=torch.Generator().manual_seed(11), **options)
                p = (mixture0.class_log_posterior(x.reshape(n, -1).double()).argmax(1) == y).double().mean().item()
                print(f"| {case} | {sde_name} | {kind} | {label} | {nfe} | {wall:.1f} | {p:.4f} ({p_true:.4f}) | "
                      f"{sliced_w2(x, truth, dirs):.4f} | {floor:.4f} +- {floor_sd:.4f} |", flush=True)


# ------------------------------------------------------------------------------- sweep over w
def sweep_stats(gm, x, y):
    x = x.double()
    log_post = gm.class_log_posterior(x)
    mine = x[log_post.argmax(1) == y]
    return dict(
        purity=(log_post.argmax(1) == y).double().mean().item(),
        soft=log_post[:, y].exp().mean().item(),
        spread=torch.trace(torch.cov(x.T)).item(),
        within=torch.trace(torch.cov(mine.T)).item() if len(mine) > 2 else float("nan"),
    )


def section_sweep(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gm, sde, y, n = overlapping_mixture(), VPSDE(), 0, args.n_2d
    weights = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    samplers = {
        "probability-flow ODE (RK45)": dict(method="ode"),
        "reverse SDE (Euler-Maruyama, 500 steps)": dict(method="pc", predictor="euler_maruyama", corrector="none", N=500),
    }
    x_T = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(3))
    exact = gm.sample(n, torch.Generator().manual_seed(4), dtype=torch.float64)
    print(f"\n## Classifier-free guidance sweep: overlapping 2-D mixture, class y = {y}, VP, {n} samples")
    print("Exact class-0 samples: " + ", ".join(f"{k} {v:.4f}" for k, v in sweep_stats(
        gm, component(gm, y).sample(n, torch.Generator().manual_seed(5), dtype=torch.float64), y).items()))
    print("| sampler | w | NFE | purity | soft purity | total spread | within-class spread |")
    print("|---|---|---|---|---|---|---|")
    results, ode_samples = {}, {}
    for label, options in samplers.items():
        results[label] = []
        for w in weights:
            fn = classifier_free(gm.labelled_score_fn(sde, -1), y, w, -1)
            x, nfe = sample(sde, fn, (n, 2), x_T=x_T, generator=torch.Generator().manual_seed(6), **options)
            stats = sweep_stats(gm, x, y)
            results[label].append(stats)
            if "ODE" in label:
                ode_samples[w] = x
            print(f"| {label} | {w} | {nfe} | {stats['purity']:.4f} | {stats['soft']:.4f} | {stats['spread']:.4f} | "
                  f"{stats['within']:.4f} |", flush=True)
    os.makedirs(args.figures, exist_ok=True)
    shown = [0.0, 1.0, 2.0, 4.0, 8.0]
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(3.0 * (len(shown) + 1), 3.2), sharex=True, sharey=True)
    colours = ["tab:blue", "tab:orange", "tab:green"]
    k_exact = gm.class_log_posterior(exact).argmax(1)
    for k in range(gm.n_components):
        axes[0].scatter(*exact[k_exact == k, :2].T[:, :600], s=2, c=colours[k], alpha=0.5)
    axes[0].set_title("p_0 (classes by colour)")
    for ax, w in zip(axes[1:], shown):
        xs = ode_samples[w].double()
        ks = gm.class_log_posterior(xs).argmax(1)
        for k in range(gm.n_components):
            ax.scatter(*xs[ks == k].T[:, :600], s=2, c=colours[k], alpha=0.5)
        ax.set_title(f"w = {w:g}")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-2, 3)
    fig.suptitle(f"Classifier-free guidance towards class {y} (blue), probability-flow ODE, exact scores")
    fig.tight_layout()
    fig.savefig(os.path.join(args.figures, "guidance_samples.png"), dpi=90)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, stats in results.items():
        style = "o-" if "ODE" in label else "s--"
        axes[0].plot(weights, [s["soft"] for s in stats], style, label=label)
        axes[1].plot(weights, [s["spread"] for s in stats], style, label=f"total, {label.split(' (')[0]}")
        axes[1].plot(weights, [s["within"] for s in stats], style, alpha=0.5,
                     label=f"within class, {label.split(' (')[0]}")
    axes[0].set(xlabel="w", ylabel="E p_0(y | x)", title="soft purity")
    axes[1].set(xlabel="w", ylabel="trace of covariance", title="spread", yscale="log")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.figures, "guidance_sweep.png"), dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------- inpainting
INPAINT_2D = {
    "replacement, PC RD+Langevin N=1000 (official)": dict(method="replacement", N=1000),
    "replacement, DDPM N=1000": dict(method="replacement", sampler="ddpm", N=1000),
    "replacement, ODE RK45": dict(method="replacement", sampler="ode"),
    "RePaint, DDPM N=250, j=10 r=10": dict(method="repaint", sampler="ddpm", N=250),
    "SMC P=4, N=200": dict(method="smc", N=200, particles=4),
    "SMC P=16, N=200": dict(method="smc", N=200, particles=16),
    "SMC P=64, N=200": dict(method="smc", N=200, particles=64),
}
INPAINT_IMAGE = {
    "replacement, PC RD+Langevin N=1000 (official)": dict(method="replacement", N=1000),
    "replacement, EM log-SNR N=200": dict(method="replacement", predictor="euler_maruyama", corrector="none",
                                          schedule="logsnr", N=200),
    "replacement, ODE RK45": dict(method="replacement", sampler="ode"),
    "RePaint, DDPM N=250, j=10 r=10": dict(method="repaint", sampler="ddpm", N=250),
    "SMC P=4, N=200": dict(method="smc", N=200, particles=4),
    "SMC P=16, N=200": dict(method="smc", N=200, particles=16),
}


def one_d_row(label, u, nfe, wall, target, truth, entropy):
    u = u.double().reshape(-1)
    w2 = math.sqrt(((u.sort().values - truth.sort().values) ** 2).mean().item())
    nll = -target.log_prob(u[:, None]).mean().item() - entropy
    mean, var = target.mean()[0].item(), target.covariance()[0, 0].item()
    print(f"| {label} | {nfe} | {wall:.1f} | {exact_ks(u, target):.4f} | {w2:.4f} | {u.mean():+.3f} ({mean:+.3f}) | "
          f"{u.var():.3f} ({var:.3f}) | {nll:+.3f} |", flush=True)


def section_inpaint(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = args.n_2d
    cases = {
        "correlated Gaussian, x_1 = 1.5 known": (correlated_gaussian(), 1.5),
        "2-D mixture, x_1 = 1.0 known": (two_d_mixture(), 1.0),
    }
    hist = {}
    for case, (gm, y1) in cases.items():
        for sde_name in args.sdes:
            sde = SDES[sde_name]()
            target = gm.conditional(torch.tensor([1]), torch.tensor([y1]))
            truth = target.sample(n, torch.Generator().manual_seed(5), dtype=torch.float64)[:, 0]
            entropy = -target.log_prob(target.sample(200_000, torch.Generator().manual_seed(6),
                                                     dtype=torch.float64)).mean().item()
            floors = [math.sqrt(((target.sample(n, torch.Generator().manual_seed(100 + r), dtype=torch.float64)[:, 0]
                                  .sort().values - truth.sort().values) ** 2).mean().item()) for r in range(10)]
            print(f"\n## Inpainting, {case}, {sde_name}, {n} samples (exact conditional: weights "
                  f"{[round(v, 3) for v in target.weights.tolist()]})")
            print(f"KS of exact samples: < {1.95 / math.sqrt(n):.4f} with probability 0.999; W2 between exact "
                  f"samples {np.mean(floors):.4f} +- {np.std(floors, ddof=1):.4f}")
            print("| method | NFE | wall s | KS | W2 | mean (exact) | var (exact) | NLL gap |")
            print("|---|---|---|---|---|---|---|---|")
            x_known = torch.tensor([[0.0, y1]]).expand(n, 2)
            mask = torch.tensor([0.0, 1.0])
            for label, options in INPAINT_2D.items():
                (x, nfe), wall = timed(inpaint, sde, gm.score_fn(sde), x_known, mask,
                                       generator=torch.Generator().manual_seed(1), **options)
                one_d_row(label, x[:, 0], nfe, wall, target, truth, entropy)
                if sde_name == "vp":
                    hist[(case, label)] = x[:, 0].numpy()
            if sde_name == "vp":
                hist[(case, "exact")] = target
    os.makedirs(args.figures, exist_ok=True)
    shown = ["replacement, PC RD+Langevin N=1000 (official)", "replacement, ODE RK45",
             "RePaint, DDPM N=250, j=10 r=10", "SMC P=64, N=200"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, case in zip(axes, cases):
        if (case, "exact") not in hist:
            continue
        target = hist[(case, "exact")]
        grid = torch.linspace(-3.5, 3.5, 400, dtype=torch.float64)
        ax.plot(grid, target.log_prob(grid[:, None]).exp(), "k-", lw=2, label="exact p(x_0 | x_1)")
        for label in shown:
            ax.hist(hist[(case, label)], bins=120, range=(-3.5, 3.5), density=True, histtype="step", label=label)
        ax.set(title=f"{case} (VP)", xlabel="x_0")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.figures, "inpainting_2d.png"), dpi=90)
    plt.close(fig)

    # 3x8x8: left half known.
    images = {"test mixture (diagonal covariances)": image_mixture()}
    if os.path.exists(args.mixtures):
        images["peer mixture (full covariances)"] = GaussianMixture.from_npz(args.mixtures, "image")
    n = args.n_image
    for case, gm in images.items():
        mask = torch.zeros(1, 3, 8, 8)
        mask[..., :4] = 1
        y = gm.sample(1, torch.Generator().manual_seed(3))
        for sde_name in args.sdes_image:
            sde = SDES[sde_name]()
            target = gm.conditional(mask, y)
            truth = target.sample(n, torch.Generator().manual_seed(5), dtype=torch.float64)
            dirs = random_directions(target.dim)
            floors = [sliced_w2(target.sample(n, torch.Generator().manual_seed(100 + r), dtype=torch.float64), truth, dirs)
                      for r in range(5)]
            entropy = -target.log_prob(target.sample(20_000, torch.Generator().manual_seed(6),
                                                     dtype=torch.float64)).mean().item()
            print(f"\n## Inpainting 3x8x8, {case}, left half known, {sde_name}, {n} samples "
                  f"(exact conditional: {target.n_components} component(s), weights "
                  f"{[round(v, 3) for v in target.weights.tolist()]})")
            print(f"SW2 between exact samples: {np.mean(floors):.4f} +- {np.std(floors, ddof=1):.4f}")
            print("| method | NFE | wall s | SW2 | max abs z (mean, var) [Bonferroni] | NLL gap (nats) |")
            print("|---|---|---|---|---|---|")
            for label, options in INPAINT_IMAGE.items():
                (x, nfe), wall = timed(inpaint, sde, gm.score_fn(sde), y.expand(n, 3, 8, 8), mask,
                                       generator=torch.Generator().manual_seed(1), **options)
                u = x[..., 4:].reshape(n, -1).double()
                z, z_crit = moment_z(u, target)
                nll = -target.log_prob(u).mean().item() - entropy
                print(f"| {label} | {nfe} | {wall:.1f} | {sliced_w2(u, truth, dirs):.4f} | {z:.1f} [{z_crit:.1f}] | "
                      f"{nll:+.2f} |", flush=True)


# ------------------------------------------------------------------------------- colorization
COLORIZE = {
    "replacement, PC RD+Langevin N=1000 (official)": dict(method="replacement", N=1000),
    "replacement, DDPM N=200": dict(method="replacement", sampler="ddpm", N=200),
    "replacement, ODE RK45": dict(method="replacement", sampler="ode"),
    "RePaint, DDPM N=250, j=10 r=10": dict(method="repaint", sampler="ddpm", N=250),
    "SMC P=8, N=100": dict(method="smc", N=100, particles=8),
    "SMC P=16, N=100": dict(method="smc", N=100, particles=16),
    "SMC P=32, N=200": dict(method="smc", N=200, particles=32),
}


def section_colorize(args):
    cases = {"3x4x4 colour mixture (tests)": color_mixture(), "3x8x8 test mixture": image_mixture()}
    n = args.n_image
    for case, gm in cases.items():
        d = gm.dim
        shape = gm.event_shape
        Q = decouple(torch.eye(d, dtype=torch.float64).reshape(d, *shape)).reshape(d, d).T
        known = torch.zeros(shape, dtype=torch.bool)
        known[0] = True
        x0 = gm.sample(1, torch.Generator().manual_seed(5))
        gray = x0.mean(1, keepdim=True)
        for sde_name in args.sdes_image:
            sde = SDES[sde_name]()
            target = gm.linear_map(Q).conditional(known, decouple(x0.double()))
            truth = target.sample(n, torch.Generator().manual_seed(7), dtype=torch.float64)
            dirs = random_directions(target.dim)
            floors = [sliced_w2(target.sample(n, torch.Generator().manual_seed(100 + r), dtype=torch.float64), truth, dirs)
                      for r in range(5)]
            prior_var = torch.diagonal(gm.linear_map(Q).covariance())[~known.reshape(-1)]
            ratio = (torch.diagonal(target.covariance()) / prior_var)
            print(f"\n## Colorization, {case}, {sde_name}, {n} samples: exact chroma variance / marginal "
                  f"{ratio.min():.3f}-{ratio.max():.3f}; SW2 between exact samples {np.mean(floors):.4f} +- "
                  f"{np.std(floors, ddof=1):.4f}")
            print("| method | NFE | wall s | SW2 | max abs z (mean, var) [Bonferroni] | grey error |")
            print("|---|---|---|---|---|---|")
            for label, options in COLORIZE.items():
                (x, nfe), wall = timed(colorize, sde, gm.score_fn(sde), gray.expand(n, 1, *shape[1:]),
                                       generator=torch.Generator().manual_seed(6), **options)
                u = decouple(x.double())[:, 1:].reshape(n, -1)
                z, z_crit = moment_z(u, target)
                grey_err = (x.mean(1, keepdim=True) - gray).abs().max().item()
                print(f"| {label} | {nfe} | {wall:.1f} | {sliced_w2(u, truth, dirs):.4f} | {z:.1f} [{z_crit:.1f}] | "
                      f"{grey_err:.1e} |", flush=True)


SECTIONS = {"guidance": section_guidance, "sweep": section_sweep, "inpaint": section_inpaint,
            "colorize": section_colorize}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--sdes", nargs="+", default=list(SDES), choices=list(SDES), help="SDEs of the 2-D cases")
    parser.add_argument("--sdes-image", nargs="+", default=["vp"], choices=list(SDES),
                        help="SDEs of the 192-D inpainting and colorization cases")
    parser.add_argument("--n-2d", type=int, default=2000)
    parser.add_argument("--n-image", type=int, default=500)
    parser.add_argument("--mixtures", default="/work/shared/peer/mixtures.npz",
                        help="peer mixtures (full-covariance 3x8x8 case), skipped when absent")
    parser.add_argument("--figures", default=FIGURES)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); exact mixture scores; "
          f"tolerances and floors from the sample sizes")
    for name in args.sections:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
