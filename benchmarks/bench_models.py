"""Benchmark the CIFAR-10 score networks: parameters, forward time, training-step time, memory.

Each network runs in its own subprocess so that its peak memory is its own. Times are medians
over --repeats after --warmup calls. A training step is forward + mean-square loss + backward +
Adam step, in training mode (dropout on).

Example:
    python benchmarks/bench_models.py --batch-size 8 --threads 2 --repeats 5
    python benchmarks/bench_models.py --device cuda --dtype bf16 --compile --channels-last

`--toy` instead trains the default `mlp` on a 2-D Gaussian mixture and reports how close its
epsilon prediction is to the exact one (a capacity check for the toy configs). `--fir` times our
FIR resampling against the zero-insertion `upfirdn2d` formulation at the NCSN++ CIFAR-10 shapes.
"""
import math
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model  # noqa: E402  (after the path tweak, for running from a checkout)

# config.model groups of the official CIFAR-10 configurations (score_sde configs/ve, configs/vp).
DDPMPP = dict(name="ncsnpp", nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4,
              attn_resolutions=(16,), dropout=0.1, resblock_type="biggan", fir=False,
              progressive="none", progressive_input="none", embedding_type="positional",
              skip_rescale=True, init_scale=0.0)
NCSNPP = dict(name="ncsnpp", nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4,
              attn_resolutions=(16,), dropout=0.1, resblock_type="biggan", fir=True,
              progressive="none", progressive_input="residual", embedding_type="fourier",
              skip_rescale=True, init_scale=0.0, scale_by_sigma=True)
DDPM = dict(name="ddpm", nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
            dropout=0.1)
NETWORKS = {
    "ddpmpp": ("DDPM++ cont.", DDPMPP),
    "ncsnpp": ("NCSN++ cont.", NCSNPP),
    "ddpm": ("DDPM", DDPM),
    "ddpmpp_deep": ("DDPM++ cont. deep", dict(DDPMPP, num_res_blocks=8)),
    "ncsnpp_deep": ("NCSN++ cont. deep", dict(NCSNPP, num_res_blocks=8)),
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["ddpmpp", "ncsnpp", "ddpm"],
                        choices=sorted(NETWORKS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="bf16 = torch.autocast to bfloat16 (weights stay float32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--skip-train", action="store_true", help="forward only")
    parser.add_argument("--toy", action="store_true",
                        help="train the default mlp on a 6-component 2-D mixture instead")
    parser.add_argument("--toy-steps", type=int, default=3000)
    parser.add_argument("--fir", action="store_true",
                        help="time FIR resampling against the zero-insertion formulation instead")
    parser.add_argument("--worker", choices=sorted(NETWORKS), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, repeats, warmup, device):
    """(median wall time, first warm-up wall time, median process CPU time), seconds.

    On a shared CPU the wall time includes waiting for other processes; the process CPU time
    (all threads) does not, and with one thread it is a steadier figure.
    """
    first = None
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        _sync(device)
        if i == 0:
            first = time.perf_counter() - start
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), first, statistics.median(cpu)


def _rss_mib():
    """Current resident set size (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_worker(args):
    """Benchmark one network; print one JSON line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    title, config = NETWORKS[args.worker]
    torch.manual_seed(0)
    baseline = _rss_mib() if device.type == "cpu" else 0.0
    net = build_model(dict(config, image_size=args.image_size)).to(device)
    params = sum(p.numel() for p in net.parameters())
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    model = torch.compile(net) if args.compile else net

    b, s = args.batch_size, args.image_size
    x = torch.randn(b, 3, s, s, device=device).contiguous(memory_format=memory_format)
    target = torch.randn_like(x)
    fourier = config.get("embedding_type") == "fourier"
    labels = (torch.rand(b, device=device) * 50 + 0.01 if fourier
              else torch.rand(b, device=device) * 999)
    autocast = torch.autocast(device.type, dtype=DTYPES[args.dtype],
                              enabled=DTYPES[args.dtype] is not None)

    def forward():
        with torch.no_grad(), autocast:
            model(x, labels)

    net.eval()
    fwd, fwd_first, fwd_cpu = _median_time(forward, args.repeats, args.warmup, device)
    result = dict(network=args.worker, title=title, params=params, forward_s=fwd,
                  forward_first_s=fwd_first, forward_cpu_s=fwd_cpu)

    if not args.skip_train:
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)

        def train_step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                out = model(x, labels)
            loss = (out.float() - target).square().mean()
            loss.backward()
            optimizer.step()

        net.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step, step_first, step_cpu = _median_time(train_step, args.repeats, args.warmup, device)
        result.update(train_step_s=step, train_first_s=step_first, train_cpu_s=step_cpu)
    if device.type == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is the process's high-water mark, in KiB on Linux
        result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    print(json.dumps(result))


