"""The application's training step (`Trainer.train_step`) per network and option, interleaved in
one process with the official score_sde_pytorch step on the same batch (the training-step
successor of `bench_models.py`).

Per network (official CIFAR-10 configs: DDPM++ cont. = configs/vp_cifar10.py, NCSN++ cont. =
configs/ve_cifar10.py, DDPM = configs/ddpm_cifar10.py) it builds one `Trainer` per option (on a
fake CIFAR-10 archive; the batch is fixed) and, with `--official`, the official step of the same
config. Every round times one step of each, in turn, so that a busy machine slows all of them
alike; the table gives the median over rounds after `--warmup` untimed rounds:

  step (s)            median wall time of one training step (forward, loss, backward, clip,
                      Adam, EMA; the loss stays a device tensor, as when not logging)
  vs default          the default step's time / this option's time (> 1: faster)
  official / this     the official step's time / this option's time, same rounds
  CPU time (s)        median process CPU time of one step (all threads): on a shared CPU it
                      leaves out the time spent waiting for other processes, a steadier figure
  peak memory (MiB)   CUDA: peak allocated during the steps; CPU (`--memory`): increase of the
                      peak RSS over building the option's objects, in a process of its own

On a shared CPU run it with OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin while they wait
made every step (ours and the official alike) 5-10x slower under other sessions' load.

Examples:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_train_step.py --official /tmp/score_sde_pytorch
    python benchmarks/bench_train_step.py --networks ddpmpp --options default bf16 --memory
    python benchmarks/bench_train_step.py --device cuda --batch-size 128 --options default bf16 bf16_compile
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

NETWORKS = {  # name: (title, config module)
    "ddpmpp": ("DDPM++ cont.", "vp_cifar10"),
    "ncsnpp": ("NCSN++ cont.", "ve_cifar10"),
    "ddpm": ("DDPM", "ddpm_cifar10"),
}
# option: (config.training overrides, config.optim overrides); "default" is the config as it is.
OPTIONS = {
    "default": ({}, {}),
    "adam_for_loop": ({}, {"implementation": "for_loop"}),
    "channels_last": ({"channels_last": True}, {}),
    "checkpointing": ({"checkpoint_resolutions": (32, 16, 8, 4)}, {}),
    "bf16": ({"mixed_precision": "bf16"}, {}),
    "bf16_channels_last": ({"mixed_precision": "bf16", "channels_last": True}, {}),
    "compile": ({"compile": True}, {}),
    "bf16_compile": ({"mixed_precision": "bf16", "compile": True}, {}),
}
DEFAULT_OPTIONS = ["default", "adam_for_loop", "channels_last", "checkpointing", "bf16"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--options", nargs="+", default=DEFAULT_OPTIONS, choices=list(OPTIONS))
    parser.add_argument("--official", default=None,
                        help="a checkout of score_sde_pytorch (commit cb1f359) to time beside ours")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory", action="store_true",
                        help="CPU: peak RSS per option, each in a process of its own (slow)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--memory-worker", nargs=2, metavar=("NETWORK", "OPTION"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def app_trainer(network: str, option: str, batch_size: int, device, root: Path):
    """A `Trainer` of the network's config with the option set, on the fake archive in `root`."""
    import importlib

    from sde_app import distributed, factory, training

    config = importlib.import_module(f"configs.{NETWORKS[network][1]}").get_config()
    config.data.root = str(root)
    config.training.batch_size = batch_size
    train_opts, optim_opts = OPTIONS[option]
    for k, v in train_opts.items():
        config.training[k] = v
    for k, v in optim_opts.items():
        config.optim[k] = v
    exp = factory.build_experiment(config, ("train",))
    trainer = training.Trainer(exp.train, exp, root / f"run_{network}_{option}",
                               distributed.Context(device=torch.device(device)), progress=False)
    trainer._bad = torch.tensor([-1.0, 0.0, 0.0], device=device)
    trainer.net.train()
    return trainer


