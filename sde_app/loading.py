"""Which weights sampling and evaluation use: the EMA weights of one of our checkpoints (the
latest by default), or those of an official score_sde_pytorch checkpoint; and the EMA weights of
the noise-conditional classifier for classifier guidance (`<workdir>/classifier/checkpoints/`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from sde_lib import sampling as sampling_lib
from sde_lib.consistency import ConsistencyFunction

from .checkpoints import CheckpointDir, CorruptCheckpointError, DamagedCheckpointsError, load_state
from .specs import Experiment, TrainingJob


@dataclass
class LoadedModel:
    """A score model ready for sampling and evaluation (EMA weights, eval mode)."""

    sde: Any
    score_fn: Callable
    net: torch.nn.Module
    step: int
    source: str          # the checkpoint file
    tag: str             # names output files, e.g. "step_00004000" or "official_step_00012345"
    sampler: Optional[sampling_lib.Sampler] = None  # a distilled student's own sampler (`student_sampler`)
    student: Optional[Dict[str, Any]] = None        # its round, step count, grid and eps


@dataclass
class LoadedClassifier:
    """A noise-conditional classifier ready for guidance (EMA weights, eval mode)."""

    log_prob_fn: Callable   # log_prob_fn(x, t) -> (B, K) log p_t(y | x)
    net: torch.nn.Module
    step: int
    source: str


def run_dir(workdir, job: TrainingJob) -> Path:
    """Where a training job keeps its checkpoints: the workdir, or its subdirectory."""
    return Path(workdir) / job.subdir if job.subdir else Path(workdir)


def _read(job: TrainingJob, workdir, checkpoint: Optional[str], flag: str, missing: str):
    """(state, path) of `checkpoint` if given, else of the latest good one of the job's run."""
    if checkpoint:
        try:
            return load_state(checkpoint), Path(checkpoint)
        except CorruptCheckpointError as err:
            hint = (". For an official score_sde_pytorch checkpoint use --official_checkpoint with"
                    " --official_config") if flag == "--checkpoint" else ""
            raise ValueError(f"{flag}: {err}{hint}") from err
    try:
        state, path = CheckpointDir(run_dir(workdir, job)).load_latest()
    except DamagedCheckpointsError as err:
        raise err.with_fix(f"name a good one with {flag}=PATH, or train again") from None
    if state is None:
        raise FileNotFoundError(missing)
    return state, path


def _ema_net(job: TrainingJob, state: Dict[str, Any], device: torch.device) -> torch.nn.Module:
    job.model.check_checkpoint(state["config"])
    net = job.model.build_net()
    net.load_state_dict(state["ema"]["weights"])
    return net.to(device).eval().requires_grad_(False)


def load_trained(exp: Experiment, workdir: Optional[Path], device: torch.device,
                 checkpoint: Optional[str] = None) -> LoadedModel:
    """Our checkpoint's EMA weights: `checkpoint` if given, else the latest good one in
    `<workdir>/checkpoints/` (a damaged file is reported and the previous one used).

    Raises:
      FileNotFoundError: no checkpoint (the message says how to make one).
      ValueError: the checkpoint's model differs from the config's, or the named `checkpoint` is
        damaged or not one of ours.
    """
    state, path = _read(exp.train, workdir, checkpoint, "--checkpoint",
                        f"no checkpoint in {Path(workdir) / 'checkpoints'}: train first (--mode train or"
                        " --mode train,sample), or name one with --checkpoint=PATH")
    net = _ema_net(exp.train, state, device)
    step = int(state["step"])
    if "consistency" in state:  # a consistency model (`consistency_run`): read through f
        c = state["consistency"]
        score_fn = ConsistencyFunction(scoring_net(exp, net), exp.sde, c["eps"], c["sigma_data"]).as_score()
        return LoadedModel(exp.sde, score_fn, net, step, str(path), f"consistency_step_{step:08d}")
    return LoadedModel(exp.sde, exp.score_model.wrap(scoring_net(exp, net), exp.sde), net, step, str(path),
                       f"step_{step:08d}", sampler=student_sampler(state), student=state.get("distill"))


def student_sampler(state: Dict[str, Any]) -> Optional[sampling_lib.Sampler]:
    """The sampler a student of `--mode distill` learnt (`sde_lib.distillation`): deterministic DDIM
    at its step count on its nested grid, ending at its eps without a final denoising step; None
    for a checkpoint that is not a student."""
    info = state.get("distill")
    if info is None:
        return None
    return sampling_lib.build_sampler("ddim", eps=info["eps"], denoise=False, N=info["student_steps"],
                                      schedule=info["schedule"], eta=0.0)


def scoring_net(exp: Experiment, net: torch.nn.Module) -> torch.nn.Module:
    """The network the score calls go through: `net`, or with `sampling.compile` its
    `torch.compile` (static shapes: compiled once per batch shape and reused by every step)."""
    return torch.compile(net, dynamic=False) if exp.sampling.compile else net


def load_classifier(exp: Experiment, workdir: Optional[Path], device: torch.device,
                    checkpoint: Optional[str] = None) -> LoadedClassifier:
    """The classifier's EMA weights: `checkpoint` if given, else the latest good one in
    `<workdir>/classifier/checkpoints/`.

    Raises:
      FileNotFoundError: no classifier checkpoint (the message says how to train one).
      ValueError: the checkpoint's classifier or SDE differs from the config's, or the named file
        is damaged.
    """
    job = exp.classifier
    state, path = _read(job, workdir, checkpoint, "--classifier_checkpoint", missing_classifier_message(workdir, job))
    net = _ema_net(job, state, device)
    return LoadedClassifier(job.model.wrap(net, exp.sde), net, int(state["step"]), str(path))


def missing_classifier_message(workdir, job: TrainingJob) -> str:
    return (f"guidance='classifier' needs a classifier, but {run_dir(workdir, job) / 'checkpoints'} has"
            " none: train one first (--mode=train_classifier,sample), or pass --classifier_checkpoint=PATH")


def load_official(exp: Experiment, checkpoint: str, official: Dict[str, Any], device: torch.device) -> LoadedModel:
    """The EMA weights of an official checkpoint in our network (`models.official`); `exp` must be
    built from a config that carries the official config (`factory.apply_official_config`)."""
    from models import build_from_official_config, load_checkpoint

    net = build_from_official_config(official)
    state = load_checkpoint(checkpoint, net)
    net.load_state_dict(state["ema"])
    net.to(device).eval().requires_grad_(False)
    step = int(state["step"])
    return LoadedModel(exp.sde, exp.score_model.wrap(scoring_net(exp, net), exp.sde), net, step,
                       str(checkpoint), f"official_step_{step:08d}")