def toy_fit(steps: int, threads=None, seed: int = 0):
    """Fit the default `mlp` by epsilon matching under the VP SDE (beta 0.1 -> 20) to six
    Gaussians (std 0.4) on a circle of radius 4; print the relative error against the exact
    epsilon = -std * score of the perturbed mixture at several t."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    angles = torch.arange(6) * (2 * math.pi / 6)
    means = 4.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    spread = 0.4

    def alpha_std(t):  # VP marginal: x_t = alpha x_0 + std z (Song et al. 2021, eq. 29)
        log_alpha = -0.25 * t ** 2 * (20.0 - 0.1) - 0.5 * t * 0.1
        return log_alpha.exp(), (1 - (2 * log_alpha).exp()).sqrt()

    def sample_data(n):
        return means[torch.randint(6, (n,))] + spread * torch.randn(n, 2)

    def exact_eps(x, t):
        alpha, std = alpha_std(t)
        var = (alpha ** 2 * spread ** 2 + std ** 2)[:, None]
        diff = x[:, None, :] - alpha[:, None, None] * means[None]
        weights = torch.softmax(-(diff ** 2).sum(-1) / (2 * var), dim=-1)
        score = -(weights[..., None] * diff).sum(1) / var
        return -std[:, None] * score

    net = build_model({"name": "mlp"})
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    start = time.perf_counter()
    for _ in range(steps):
        t = torch.rand(512) * (1 - 1e-3) + 1e-3
        alpha, std = alpha_std(t)
        z = torch.randn(512, 2)
        x = alpha[:, None] * sample_data(512) + std[:, None] * z
        loss = (net(x, t * 999) - z).square().sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    elapsed = time.perf_counter() - start
    params = sum(p.numel() for p in net.parameters())
    print(f"mlp: {params:,} parameters, {steps} steps in {elapsed:.0f} s")
    print("| t | E|eps - eps*|^2 / E|eps*|^2 |\n|---|---|")
    net.eval()
    with torch.no_grad():
        for t_value in (0.01, 0.05, 0.1, 0.3, 0.6, 1.0):
            t = torch.full((20000,), t_value)
            alpha, std = alpha_std(t)
            x = alpha[:, None] * sample_data(20000) + std[:, None] * torch.randn(20000, 2)
            exact = exact_eps(x, t)
            rel = (net(x, t * 999) - exact).square().sum(-1).mean() / exact.square().sum(-1).mean()
            print(f"| {t_value} | {rel.item():.4f} |")


def _upfirdn2d_zero_insertion(x, kernel, up=1, down=1, pad=(0, 0)):
    """upfirdn2d as the official CPU fallback computes it: insert zeros, pad, convolve every
    channel with the flipped kernel, subsample."""
    b, c, h, w = x.shape
    y = x.reshape(b * c, 1, h, 1, w, 1)
    y = torch.nn.functional.pad(y, [0, up - 1, 0, 0, 0, up - 1]).reshape(b * c, 1, h * up, w * up)
    y = torch.nn.functional.pad(y, [pad[0], pad[1], pad[0], pad[1]])
    y = torch.nn.functional.conv2d(y, torch.flip(kernel, (0, 1))[None, None])[:, :, ::down, ::down]
    return y.reshape(b, c, y.shape[-2], y.shape[-1])


def fir_micro(args):
    """Median time of FIR up/down-sampling (forward + backward) at the NCSN++ CIFAR-10 shapes."""
    from models import fir
    if args.threads:
        torch.set_num_threads(args.threads)
    kernel = fir.fir_kernel_2d((1, 3, 3, 1))
    ours = {"down": fir.downsample_2d, "up": fir.upsample_2d}
    reference = {"down": lambda x, k: _upfirdn2d_zero_insertion(x, k, down=2, pad=(1, 1)),
                 "up": lambda x, k: _upfirdn2d_zero_insertion(x, 4 * k, up=2, pad=(2, 1))}
    print("| op | input | ours fwd+bwd CPU (ms) | zero-insertion fwd+bwd CPU (ms) | max abs diff |")
    print("|---|---|---|---|---|")
    for op, shape in [("down", (args.batch_size, 128, 32, 32)),
                      ("down", (args.batch_size, 256, 16, 16)),
                      ("up", (args.batch_size, 256, 8, 8)), ("up", (args.batch_size, 256, 16, 16))]:
        x = torch.randn(*shape, requires_grad=True)
        times = {}
        for impl, fn in (("ours", ours[op]), ("ref", reference[op])):
            def step():
                fn(x, kernel).sum().backward()
            times[impl] = _median_time(step, args.repeats, args.warmup, torch.device("cpu"))[2]
        diff = (ours[op](x, kernel) - reference[op](x, kernel)).abs().max().item()
        print(f"| {op} | {tuple(shape)} | {times['ours'] * 1e3:.1f} | {times['ref'] * 1e3:.1f} "
              f"| {diff:.1e} |")


def main(argv=None):
    args = parse_args(argv)
    if args.fir:
        fir_micro(args)
        return
    if args.toy:
        toy_fit(args.toy_steps, args.threads)
        return
    if args.worker:
        run_worker(args)
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    rows = []
    for name in args.networks:
        command = [sys.executable, __file__, *argv, "--worker", name]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    cuda = args.device.startswith("cuda")
    memory = "peak CUDA alloc (MiB)" if cuda else "peak RSS increase (MiB)"
    threads = args.threads or torch.get_num_threads()
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; torch {torch.__version__}; "
          f"{platform.processor() or platform.machine()}; device {args.device}, {threads} threads, "
          f"batch {args.batch_size}, {args.image_size}x{args.image_size}, {args.dtype}, "
          f"compile={args.compile}, channels_last={args.channels_last}, "
          f"median of {args.repeats}; load average {os.getloadavg()[0]:.2f}")
    header = ["network", "params", "forward (s)", "train step (s)", "forward CPU (s)",
              "train step CPU (s)", memory]
    if args.compile:
        header += ["first forward (s)", "first train step (s)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        train = "train_step_s" in r
        cells = [r["title"], f"{r['params']:,}", f"{r['forward_s']:.3f}",
                 f"{r['train_step_s']:.3f}" if train else "-", f"{r['forward_cpu_s']:.3f}",
                 f"{r['train_cpu_s']:.3f}" if train else "-", f"{r['peak_mib']:.0f}"]
        if args.compile:
            cells += [f"{r['forward_first_s']:.1f}",
                      f"{r['train_first_s']:.1f}" if "train_first_s" in r else "-"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