def batch(batch_size: int, device) -> torch.Tensor:
    """A fixed batch of centred images in [-1, 1] (the data scaler's range)."""
    g = torch.Generator().manual_seed(0)
    return (torch.rand(batch_size, 3, 32, 32, generator=g) * 2 - 1).to(device)


def fake_root() -> Path:
    from sde_app.data.testing import write_fake_cifar10

    root = Path(tempfile.mkdtemp(prefix="bench_train_step_"))
    write_fake_cifar10(root, n_train=16, n_test=8)
    return root


def memory_worker(args) -> None:
    """One option's objects, then warm-up and timed steps; print the peak RSS increase (MiB)."""
    torch.set_num_threads(args.threads)
    network, option = args.memory_worker
    device = torch.device(args.device)
    x = batch(args.batch_size, device)
    trainer = app_trainer(network, option, args.batch_size, device, fake_root())
    before = _rss_peak_mib()
    for _ in range(2):
        trainer.train_step(x)
    print(json.dumps({"peak_mib": _rss_peak_mib() - before}))


def run_network(args, network: str, official) -> list:
    device = torch.device(args.device)
    x = batch(args.batch_size, device)
    root = fake_root()
    steps = {}
    if official is not None:
        from official_code import official_train_step

        official_step, _ = official_train_step(official, network, args.batch_size, device)
        steps["official"] = official_step
    peaks = {}
    trainers = {}
    for option in args.options:
        trainers[option] = app_trainer(network, option, args.batch_size, device, root)
        steps[option] = trainers[option].train_step
    times = {name: [] for name in steps}
    cpu_times = {name: [] for name in steps}
    for r in range(args.warmup + args.rounds):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            step(x)
            _sync(device)
            if r >= args.warmup:
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - start_cpu)
            if device.type == "cuda":
                peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
    del trainers, steps
    if args.memory and device.type == "cpu":
        for option in args.options:
            done = subprocess.run([sys.executable, __file__, "--memory-worker", network, option,
                                   "--threads", str(args.threads), "--batch-size", str(args.batch_size)],
                                  check=True, capture_output=True, text=True)
            peaks[option] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
    median = {name: statistics.median(ts) for name, ts in times.items()}
    cpu = {name: statistics.median(ts) for name, ts in cpu_times.items()}
    rows = []
    for name in times:
        rows.append(dict(network=network, option=name, step_s=median[name], cpu_s=cpu[name],
                         cpu_vs_default=cpu["default"] / cpu[name] if "default" in cpu else None,
                         cpu_official_over_this=cpu["official"] / cpu[name] if "official" in cpu else None,
                         all_s=[round(t, 3) for t in times[name]],
                         vs_default=median["default"] / median[name] if "default" in median else None,
                         official_over_this=median["official"] / median[name] if "official" in median else None,
                         peak_mib=peaks.get(name)))
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.memory_worker:
        memory_worker(args)
        return
    torch.set_num_threads(args.threads)
    official = None
    if args.official:
        from official_code import import_official

        official = import_official(args.official)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load0 = os.getloadavg()[0]
    rows = []
    for network in args.networks:
        rows += run_network(args, network, official)
    print(f"# {started}; torch {torch.__version__}; {platform.processor() or platform.machine()};"
          f" device {args.device}, {torch.get_num_threads()} threads, batch {args.batch_size}, 32x32;"
          f" median of {args.rounds} interleaved rounds after {args.warmup} warm-up;"
          f" load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print("| network | step | wall (s) | vs default | official / this | CPU time (s) | vs default (CPU)"
          " | official / this (CPU) | peak memory (MiB) | all rounds, wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        print(f"| {NETWORKS[r['network']][0]} | {r['option']} | {r['step_s']:.3f} | {fmt(r['vs_default'], '.2f')}x"
              f" | {fmt(r['official_over_this'], '.2f')}x | {r['cpu_s']:.3f} | {fmt(r['cpu_vs_default'], '.2f')}x"
              f" | {fmt(r['cpu_official_over_this'], '.2f')}x | {fmt(r['peak_mib'], '.0f')} | {r['all_s']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
