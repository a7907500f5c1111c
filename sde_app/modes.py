"""The modes `main.py` runs, as one table (`MODES`), and the checks that run before any of them.

A `Session` holds what the modes of one command share: the experiment (`specs.Experiment`), the
process's place in a torchrun job, the workdir and the command-line paths, and the weights once
loaded (so `sample,eval` loads them once).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

from . import consistency_run, controllable_run, distill_run, distributed, evaluation, loading, sampling_run, training
from .checkpoints import CheckpointDir, DamagedCheckpointsError
from .specs import Experiment


@dataclasses.dataclass
class Session:
    """What the modes of one command share."""

    exp: Experiment
    ctx: distributed.Context
    workdir: Path
    modes: Sequence[str]
    progress: bool = True
    checkpoint: Optional[str] = None
    official_checkpoint: Optional[str] = None
    official: Optional[Dict[str, Any]] = None
    classifier_checkpoint: Optional[str] = None
    input_path: Optional[str] = None
    mask_path: Optional[str] = None
    fresh: bool = False
    _model: Any = None
    _classifier: Any = None

    def model(self, mode: str):
        """The score model's EMA weights (ours or official), loaded once."""
        if self._model is None:
            if self.official is not None:
                self._model = loading.load_official(self.exp, self.official_checkpoint, self.official,
                                                    self.ctx.device)
            else:
                self._model = loading.load_trained(self.exp, self.workdir, self.ctx.device, self.checkpoint)
            if self.ctx.is_main:
                m = self._model
                print(f"[{mode}] weights: {m.source} (step {m.step}, EMA)", flush=True)
            self._use_student_sampler(mode)
        return self._model

    def _use_student_sampler(self, mode: str) -> None:
        """A distilled student samples with the DDIM steps it learnt, unless
        `sampling.student_sampler` is False (its checkpoint says which: `loading.student_sampler`)."""
        m, s = self._model, self.exp.sampling
        if m.sampler is None or not s.student_sampler:
            return
        m.sampler.check(self.exp.sde)
        self.exp = dataclasses.replace(self.exp, sampling=dataclasses.replace(s, sampler=m.sampler))
        if self.ctx.is_main:
            info = m.student
            print(f"[{mode}] a distilled student (round {info['round']}): sampling with ddim, N={info['student_steps']},"
                  f" schedule={info['schedule']}, eps={info['eps']}, denoise=False, as it learnt"
                  " (--config.sampling.student_sampler=False uses config.sampling instead)", flush=True)

    def classifier(self, mode: str):
        """The classifier's EMA weights when `mode` guides with it, else None; loaded once."""
        if not uses_classifier(self.exp, [mode]):
            return None
        if self._classifier is None:
            self._classifier = loading.load_classifier(self.exp, self.workdir, self.ctx.device,
                                                       self.classifier_checkpoint)
            if self.ctx.is_main:
                c = self._classifier
                print(f"[{mode}] classifier: {c.source} (step {c.step}, EMA)", flush=True)
        return self._classifier


@dataclasses.dataclass(frozen=True)
class Mode:
    """A mode: what it runs, and what it needs before it starts.

    Attributes:
      run: run(session, mode name) -> its result (the final step, or a summary).
      trains: it trains (writes checkpoints; no trained weights needed).
      needs_weights: it reads trained weights (ours or official); or a function of the experiment
        saying whether it does (consistency distillation reads its teacher, training does not).
      reads_data: it reads the data set (train, eval).
      guided_by: the settings group whose `guidance` may ask for the classifier, or None.
    """

    run: Callable[[Session, str], Any]
    trains: bool = False
    needs_weights: Union[bool, Callable[[Any], bool]] = False
    reads_data: bool = False
    guided_by: Optional[str] = None

    def reads_weights(self, exp) -> bool:
        return self.needs_weights(exp) if callable(self.needs_weights) else self.needs_weights


def _train(s: Session, mode: str):
    return training.train(s.exp, s.workdir, s.ctx, progress=s.progress, fresh=s.fresh)


def _train_classifier(s: Session, mode: str):
    return training.train_classifier(s.exp, s.workdir, s.ctx, progress=s.progress, fresh=s.fresh)


def _sample(s: Session, mode: str):
    model = s.model(mode)  # first: a student's checkpoint sets the sampler of s.exp
    return sampling_run.run(s.ctx, s.exp, s.workdir, model, classifier=s.classifier(mode), progress=s.progress)


