"""Running one command on K processes (`torchrun --nproc_per_node=K main.py ...`).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything runs in one process and
every collective below is the identity. NCCL is used when CUDA is available, gloo on the CPU.
Rank 0 does all file I/O; the others wait at barriers. Work that is split over ranks (training
batches, samples, likelihood points) is gathered to every rank with `gather_rows`.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process sits: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device: str = "auto", timeout_minutes: float = 30.0) -> Context:
    """Initialise the process group when launched by torchrun and pick this rank's device.

    Args:
      device: "auto" (the local GPU if CUDA is available, else the CPU), "cpu" or "cuda".
      timeout_minutes: collective timeout (snapshot sampling on rank 0 keeps the others waiting).
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r} is not one of ['auto', 'cpu', 'cuda']")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available; use --device=cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast_object(ctx: Context, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ctx: Context, obj: Any) -> List[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_rows(ctx: Context, x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (B_r, ...) in rank order, on every rank; B_r may differ."""
    if not ctx.distributed:
        return x
    sizes = gather_objects(ctx, int(x.shape[0]))
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def all_reduce_sum(ctx: Context, x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over ranks (a new tensor)."""
    x = x.clone()
    if ctx.distributed:
        dist.all_reduce(x)
    return x


def shard(n: int, ctx: Context) -> range:
    """This rank's indices of n items: rank, rank + W, ... (disjoint, together all n)."""
    return range(ctx.rank, n, ctx.world_size)


def unshard(rows: torch.Tensor, n: int, world_size: int) -> torch.Tensor:
    """Undo `shard` + `gather_rows`: rows ordered rank by rank back to item order 0..n-1."""
    order = torch.cat([torch.arange(r, n, world_size) for r in range(world_size)])
    out = torch.empty_like(rows)
    out[order.to(rows.device)] = rows
    return out


def launched_world_size() -> int:
    """The number of processes torchrun launched (1 without torchrun), before `init`."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on rank 0 (or without torchrun), before or after `init`: the process that reports."""
    return int(os.environ.get("RANK", "0")) == 0


def check_batch_sizes(exp, modes) -> None:
    """Every training loop of `modes` splits its global batch evenly over the processes.

    Raises:
      ValueError: naming the field and a valid value.
    """
    world = launched_world_size()
    jobs = [job for job in (exp.train, exp.classifier) if job is not None and job.mode in modes]
    for job in jobs:
        b = job.loop.batch_size
        if b % world:
            raise ValueError(f"config.{job.loop.group}.batch_size={b} is not divisible by the {world}"
                             f" processes; pick a multiple of {world}, e.g. {max(world, b // world * world)}")
