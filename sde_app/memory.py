"""The sampling batch size from free memory (`config.sampling.batch_size = 0`).

The batch is the number of samples whose score calls fit in `fraction` of the device's free
memory: on a GPU, one probe call's peak allocation (CUDA allocator statistics) per sample; on the
CPU, which keeps no allocator statistics, an upper bound: the bytes of every module's output in
one probe call (a no-grad forward frees most of them before the last one is made), per sample.
Both are multiplied by `SAFETY` for what the sampler keeps beside the network (the state, the
previous evaluations of a multistep solver, the noise) and for guidance's second call.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

SAFETY = 2.0          # bytes per sample are multiplied by this
DEFAULT_FRACTION = 0.8  # of the free memory
PROBE_BATCH = 2


@dataclass(frozen=True)
class BatchChoice:
    """A batch size chosen from free memory, and the figures it came from (bytes)."""

    batch_size: int
    free_bytes: int
    bytes_per_sample: int
    how: str  # "cuda allocator peak" or "module outputs (upper bound)"

    def describe(self) -> str:
        mib = 2 ** 20
        return (f"batch size {self.batch_size} from free memory ({self.free_bytes / mib:.0f} MiB free,"
                f" ~{self.bytes_per_sample / mib:.2f} MiB per sample by {self.how})")


def free_memory_bytes(device: torch.device) -> int:
    """Free memory of `device` in bytes: the CUDA driver's free memory, or the host's
    MemAvailable (/proc/meminfo; elsewhere the available physical pages)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def module_output_bytes(net: torch.nn.Module, call: Callable[[], object]) -> int:
    """Bytes of every tensor output of every module of `net` during `call()` (an upper bound of
    the live activations of a no-grad forward)."""
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(o.numel() * o.element_size() for o in outputs if isinstance(o, torch.Tensor))

    handles = [m.register_forward_hook(count) for m in net.modules()]
    try:
        call()
    finally:
        for h in handles:
            h.remove()
    return total


def cuda_peak_bytes(device: torch.device, call: Callable[[], object]) -> int:
    """The CUDA allocator's peak allocation during `call()` above what was allocated before."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    torch.cuda.synchronize(device)
    return max(int(torch.cuda.max_memory_allocated(device)) - before, 0)


def bytes_per_sample(net: torch.nn.Module, score_fn: Callable, shape: Tuple[int, ...], device,
                     t: float = 1.0) -> Tuple[int, str]:
    """(bytes per sample of one score call on a probe batch, how they were measured), times SAFETY.

    Args:
      net: the network `score_fn` calls; score_fn(x, t) with x (B, *shape), t (B,).
      shape: one sample's shape; t: the probe's time.
    """
    device = torch.device(device)
    x = torch.zeros((PROBE_BATCH, *shape), device=device)
    times = torch.full((PROBE_BATCH,), float(t), device=device)

    def call():
        with torch.no_grad():
            score_fn(x, times)

    if device.type == "cuda":
        used, how = cuda_peak_bytes(device, call), "cuda allocator peak"
    else:
        used, how = module_output_bytes(net, call), "module outputs (upper bound)"
    state = x.numel() * x.element_size()  # the sampler's own copy of the batch
    return int(SAFETY * (used + state) / PROBE_BATCH), how


def choose_batch_size(net: torch.nn.Module, score_fn: Callable, shape: Tuple[int, ...], device, *,
                      num_samples: int, fraction: float = DEFAULT_FRACTION, t: float = 1.0,
                      free_bytes: Optional[int] = None) -> BatchChoice:
    """The largest batch of at most `num_samples` whose score calls fit in `fraction` of the free
    memory (`free_bytes`, default `free_memory_bytes(device)`).

    Raises:
      ValueError: not even one sample fits (the message names the figures and the fix).
    """
    per_sample, how = bytes_per_sample(net, score_fn, shape, device, t)
    free = free_memory_bytes(device) if free_bytes is None else int(free_bytes)
    fits = int(fraction * free // max(per_sample, 1))
    if fits < 1:
        mib = 2 ** 20
        raise ValueError(f"config.sampling.batch_size=0 (from free memory): one sample needs ~{per_sample / mib:.0f}"
                         f" MiB but {free / mib:.0f} MiB are free on {torch.device(device)}; free memory or set"
                         " config.sampling.batch_size to a number")
    return BatchChoice(min(fits, max(num_samples, 1)), free, per_sample, how)
