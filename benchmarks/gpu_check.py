"""GPU check in one go (a few minutes on one GPU): correctness against the CPU, then throughput.

1. Correctness: for DDPM++ cont., NCSN++ cont. and DDPM (the official CIFAR-10 configs, dropout
   off so that CPU and GPU draw nothing differently), `--check-steps` training steps of the
   application's `Trainer.train_step` on the same batches, from the same weights, on the CPU in
   fp32 and on the GPU in fp32 (TF32 off) and bf16. The first step's loss and gradient must agree
   with the CPU's within the tolerances below; every later loss too. Then PC and ODE sampling and
   the likelihood run on the GPU (finite, right shapes).
2. Training throughput at `--batch-size` (the paper's 128) for DDPM++ and NCSN++ in fp32, bf16 and
   bf16 + torch.compile: median step time, model FLOP utilisation (FLOPs of one forward + backward
   counted by `torch.utils.flop_counter`, per second, over the GPU's dense bf16 peak), peak memory.
3. Sampling throughput of DDPM++: samples per second of the PC sampler (Euler-Maruyama, N steps,
   one score call per step) and the probability-flow ODE (RK45, rtol = atol = 1e-3) at
   `--sample-batch`, with the NFE per sample.

`--dry-run` runs every part on the CPU with tiny networks and sizes (a test runs it); its figures
mean nothing. Prints markdown tables; `--json PATH` also writes them.

Examples:
    python benchmarks/gpu_check.py                  # on a GPU machine
    python benchmarks/gpu_check.py --dry-run        # anywhere, seconds
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NETWORKS = {"ddpmpp": ("DDPM++ cont.", "vp_cifar10"), "ncsnpp": ("NCSN++ cont.", "ve_cifar10"),
            "ddpm": ("DDPM", "ddpm_cifar10")}
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched by device name.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 756.0, "A100": 312.0,
                    "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "RTX 4090": 165.0}
# Tolerances of the GPU against the CPU (relative). fp32 with TF32 off differs only in the order of
# sums (other convolution algorithms): ~1e-6 per layer, 1e-4 leaves a wide margin over the depth.
# bf16 rounds matmul/conv inputs to 8 significant bits (2^-9 = 2e-3 per rounding), which over a
# 60-layer network gives a few 1e-2 on the gradient vector; the loss is a mean and errs less.
TOLERANCES = {"fp32": dict(loss=1e-4, grad=1e-3), "bf16": dict(loss=3e-2, grad=1e-1)}
PRECISIONS = {"fp32": {}, "bf16": {"mixed_precision": "bf16"},
              "bf16_compile": {"mixed_precision": "bf16", "compile": True}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny networks: checks the script only")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--check-batch", type=int, default=8)
    p.add_argument("--check-steps", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed training steps per setting")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS),
                   help="networks of the correctness part")
    p.add_argument("--timed-networks", nargs="+", default=["ddpmpp", "ncsnpp"], choices=list(NETWORKS))
    p.add_argument("--sample-batch", type=int, default=256)
    p.add_argument("--sample-steps", type=int, default=100, help="N of the PC sampler")
    p.add_argument("--ode-tol", type=float, default=1e-3, help="rtol = atol of the ODE sampler")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak, if the GPU is not known")
    p.add_argument("--parts", nargs="+", default=["correctness", "training", "sampling"],
                   choices=["correctness", "training", "sampling"])
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def tiny(config) -> None:
    """Shrink a CIFAR-10 config to 8x8 images and two narrow levels (--dry-run)."""
    config.data.image_size = 8
    m = config.model
    m.nf = 32 if m.name == "ddpm" else 8
    m.ch_mult, m.num_res_blocks, m.attn_resolutions = (1, 2), 1, (4,)


def make_trainer(network, device, batch_size, root, options, dry_run, dropout=None):
    from sde_app import distributed, factory, training

    config = importlib.import_module(f"configs.{NETWORKS[network][1]}").get_config()
    config.data.root = str(root)
    config.training.batch_size = batch_size
    if dry_run:
        tiny(config)
    if dropout is not None:
        config.model.dropout = dropout
    for k, v in options.items():
        config.training[k] = v
    exp = factory.build_experiment(config, ("train",))
    torch.manual_seed(0)
    tr = training.Trainer(exp.train, exp, Path(tempfile.mkdtemp(dir=root)), distributed.Context(
        device=torch.device(device)), progress=False)
    tr._bad = torch.tensor([-1.0, 0.0, 0.0], device=device)
    tr.net.train()
    return tr, exp


def image_batch(n, size, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 2 - 1).to(device)


def flat_grad(tr):
    return torch.cat([p.grad.detach().float().flatten().cpu() for p in tr.net.parameters()
                      if p.grad is not None])  # (frozen Fourier features have none)


def relative(a, b) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def correctness(args, root, device):
    """Rows (network, precision, first-step loss and gradient error, worst later loss error, ok)."""
    rows = []
    size = 8 if args.dry_run else 32
    for network in args.networks:
        ref, _ = make_trainer(network, "cpu", args.check_batch, root, {}, args.dry_run, dropout=0.0)
        batches = [image_batch(args.check_batch, size, 100 + k) for k in range(args.check_steps)]
        ref_losses, ref_grad = [], None
        for k, x in enumerate(batches):
            ref_losses.append(ref.train_step(x)["loss"].item())
            if k == 0:
                ref_grad = flat_grad(ref)
        del ref
        for precision in ("fp32", "bf16"):
            tr, _ = make_trainer(network, device, args.check_batch, root, PRECISIONS[precision],
                                 args.dry_run, dropout=0.0)
            losses, grad_err = [], None
            for k, x in enumerate(batches):
                losses.append(tr.train_step(x.to(device))["loss"].item())
                if k == 0:
                    grad_err = relative(flat_grad(tr), ref_grad)
            errs = [abs(a - b) / abs(b) for a, b in zip(losses, ref_losses)]
            tol = TOLERANCES[precision]
            ok = errs[0] <= tol["loss"] and grad_err <= tol["grad"] and max(errs) <= 10 * tol["loss"]
            rows.append(dict(network=network, precision=precision, loss_err=errs[0], grad_err=grad_err,
                             later_loss_err=max(errs[1:], default=0.0), ok=ok))
            del tr
    return rows


def sampling_and_likelihood_run(args, root, device):
    """PC and ODE samples and a likelihood on the GPU with a (random) DDPM++: finite, shapes."""
    from sde_lib.likelihood import log_likelihood
    from sde_lib.sampling import sample

    tr, exp = make_trainer("ddpmpp", device, args.check_batch, root, {}, args.dry_run)
    score = exp.train.model.wrap(tr.net.eval(), exp.sde)
    size = 8 if args.dry_run else 32
    shape = (4, 3, size, size)
    out = {}
    with torch.no_grad():
        for method, options in (("pc", dict(N=5, predictor="euler_maruyama", corrector="none")), ("ode", dict(rtol=1e-2, atol=1e-2, solver="dopri5"))):
            x, nfe = sample(exp.sde, score, shape, method=method, device=device,
                            generator=torch.Generator().manual_seed(0), **options)
            out[method] = bool(x.shape == shape and torch.isfinite(x).all())
    res = log_likelihood(exp.sde, score, image_batch(2, size, 7, device), rtol=1e-2, atol=1e-2,
                         method="dopri5", generator=torch.Generator().manual_seed(0))
    out["likelihood"] = bool(torch.isfinite(res.logp).all())
    return out


def bf16_peak(device) -> float:
    if device.type != "cuda":
        return math.nan
    name = torch.cuda.get_device_name(device)
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return math.nan


def step_flops(tr, x) -> float:
    """FLOPs of one forward + backward of the loss (torch.utils.flop_counter; matmuls and convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss = tr.batch_loss(tr.train_fn, x, None, torch.Generator().manual_seed(0)).mean()
        loss.backward()
    tr.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def throughput(args, root, device):
    rows = []
    size = 8 if args.dry_run else 32
    peak = args.peak_tflops * 1e12 if args.peak_tflops else bf16_peak(device)
    for network in args.timed_networks:
        flops = None
        for precision in args.precisions:
            if device.type == "cpu" and "compile" in precision and args.dry_run:
                continue  # compiling on the CPU takes minutes; the option tests compile the toy net
            tr, _ = make_trainer(network, device, args.batch_size, root, PRECISIONS[precision], args.dry_run)
            x = image_batch(args.batch_size, size, 0, device)
            if flops is None:
                plain, _ = make_trainer(network, device, args.batch_size, root, {}, args.dry_run)
                flops = step_flops(plain, x)
                del plain
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(2):  # warm-up (and compilation)
                tr.train_step(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            first = time.perf_counter() - start
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                tr.train_step(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            step = statistics.median(times)
            peak_mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan
            rows.append(dict(network=network, precision=precision, step_s=step, warmup_s=first,
                             images_per_s=args.batch_size / step, tflops=flops / step / 1e12,
                             mfu=flops / step / peak, peak_mib=peak_mem))
            del tr
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def sampling_throughput(args, root, device):
    from sde_lib.sampling import sample

    tr, exp = make_trainer("ddpmpp", device, args.check_batch, root, {}, args.dry_run)
    score = exp.train.model.wrap(tr.net.eval(), exp.sde)
    size = 8 if args.dry_run else 32
    shape = (args.sample_batch, 3, size, size)
    rows = []
    for name, method, options in (
            (f"PC, Euler-Maruyama, N = {args.sample_steps}", "pc",
             dict(N=args.sample_steps, predictor="euler_maruyama", corrector="none")),
            (f"probability-flow ODE, RK45, {args.ode_tol:g}", "ode", dict(rtol=args.ode_tol, atol=args.ode_tol))):
        with torch.no_grad():
            sample(exp.sde, score, (2, *shape[1:]), method=method, device=device,
                   **dict(options, **({"N": 2} if method == "pc" else {})))  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            x, nfe = sample(exp.sde, score, shape, method=method, device=device,
                            generator=torch.Generator().manual_seed(0), **options)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall = time.perf_counter() - start
        rows.append(dict(sampler=name, batch=shape[0], nfe=nfe, wall_s=wall, samples_per_s=shape[0] / wall,
                         finite=bool(torch.isfinite(x).all())))
    return rows


def auto_batch(args, root, device):
    """`sampling.batch_size = 0` on DDPM++: the batch chosen from free memory for 10,000 samples,
    and one score call at that batch (does it fit, and how much of the free memory it took)."""
    from sde_app import memory

    tr, exp = make_trainer("ddpmpp", device, args.check_batch, root, {}, args.dry_run)
    net = tr.net.eval()
    score = exp.train.model.wrap(net, exp.sde)
    size = 8 if args.dry_run else 32
    want = 4 if args.dry_run else 10_000
    choice = memory.choose_batch_size(net, score, (3, size, size), device, num_samples=want)
    x = torch.zeros(choice.batch_size, 3, size, size, device=device)
    t = torch.ones(choice.batch_size, device=device)
    peak = None
    with torch.no_grad():
        if device.type == "cuda":
            peak = memory.cuda_peak_bytes(device, lambda: score(x, t))
        else:
            score(x, t)
    return dict(how=choice.how, free_mib=choice.free_bytes / 2 ** 20, mib_per_sample=choice.bytes_per_sample / 2 ** 20,
                batch=choice.batch_size, call_peak_mib=None if peak is None else peak / 2 ** 20)


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        args.device, args.batch_size, args.check_batch, args.check_steps = "cpu", 2, 2, 2
        args.steps, args.sample_batch, args.sample_steps = 1, 2, 3
        args.networks, args.timed_networks, args.precisions = ["ncsnpp"], ["ddpmpp"], ["fp32", "bf16"]
        args.ode_tol = 1e-2
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("error: no CUDA device; run with --dry-run to check the script on a CPU")
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 is fp32 (the correctness part)
        torch.backends.cudnn.allow_tf32 = False
    from sde_app.data.testing import write_fake_cifar10

    root = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    write_fake_cifar10(root, n_train=16, n_test=8)
    started = time.perf_counter()
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({torch.get_num_threads()} threads){', dry run' if args.dry_run else ''}")
    print(f"# gpu_check: {name}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")

    result = {"device": name, "correctness": [], "runs": {}}
    if "correctness" in args.parts:
        result["correctness"] = rows = correctness(args, root, device)
        print("\n## Correctness against the CPU (fp32), first training step and later losses")
        print("| network | precision | loss rel. err. | gradient rel. err. | later losses, worst | ok |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {NETWORKS[r['network']][0]} | {r['precision']} | {r['loss_err']:.1e} | {r['grad_err']:.1e}"
                  f" | {r['later_loss_err']:.1e} | {'yes' if r['ok'] else 'NO'} |")
        result["runs"] = runs = sampling_and_likelihood_run(args, root, device)
        print(f"\nPC sampling, ODE sampling and likelihood run, finite: {runs}")

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the speed part: TF32 as training would use
        torch.backends.cudnn.allow_tf32 = True
    if "training" in args.parts:
        result["training"] = rows = throughput(args, root, device)
        print(f"\n## Training step, batch {args.batch_size} (median of {args.steps} after 2 warm-up steps)")
        print("| network | precision | step (s) | images/s | TFLOP/s | MFU (bf16 peak) | peak memory (MiB) | warm-up (s) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {NETWORKS[r['network']][0]} | {r['precision']} | {r['step_s']:.3f} | {r['images_per_s']:.0f}"
                  f" | {r['tflops']:.1f} | {r['mfu']:.1%} | {r['peak_mib']:.0f} | {r['warmup_s']:.1f} |")
    if "sampling" in args.parts:
        result["sampling"] = rows = sampling_throughput(args, root, device)
        print("\n## Sampling, DDPM++ (random weights: the ODE's NFE is not a trained model's)")
        print("| sampler | batch | NFE per sample | wall (s) | samples/s | finite |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['sampler']} | {r['batch']} | {r['nfe']} | {r['wall_s']:.2f} | {r['samples_per_s']:.3f}"
                  f" | {r['finite']} |")
        result["auto_batch"] = r = auto_batch(args, root, device)
        print("\n## sampling.batch_size = 0 on DDPM++ (the batch from free memory, then one score call at it)")
        print("| measured by | free (MiB) | per sample (MiB, x2 safety) | batch | one call's peak (MiB) |")
        print("|---|---|---|---|---|")
        peak = "-" if r["call_peak_mib"] is None else f"{r['call_peak_mib']:.0f}"
        print(f"| {r['how']} | {r['free_mib']:.0f} | {r['mib_per_sample']:.2f} | {r['batch']} | {peak} |")
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s")
    result["total_s"] = total
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    ok = all(r["ok"] for r in result["correctness"]) and all(result["runs"].values())
    if not ok:
        print("error: the GPU disagrees with the CPU beyond tolerance or a run failed (see the tables)",
              file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
