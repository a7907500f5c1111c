"""`--mode train`: the training loop of Song et al. (2021, App. H).

Adam with a linear learning-rate warm-up and gradient-norm clipping, an EMA of the weights,
optional bf16 autocast, `torch.compile`, channels-last memory format and activation checkpointing
per U-Net resolution, DistributedDataParallel under torchrun. Nothing in a step waits for the
device: the loss and gradient norm stay device tensors until a log step reads them. The loss's t
and noise come from a dedicated CPU `torch.Generator` seeded by (seed, rank), so a run is
reproducible, and resumable bit for bit: a resume checkpoint holds the model, EMA, optimizer,
step, data-loader position and every RNG state (`checkpoints.py`, `rng.py`).

Per step k = 1 .. n_iters: one batch, loss = mean of per-example losses, backward, lr(k), clip,
Adam step, EMA update. Then, by step: log (`log_freq`), test loss on one test batch with the EMA
weights (`eval_freq`), resume checkpoint (`checkpoint_freq`), numbered snapshot and snapshot
samples (`snapshot_freq`). The final step always writes both checkpoints.

A class-conditional model (`training.conditional`) gets the batch's labels, each replaced by the
null label with probability `training.p_uncond` (`guidance.drop_labels`, drawn from the loss's
generator, so resumes stay bitwise exact): one network learns the conditional and the
unconditional score. `ClassifierTrainer` (`--mode train_classifier`) runs the same loop for the
noise-conditional classifier of classifier guidance in `<workdir>/classifier/`.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from tqdm.auto import tqdm

from sde_lib.guidance import classifier_free, drop_labels

from . import data as data_lib
from . import distributed, rng
from .checkpoints import CheckpointDir, DamagedCheckpointsError, load_state
from .ema import ExponentialMovingAverage
from .sampling_run import draw_samples, save_samples
from .specs import Experiment, OptimSettings, TrainingJob

log = logging.getLogger(__name__)
Tensor = torch.Tensor

SNAPSHOT_SAMPLES = 64  # snapshot samples of images drawn (at most; one batch of the sampling batch size)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient norm."""


# ---------------------------------------------------------------------------------- optimizer
def learning_rate(step: int, optim) -> float:
    """lr at optimizer update `step` (1-based): linear warm-up over `warmup` steps, then constant
    or a cosine decay to 0 at `n_iters` (the cosine needs `optim.n_iters`, set by `train`)."""
    lr = optim.lr
    if optim.warmup > 0:
        lr *= min(step / optim.warmup, 1.0)
    if optim.schedule == "cosine":
        total = max(optim.n_iters - optim.warmup, 1)
        progress = min(max(step - optim.warmup, 0) / total, 1.0)
        lr *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr


def build_optimizer(params, optim: OptimSettings) -> torch.optim.Adam:
    """Adam (Kingma & Ba 2015) with the settings' betas, eps and (L2) weight decay, on the
    kernels of `optim.implementation`: "fused" (one kernel pass per tensor), "foreach" (one
    call per operation over all tensors) or "for_loop" (per tensor and operation). The same
    algorithm; the three agree to rounding."""
    kernels = {"fused": dict(fused=True), "foreach": dict(foreach=True),
               "for_loop": dict(foreach=False)}[optim.implementation]
    return torch.optim.Adam(params, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps,
                            weight_decay=optim.weight_decay, **kernels)


