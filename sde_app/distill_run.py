"""`--mode distill`: progressive distillation (Salimans & Ho 2022) of the trained score model.

Round k = 1 .. rounds trains, in `<workdir>/distill/round_<k>/`, a student of the score model's
architecture that starts from its teacher's weights (round 1: the trained model's EMA; round k:
round k-1's student's EMA) and learns one DDIM step that does what two teacher steps do
(`sde_lib.distillation.ProgressiveDistillationLoss`), for distill.student_steps / 2^(k-1) steps.
Each round is a training run of the training loop (`training.Trainer` with the hooks
`init_weights`, `state`): checkpoints, bitwise resume after a kill, progress bar, TensorBoard. A
finished round is skipped on rerun. Each student is a normal checkpoint that `--mode sample` and
`--mode eval` sample with its own step count (`loading.student_sampler`); the round prints the flags.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch

from sde_lib.distillation import ProgressiveDistillationLoss

from . import distributed, loading
from .checkpoints import CheckpointDir
from .specs import Experiment, TrainingJob
from .training import Trainer

DISTILL_DIR = "distill"


def round_dir(k: int) -> str:
    """The run directory of round k under the workdir."""
    return f"{DISTILL_DIR}/round_{k}"


class DistillTrainer(Trainer):
    """One distillation round: the training loop with the student initialised from the teacher."""

    def __init__(self, job: TrainingJob, exp: Experiment, workdir: Path, ctx: distributed.Context, *,
                 teacher: torch.nn.Module, round_info: Dict[str, Any], progress: bool = True,
                 fresh: bool = False):
        self.teacher, self.round_info = teacher, round_info
        super().__init__(job, exp, workdir, ctx, progress=progress, fresh=fresh)

    def init_weights(self) -> None:
        weights = self.teacher.state_dict()
        self.net.load_state_dict(weights)
        self.ema.shadow.load_state_dict(weights)

    def state(self) -> Dict[str, Any]:
        return {**super().state(), "distill": dict(self.round_info)}


def sample_flags(info: Dict[str, Any], checkpoint: str) -> str:
    """The `main.py` flags that sample a student: its checkpoint, which carries its step count, grid
    and eps (`loading.student_sampler`), and, for the record, the sampler they make."""
    return (f"--mode=sample --checkpoint={checkpoint}   (DDIM, N={info['student_steps']},"
            f" schedule={info['schedule']}, eps={info['eps']}, denoise=False, from the checkpoint)")


def round_loss(exp: Experiment, teacher: torch.nn.Module, student_steps: int) -> ProgressiveDistillationLoss:
    """The loss of a round whose student takes `student_steps` steps, from the teacher network."""
    d = exp.distill
    return ProgressiveDistillationLoss(exp.sde, exp.score_model.wrap(teacher, exp.sde), student_steps, eps=d.eps,
                                       schedule=d.schedule, weighting=d.weighting)


def run(exp: Experiment, workdir: Path, ctx: distributed.Context, *, checkpoint=None, progress: bool = True,
        fresh: bool = False) -> Dict[str, Any]:
    """Every round (finished ones are skipped); returns {round: (student steps, checkpoint path)}."""
    d = exp.distill
    teacher = loading.load_trained(exp, workdir, ctx.device, checkpoint).net
    done = {}
    for k in range(1, d.rounds + 1):
        info = {"round": k, "student_steps": d.steps_of_round(k), "schedule": d.schedule, "eps": d.eps}
        job = TrainingJob(mode=f"distill round {k}", subdir=round_dir(k), objective="score",
                          model=exp.score_model, loop=d.loop, optim=d.optim,
                          loss=round_loss(exp, teacher, info["student_steps"]))
        trainer = DistillTrainer(job, exp, workdir, ctx, teacher=teacher, round_info=info, progress=progress,
                                 fresh=fresh)
        trainer.run()
        path = str(CheckpointDir(trainer.workdir).resume_path)
        if ctx.is_main:
            print(f"[distill] round {k}: {info['student_steps']} steps; sample it with: "
                  f"{sample_flags(info, path)}", flush=True)
        done[k] = (info["student_steps"], path)
        teacher = trainer.ema.shadow.eval().requires_grad_(False)
    return done