def _eval(s: Session, mode: str):
    model = s.model(mode)
    return evaluation.run(s.ctx, s.exp, s.workdir, model, progress=s.progress)


def _inpaint(s: Session, mode: str):
    return controllable_run.run_inpaint(s.ctx, s.exp, s.workdir, s.model(mode), input_path=s.input_path,
                                        mask_path=s.mask_path, classifier=s.classifier(mode),
                                        progress=s.progress)


def _colorize(s: Session, mode: str):
    return controllable_run.run_colorize(s.ctx, s.exp, s.workdir, s.model(mode), input_path=s.input_path,
                                         classifier=s.classifier(mode), progress=s.progress)


def _distill(s: Session, mode: str):
    return distill_run.run(s.exp, s.workdir, s.ctx, checkpoint=s.checkpoint, progress=s.progress, fresh=s.fresh)


def _consistency(s: Session, mode: str):
    return consistency_run.run(s.exp, s.workdir, s.ctx, checkpoint=s.checkpoint, progress=s.progress,
                               fresh=s.fresh)


MODES = {
    "train": Mode(_train, trains=True, reads_data=True),
    "sample": Mode(_sample, needs_weights=True, guided_by="sampling"),
    "eval": Mode(_eval, needs_weights=True, reads_data=True),
    "train_classifier": Mode(_train_classifier, trains=True, reads_data=True),
    "inpaint": Mode(_inpaint, needs_weights=True, guided_by="controllable"),
    "colorize": Mode(_colorize, needs_weights=True, guided_by="controllable"),
    "distill": Mode(_distill, trains=True, needs_weights=True, reads_data=True),
    "consistency": Mode(_consistency, trains=True, reads_data=True,
                        needs_weights=lambda exp: exp.consistency.kind == "distillation"),
}


def uses_classifier(exp: Experiment, modes: Sequence[str]) -> bool:
    """Whether one of `modes` guides with the classifier."""
    for m in modes:
        group = MODES[m].guided_by
        if group is not None and getattr(exp, group).guidance == "classifier":
            return True
    return False


def check(session: Session) -> None:
    """Everything the modes need that takes no work: data on disk, weights to read, a classifier
    for classifier guidance, readable inputs. (The config itself is checked by the factory.)

    Raises:
      ValueError, FileNotFoundError: the one-line message names the value and the fix.
    """
    exp, modes, workdir = session.exp, session.modes, session.workdir
    controllable_run.check_inputs(exp.data, modes, session.input_path, session.mask_path)
    if any(MODES[m].reads_data for m in modes):
        exp.data.check_available()
        _, n_test = exp.data.check_readable(exp.seed)
        points = exp.evaluation.num_points
        if "eval" in modes and points > n_test:
            raise ValueError(f"config.eval.num_points={points}, but the {exp.data.dataset} test split has"
                             f" {n_test} points; set at most {n_test} (or 0 for all of them)")
    if "train_classifier" in modes and exp.classifier is None:
        raise ValueError(f"--mode train_classifier needs labelled data, but dataset {exp.data.dataset!r}"
                         " has no classes")
    needs = [m for m in modes if MODES[m].reads_weights(exp)]
    if needs and "train" not in modes and session.official is None and not session.checkpoint:
        ckdir = CheckpointDir(workdir)
        if not ckdir.has_checkpoint() and ckdir.damaged():
            raise DamagedCheckpointsError(ckdir.dir, ckdir.damaged(),
                                          "name a good one with --checkpoint=PATH, or train again")
        if not ckdir.has_checkpoint():
            raise ValueError(
                f"--mode={needs[0]} needs a trained model, but {workdir}/checkpoints has none: train"
                " first (--mode=train,sample), or pass --checkpoint=PATH or --official_checkpoint=PATH"
                " --official_config=JSON")
    guided = [m for m in modes if MODES[m].guided_by is not None and uses_classifier(exp, [m])]
    if guided:
        if exp.classifier is None:
            raise ValueError(f"guidance='classifier' needs labelled data, but dataset {exp.data.dataset!r}"
                             " has no classes")
        if session.classifier_checkpoint:
            if not Path(session.classifier_checkpoint).is_file():
                raise ValueError(f"--classifier_checkpoint={session.classifier_checkpoint!r}: no such file")
        elif not ("train_classifier" in modes and modes.index("train_classifier") < modes.index(guided[0])):
            if not CheckpointDir(loading.run_dir(workdir, exp.classifier)).has_checkpoint():
                raise ValueError(loading.missing_classifier_message(workdir, exp.classifier))
