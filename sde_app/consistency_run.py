"""`--mode consistency`: consistency distillation or consistency training (Song et al. 2023).

A training run of the training loop (`training.Trainer`, hooks `init_weights`, `build_objective`,
`batch_loss`, `state`, and the EMA decay set before each step) in `<workdir>/consistency/<kind>/`:
checkpoints, bitwise resume after a kill, progress bar, TensorBoard. The network (the score
model's architecture) is read through the boundary parameterisation
(`sde_lib.consistency.ConsistencyFunction`); the loop's EMA is the target network. Distillation
starts from the trained model's weights and takes one Euler step of its probability flow per pair
of levels; training starts from fresh weights and follows N(k) and mu(k). The checkpoint is a
normal one that `--mode sample --config.sampling.method=consistency` samples (`loading`
recognises it by its "consistency" entry).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from sde_lib.consistency import ConsistencyFunction, consistency_loss, n_schedule, target_decay

from . import distributed, loading
from .specs import Experiment, TrainingJob
from .training import Trainer

Tensor = torch.Tensor


def run_dir(kind: str) -> str:
    """The run directory of a consistency model under the workdir."""
    return f"consistency/{kind}"


class ConsistencyTrainer(Trainer):
    """The training loop with the consistency loss against the EMA target."""

    def __init__(self, job: TrainingJob, exp: Experiment, workdir: Path, ctx: distributed.Context, *,
                 teacher: Optional[loading.LoadedModel], progress: bool = True, fresh: bool = False):
        self.settings, self.teacher = exp.consistency, teacher
        super().__init__(job, exp, workdir, ctx, progress=progress, fresh=fresh)

    def info(self) -> Dict[str, Any]:
        c = self.settings
        return {"kind": c.kind, "eps": c.eps, "sigma_data": c.sigma_data}

    def init_weights(self) -> None:
        if self.teacher is not None:
            weights = self.teacher.net.state_dict()
            self.net.load_state_dict(weights)
            self.ema.shadow.load_state_dict(weights)
        self.ema.rate = self.settings.rate

    def build_objective(self, model: torch.nn.Module) -> None:
        c = self.settings
        self.conditional, self.null_label = False, None
        self.train_fn = ConsistencyFunction(model, self.sde, c.eps, c.sigma_data)
        self.ema_fn = ConsistencyFunction(self.ema.shadow, self.sde, c.eps, c.sigma_data)
        self.train_score, self.ema_score = self.train_fn.as_score(), self.ema_fn.as_score()

    def levels(self) -> int:
        """N at the current step: fixed for distillation, N(k) for training (App. C)."""
        c = self.settings
        if c.kind == "distillation":
            return c.n_levels
        return n_schedule(self.step, self.loop.n_iters, c.s0, c.s1)

    def batch_loss(self, fn: Callable, x: Tensor, y: Optional[Tensor], generator) -> Tensor:
        teacher = None if self.teacher is None else self.teacher.score_fn
        return consistency_loss(fn, self.ema_fn, x, N=self.levels(), teacher_score=teacher, generator=generator)

    def train_step(self, x: Tensor, y: Optional[Tensor] = None) -> Dict[str, Tensor]:
        c = self.settings
        if c.kind == "training":  # mu(k) of the step about to be taken
            self.ema.rate = target_decay(self.step, self.loop.n_iters, c.rate, c.s0, c.s1)
        return super().train_step(x, y)

    def state(self) -> Dict[str, Any]:
        return {**super().state(), "consistency": self.info()}


def run(exp: Experiment, workdir: Path, ctx: distributed.Context, *, checkpoint=None, progress: bool = True,
        fresh: bool = False) -> int:
    """Train (or resume) the consistency model; returns the final step."""
    c = exp.consistency
    teacher = loading.load_trained(exp, workdir, ctx.device, checkpoint) if c.kind == "distillation" else None
    job = TrainingJob(mode=f"consistency {c.kind}", subdir=run_dir(c.kind), objective="score",
                      model=exp.score_model, loop=c.loop, optim=c.optim, loss=consistency_loss)
    trainer = ConsistencyTrainer(job, exp, workdir, ctx, teacher=teacher, progress=progress, fresh=fresh)
    step = trainer.run()
    if ctx.is_main:
        print(f"[consistency] sample it with: --mode=sample --checkpoint={trainer.checkpoints.resume_path}"
              " --config.sampling.method=consistency --config.sampling.N=1", flush=True)
    return step