def match_memory_format(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter optimizer state tensor (Adam's moments) its parameter's memory
    format (strides), e.g. after loading a contiguous checkpoint into channels-last weights."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def set_determinism(deterministic: bool) -> None:
    """Deterministic kernels (bitwise-reproducible runs on GPU; CPU kernels already are)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


# ------------------------------------------------------------------------------------ the loop
class Trainer:
    """One training loop (`specs.TrainingJob`) in `workdir`; `run()` trains to the loop's
    n_iters steps, resuming from the run directory's latest good checkpoint.

    The score model and the classifier differ only in the hooks `build_objective`,
    `batch_loss`, `training_labels` and `test_labels` (see `ClassifierTrainer`); a distillation
    student also in `init_weights` and `state` (`distill_run.DistillTrainer`).
    """

    def __init__(self, job: TrainingJob, exp: Experiment, workdir: Path, ctx: distributed.Context, *,
                 progress: bool = True, fresh: bool = False):
        self.job, self.exp, self.ctx, self.progress, self.fresh = job, exp, ctx, progress, fresh
        self.mode = job.mode
        self.workdir = Path(workdir) / job.subdir if job.subdir else Path(workdir)
        self.loop = t = job.loop
        if t.batch_size % ctx.world_size:
            raise ValueError(f"config.{t.group}.batch_size={t.batch_size} is not divisible by the"
                             f" {ctx.world_size} processes; pick a multiple of {ctx.world_size}")
        self.checkpoints = CheckpointDir(self.workdir)
        set_determinism(t.deterministic)

        seed = exp.seed
        self.train_ds, self.test_ds = exp.data.datasets(seed)
        self.sde = exp.sde
        rng.seed_all(data_lib.derive_seed(seed))  # the same initial weights on every rank
        self.memory_format = torch.channels_last if t.channels_last else torch.preserve_format
        self.net = job.model.build_net().to(ctx.device, memory_format=self.memory_format)
        if t.checkpoint_resolutions:
            self.net.set_activation_checkpointing(t.checkpoint_resolutions)
        rng.seed_all(data_lib.derive_seed(seed, ctx.rank, 7))  # per-rank streams (dropout)
        self.ema = ExponentialMovingAverage(self.net, job.model.ema_rate)
        self.optim_cfg = job.optim
        self.optimizer = build_optimizer(self.net.parameters(), self.optim_cfg)
        self.init_weights()
        self.loader = data_lib.build_loader(
            self.train_ds, t.batch_size // ctx.world_size, train=True, seed=seed,
            rank=ctx.rank, world_size=ctx.world_size, num_workers=exp.data.num_workers,
            pin_memory=ctx.device.type == "cuda")
        self.loss_generator = torch.Generator().manual_seed(data_lib.derive_seed(seed, ctx.rank))
        self.step = 0
        self.resumed_from: Optional[str] = None
        self._resume()

        model = self.net
        if ctx.distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        if t.compile:
            model = torch.compile(model)
        self.build_objective(model)
        self.autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16,
                                       enabled=t.mixed_precision == "bf16")

    # --------------------------------------------------------------------------------- hooks
    def init_weights(self) -> None:
        """The weights at step 0 (a resume then loads its own): the fresh network's, here; a
        distillation student starts from its teacher's (`distill_run.DistillTrainer`)."""

    def build_objective(self, model: torch.nn.Module) -> None:
        """The loss and the functions it is evaluated on: the trained network (`train_fn`, maybe
        wrapped by DDP/compile) and the EMA weights (`ema_fn`)."""
        job = self.job
        self.conditional, self.null_label = job.conditional, job.null_label
        self.loss_fn = job.loss
        self.train_score = self.train_fn = job.model.wrap(model, self.sde)
        self.ema_score = self.ema_fn = job.model.wrap(self.ema.shadow, self.sde)

    def batch_loss(self, fn: Callable, x: Tensor, y: Optional[Tensor], generator) -> Tensor:
        """Per-example losses (B,) of `fn` (a score function) on the batch; class labels y (or
        None) are bound into the score."""
        score_fn = fn if y is None else functools.partial(fn, y=y)
        return self.loss_fn(score_fn, x, generator=generator)

    def training_labels(self, y: Tensor) -> Optional[Tensor]:
        """The labels the loss sees: None for an unconditional model, else y with label dropout
        (each label is the null label with probability p_uncond)."""
        if not self.conditional:
            return None
        return drop_labels(y, self.job.p_uncond, self.null_label, self.loss_generator)

    def test_labels(self, y: Tensor) -> Optional[Tensor]:
        """The labels of the test loss: the true ones for a conditional model (no dropout)."""
        return y if self.conditional else None

    def check_checkpoint(self, state: Dict[str, Any]) -> None:
        self.job.model.check_checkpoint(state["config"])

    # ------------------------------------------------------------------------ checkpoint state
    def state(self) -> Dict[str, Any]:
        """Everything a resume needs (rank 0 writes it; RNG states come from every rank)."""
        return {
            "step": self.step,
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data": self.loader.state_dict(),
            "rng": distributed.gather_objects(self.ctx, rng.capture(self.loss_generator)),
            "world_size": self.ctx.world_size,
            "config": self.exp.config_json,
        }

    def _resume(self) -> None:
        """Restore the newest intact checkpoint (damaged ones are moved aside and reported).

        Raises:
          ValueError: checkpoints exist but none is intact (and not `fresh`), on every rank:
            training never starts again from step 0 on its own.
        """
        ctx = self.ctx
        path, error = None, None
        if ctx.is_main:
            self.checkpoints.remove_temporaries()
            try:
                state, path = self.checkpoints.load_latest(map_location=ctx.device, move_aside=True)
            except DamagedCheckpointsError as err:
                if not self.fresh:
                    error = str(err.with_fix(
                        "pass --fresh to start again from step 0 (the damaged files are kept, renamed"
                        " *.damaged), or restore a good checkpoint into that folder"))
                else:
                    log.warning("--fresh: starting again from step 0; damaged checkpoints kept as %s",
                                ", ".join(p.name for p in self.checkpoints.damaged()))
        path, error = distributed.broadcast_object(ctx, (None if path is None else str(path), error))
        if error is not None:
            raise ValueError(error)
        if path is None:
            return
        if not ctx.is_main:
            state = load_state(path, map_location=ctx.device)
        self.check_checkpoint(state)
        self.net.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        match_memory_format(self.optimizer)
        self.step = int(state["step"])
        if state["world_size"] == ctx.world_size:
            self.loader.load_state_dict(state["data"])
            rng.restore(state["rng"][ctx.rank], self.loss_generator)
        else:  # a new data order and fresh RNG streams: resumable, not bitwise-reproducible
            log.warning("Checkpoint written by %d processes, resumed by %d: the data order and the"
                        " random streams restart at the next epoch.", state["world_size"], ctx.world_size)
            self.loader.set_epoch(int(state["data"]["epoch"]) + 1)
            seed = data_lib.derive_seed(self.exp.seed, ctx.rank, self.step)
            rng.seed_all(seed)
            self.loss_generator.manual_seed(seed)
        self.resumed_from = path

    def save(self, snapshot: bool) -> None:
        """Write the resume checkpoint (and a numbered snapshot) on rank 0; every rank takes part
        (RNG states are gathered)."""
        self.check_finite()
        state = self.state()
        if self.ctx.is_main:
            self.checkpoints.save_resume(state)
            if snapshot:
                self.checkpoints.save_snapshot(state, self.step)
        distributed.barrier(self.ctx)

    # ------------------------------------------------------------------------------ the step
    def train_step(self, x: Tensor, y: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """One optimizer update on batch x with the labels the loss sees (`training_labels`: None
        for unconditional models); returns the loss and gradient norm (device tensors: nothing
        here waits for the device, they are read when logged)."""
        if x.dim() == 4 and self.memory_format is torch.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            loss = self.batch_loss(self.train_fn, x, y, self.loss_generator).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = learning_rate(self.step + 1, self.optim_cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        clip = self.optim_cfg.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(),
                                                   clip if clip > 0 else float("inf"))
        self.optimizer.step()
        self.ema.update(self.net)
        self.step += 1
        return {"loss": loss.detach().float(), "grad_norm": grad_norm.detach().float(), "lr": lr}

    def track_finite(self, out: Dict[str, Tensor]) -> None:
        """Remember the first step whose loss or gradient norm is not finite (no device sync)."""
        bad = ~(torch.isfinite(out["loss"]) & torch.isfinite(out["grad_norm"]))
        first = self._bad[0] < 0
        self._bad = torch.where(bad & first,
                                torch.stack([torch.tensor(float(self.step), device=bad.device),
                                             out["loss"], out["grad_norm"]]),
                                self._bad)

    def check_finite(self) -> None:
        """Raise `NonFiniteLossError` if any rank saw a non-finite loss (a sync point)."""
        bad = self._bad.clone()
        if self.ctx.distributed:  # the earliest bad step over the ranks
            rows = distributed.gather_rows(self.ctx, bad[None])
            found = rows[rows[:, 0] >= 0]
            bad = found[found[:, 0].argmin()] if len(found) else bad
        if bad[0] >= 0:
            step, loss, gnorm = int(bad[0]), bad[1].item(), bad[2].item()
            o, mp = self.optim_cfg, self.loop.mixed_precision
            tips = [f"a lower learning rate (optim.lr={o.lr:g})",
                    "mixed_precision='none' (bf16 is on)" if mp == "bf16" else None,
                    f"a smaller gradient clip (optim.grad_clip={o.grad_clip:g})" if o.grad_clip > 0
                    else "gradient clipping (optim.grad_clip=1.0; it is off)"]
            raise NonFiniteLossError(
                f"non-finite training loss at step {step}: loss={loss:g}, gradient norm={gnorm:g}."
                " Stopped without writing a checkpoint after it; the last good checkpoint is kept"
                f" and a rerun resumes from it. Try {', '.join(t for t in tips if t)}.")

    def eval_loss(self) -> float:
        """Mean loss of the EMA weights on one test batch (rank 0), reproducible per step."""
        n = len(self.test_ds)
        b = min(self.loop.batch_size, n)
        k = (self.step // max(self.loop.eval_freq, 1)) % max(n // b, 1)
        items = [self.test_ds[i] for i in range(k * b, k * b + b)]
        x = torch.stack([torch.as_tensor(item[0]) for item in items]).to(self.ctx.device)
        y = self.test_labels(torch.tensor([int(item[1]) for item in items], device=self.ctx.device))
        g = torch.Generator().manual_seed(data_lib.derive_seed(self.exp.seed, self.step, 3))
        with torch.no_grad(), self.autocast:
            return self.batch_loss(self.ema_fn, x, y, g).mean().item()

    def snapshot_samples(self) -> None:
        """Sample one batch with the EMA weights (rank 0) into `<workdir>/snapshots/`; a
        class-conditional model samples every class in turn with its conditional score."""
        s, data = self.job.snapshot, self.exp.data
        n = min(s.batch_size, SNAPSHOT_SAMPLES) if data.is_image else s.batch_size
        labels, score_fn = None, self.ema_score
        if self.conditional:  # sample i has class i mod K; w = 1 is the conditional score
            labels = torch.arange(n) % self.null_label
            score_fn = functools.partial(classifier_free, self.ema_score, w=1.0, null_label=self.null_label)
        solo = distributed.Context(device=self.ctx.device)
        samples, info = draw_samples(solo, self.sde, score_fn, data.shape, sampler=s.sampler,
                                     num_samples=n, batch_size=n,
                                     seed=data_lib.derive_seed(s.seed, self.step), labels=labels,
                                     progress=self.progress, desc=f"snapshot samples, step {self.step}")
        reference = None if data.is_image else self.train_ds.x[:n]
        save_samples(samples, data, self.workdir / "snapshots" / f"samples_{self.step:08d}",
                     reference=reference, title=f"step {self.step}, NFE {info['nfe']:.0f}", labels=labels)

    # ---------------------------------------------------------------------------- run
    def run(self) -> int:
        """Train to n_iters; returns the final step."""
        t, ctx, tag = self.loop, self.ctx, f"[{self.mode}]"
        writer = None
        if ctx.is_main:
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / "config.json").write_text(self.exp.config_json)
            if self.resumed_from:
                print(f"{tag} resuming from {self.resumed_from} at step {self.step}", flush=True)
        if self.step >= t.n_iters:
            if ctx.is_main:
                print(f"{tag} already at step {self.step} >= n_iters={t.n_iters}; nothing to do",
                      flush=True)
            return self.step
        if ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.workdir / "tensorboard"))
        self._bad = torch.tensor([-1.0, 0.0, 0.0], device=ctx.device)
        self.net.train()
        bar = tqdm(total=t.n_iters, initial=self.step, desc=self.mode, unit="step", dynamic_ncols=True,
                   disable=not (self.progress and ctx.is_main), mininterval=1.0)
        loss_sum = torch.zeros((), device=ctx.device)
        interval_start, interval_steps = time.perf_counter(), 0
        batches = iter(self.loader)
        try:
            while self.step < t.n_iters:
                x, y = next(batches)
                y = self.training_labels(y)  # label dropout happens here, on the CPU
                batch = (x,) if y is None else (x, y)
                out = self.train_step(*(v.to(ctx.device, non_blocking=True) for v in batch))
                self.track_finite(out)
                loss_sum += out["loss"]
                interval_steps += 1
                bar.update(1)
                step, last = self.step, self.step == t.n_iters
                if step % t.log_freq == 0 or last:
                    self.check_finite()
                    loss = distributed.all_reduce_sum(ctx, loss_sum).item() / (interval_steps * ctx.world_size)
                    elapsed = time.perf_counter() - interval_start
                    rate = interval_steps * t.batch_size / max(elapsed, 1e-9)
                    if writer is not None:
                        writer.add_scalar("train/loss", loss, step)
                        writer.add_scalar("train/lr", out["lr"], step)
                        writer.add_scalar("train/grad_norm", out["grad_norm"].item(), step)
                        writer.add_scalar("train/examples_per_s", rate, step)
                        bar.set_postfix(loss=f"{loss:.4g}", lr=f"{out['lr']:.2e}", refresh=False)
                        if not self.progress:
                            print(f"{tag} step {step}/{t.n_iters} loss {loss:.5g} lr {out['lr']:.3g}"
                                  f" grad_norm {out['grad_norm'].item():.3g} {rate:.0f} examples/s",
                                  flush=True)
                    loss_sum.zero_()
                    interval_start, interval_steps = time.perf_counter(), 0
                if t.eval_freq > 0 and step % t.eval_freq == 0 and ctx.is_main:
                    writer.add_scalar("eval/loss", self.eval_loss(), step)
                snapshot = last or (t.snapshot_freq > 0 and step % t.snapshot_freq == 0)
                if snapshot or (t.checkpoint_freq > 0 and step % t.checkpoint_freq == 0):
                    self.save(snapshot=snapshot)
                if snapshot and self.job.snapshot is not None and ctx.is_main:
                    self.snapshot_samples()
                if snapshot:
                    distributed.barrier(ctx)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if ctx.is_main:
            print(f"{tag} done: step {self.step}, checkpoint {self.checkpoints.resume_path}", flush=True)
        return self.step


class ClassifierTrainer(Trainer):
    """`--mode train_classifier`: a noise-conditional classifier p_t(y | x_t) for classifier
    guidance (Song et al. 2021, App. I.1), trained with cross-entropy on data perturbed by the
    SDE's kernel at t ~ U[eps, T] (`losses.NoisyClassifierLoss`), in `<workdir>/classifier/`
    (its own checkpoints, TensorBoard logs and config.json). Same loop, checkpoints and bitwise
    resumes as the score model.
    """

    def build_objective(self, model: torch.nn.Module) -> None:
        self.conditional, self.null_label = False, None
        self.loss_fn = self.job.loss
        self.train_fn = self.job.model.wrap(model, self.sde)
        self.ema_fn = self.job.model.wrap(self.ema.shadow, self.sde)

    def batch_loss(self, fn: Callable, x: Tensor, y: Optional[Tensor], generator) -> Tensor:
        """Per-example cross-entropies (B,) of the classifier `fn` (a log_prob_fn)."""
        return self.loss_fn(fn, x, y, generator=generator)

    def training_labels(self, y: Tensor) -> Tensor:
        return y

    def test_labels(self, y: Tensor) -> Tensor:
        return y


def train(exp: Experiment, workdir: Path, ctx: distributed.Context, *, progress: bool = True,
          fresh: bool = False) -> int:
    """Train (or resume) the score model in `workdir`; returns the final step. See `Trainer`;
    `fresh`: start from step 0 when every checkpoint there is damaged."""
    return Trainer(exp.train, exp, workdir, ctx, progress=progress, fresh=fresh).run()


def train_classifier(exp: Experiment, workdir: Path, ctx: distributed.Context, *, progress: bool = True,
                     fresh: bool = False) -> int:
    """Train (or resume) the classifier in `<workdir>/classifier/`; returns the final step. See
    `ClassifierTrainer`."""
    if exp.classifier is None:
        raise ValueError(f"--mode train_classifier needs labelled data, but dataset {exp.data.dataset!r}"
                         " has no classes")
    return ClassifierTrainer(exp.classifier, exp, workdir, ctx, progress=progress, fresh=fresh).run()
