"""A resumable, shardable batch order and the loader that serves it.

Order: in epoch e the items are `randperm(N)` from a generator seeded with derive_seed(seed, e)
(training) or 0..N-1 (evaluation). The same order is computed on every rank; rank r of W takes
positions r, r + W, r + 2W, ..., so shards are disjoint and together cover the epoch.

Training (`train=True`): shuffled, the epoch is cut to a multiple of W * batch_size (drop_last),
so every rank gets the same number of full batches; iteration runs over epochs forever.
Evaluation (`train=False`): in order, one finite pass, no item dropped. With W > 1 the list is
padded by wrapping around to a multiple of W (as torch's DistributedSampler), so ranks get the
same number of batches; at most W - 1 items are then seen twice.

Resuming: the loader counts the batches it has handed out, not those its workers have
prefetched, so `state_dict()` taken after a training step and loaded into a fresh loader gives
exactly the batches that would have come next.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterator, List, Tuple, Union

import torch

from .transforms import derive_seed

Key = Union[int, Tuple[int, int]]


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r}: expected an integer >= {low}")
    return value


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's batches of keys from position (epoch, batch), see the module docstring.

    Args:
      num_items: N, the size of the data set.
      batch_size: items per batch on this rank.
      train: shuffle, drop the last partial batch, loop over epochs forever; else one in-order
        pass with the last batch possibly smaller.
      seed: shuffling seed (the same on every rank).
      rank, world_size: this process's shard, 0 <= rank < world_size.
      epoch_keys: yield (index, epoch) keys (for data sets with per-epoch randomness, e.g.
        `TransformedImages`) instead of plain indices.

    Attributes:
      epoch, batch: the position of the next batch to hand out.

    Raises:
      ValueError: bad arguments, or a training set too small for one batch on every rank.
    """

    def __init__(self, num_items: int, batch_size: int, *, train: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, epoch_keys: bool = False):
        self.num_items = _check_int("num_items", num_items, 0)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank={rank} must be < world_size={world_size}")
        self.train, self.seed, self.epoch_keys = bool(train), int(seed), bool(epoch_keys)
        if self.train and self.batches_per_epoch == 0:
            raise ValueError(
                f"a training set of {num_items} items has no full batch of batch_size={batch_size}"
                f" on each of world_size={world_size} ranks; lower the batch size or add data"
            )
        self.epoch, self.batch = 0, 0

    @property
    def items_per_rank(self) -> int:
        """Items this rank sees per epoch."""
        if self.train:
            return self.num_items // (self.world_size * self.batch_size) * self.batch_size
        return math.ceil(self.num_items / self.world_size)

    @property
    def batches_per_epoch(self) -> int:
        """Batches per epoch on each rank (the same on all ranks)."""
        return math.ceil(self.items_per_rank / self.batch_size)

    def epoch_indices(self, epoch: int) -> List[int]:
        """This rank's item indices for `epoch`, in order."""
        if self.train:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = list(range(self.num_items))
        total = self.items_per_rank * self.world_size
        if total > len(order):  # evaluation with W > 1: wrap around
            order = (order * math.ceil(total / max(len(order), 1)))[:total]
        return order[:total][self.rank::self.world_size]

    def epoch_batches(self, epoch: int) -> List[List[Key]]:
        """This rank's batches of keys for `epoch`."""
        idx = self.epoch_indices(epoch)
        keys = [(i, epoch) for i in idx] if self.epoch_keys else idx
        return [keys[b:b + self.batch_size] for b in range(0, len(keys), self.batch_size)]

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[List[Key]]:
        # A snapshot of the position: the loader advances self.epoch/self.batch as batches are
        # handed out, while this generator may run ahead (prefetching workers).
        epoch, start = self.epoch, self.batch
        while True:
            yield from self.epoch_batches(epoch)[start:]
            if not self.train:
                return
            epoch, start = epoch + 1, 0

    def advance(self) -> None:
        """Record that one more batch was handed out."""
        self.batch += 1
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0

    def set_epoch(self, epoch: int) -> None:
        """Jump to the start of `epoch`."""
        self.epoch, self.batch = _check_int("epoch", epoch, 0), 0

    def state_dict(self) -> Dict[str, Any]:
        """The position, and what it is only valid for."""
        return {
            "epoch": self.epoch, "batch": self.batch, "seed": self.seed, "train": self.train,
            "num_items": self.num_items, "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a position saved by `state_dict()` (on any rank).

        Raises:
          ValueError: the state was saved with another seed, data set size, batch size, world
            size or mode, where the same position would mean other items.
        """
        mine = self.state_dict()
        for k in ("seed", "train", "num_items", "batch_size", "world_size"):
            if state.get(k) != mine[k]:
                raise ValueError(
                    f"loader state has {k}={state.get(k)!r} but this loader has {k}={mine[k]!r};"
                    " resume with the settings the state was saved with"
                )
        epoch = _check_int("epoch", state["epoch"], 0)
        batch = _check_int("batch", state["batch"], 0)
        if batch >= max(self.batches_per_epoch, 1):
            raise ValueError(f"batch={batch} >= batches_per_epoch={self.batches_per_epoch}")
        self.epoch, self.batch = epoch, batch


class ResumableLoader:
    """Batches (x, y) of a map-style data set in the order of a `ResumableBatchSampler`.

    `iter(loader)` starts at the saved position: forever over epochs when training, to the end of
    the epoch when evaluating. Keep one iterator at a time.

    Args:
      dataset: items (x, y); if it has `takes_epoch = True` it receives (index, epoch) keys.
      batch_size, train, seed, rank, world_size: see `ResumableBatchSampler`.
      num_workers: loader processes (0: load in this process); results do not depend on it.
      pin_memory: pin batches for fast host-to-GPU copies.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int, *, train: bool,
                 seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pin_memory: bool = False):
        _check_int("num_workers", num_workers, 0)
        self.dataset = dataset
        self.sampler = ResumableBatchSampler(
            len(dataset), batch_size, train=train, seed=seed, rank=rank, world_size=world_size,
            epoch_keys=bool(getattr(dataset, "takes_epoch", False)),
        )
        # The loader's own generator: creating an iterator draws a base seed for the workers,
        # which would otherwise come from the global torch RNG and shift every later draw from it
        # (dropout masks) between a run and its resume. Items draw their randomness from (seed,
        # epoch, index) (`transforms.item_generator`), not from this seed.
        # With workers, 4 batches per worker are prepared ahead (2 by default), so that a slow
        # item does not stall a fast (GPU) step.
        prefetch = {"prefetch_factor": 4} if num_workers > 0 else {}
        self._loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=self.sampler, num_workers=num_workers, pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(derive_seed(seed, rank, 11)), **prefetch,
        )

    def __iter__(self) -> Iterator[Any]:
        for batch in self._loader:
            self.sampler.advance()
            yield batch

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.sampler.batches_per_epoch

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> Dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


def build_loader(dataset: torch.utils.data.Dataset, batch_size: int, *, train: bool,
                 seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pin_memory: bool = False) -> ResumableLoader:
    """A `ResumableLoader`: infinite shuffled full batches if `train`, else one in-order pass.

    Args:
      dataset: items (x, y), e.g. from `build_datasets`.
      batch_size: per-rank batch size.
      train: training (shuffle, drop_last, infinite) or evaluation (in order, finite).
      seed: shuffling seed, shared by all ranks.
      rank, world_size: the DistributedDataParallel shard.
      num_workers: loader processes.
      pin_memory: pin batches in page-locked memory.

    Returns:
      the loader; batches are (x (B, *data_shape) float32, y (B,) int64).
    """
    return ResumableLoader(dataset, batch_size, train=train, seed=seed, rank=rank,
                           world_size=world_size, num_workers=num_workers, pin_memory=pin_memory)
