"""score-sde: train, sample and evaluate score-based generative models through SDEs.

    python main.py --config configs/vp_toy.py --mode train,sample,eval --workdir runs/vp_toy
    python main.py --config configs/vp_cifar10.py --mode sample --workdir runs/vp \\
        --config.sampling.method=ode
    torchrun --nproc_per_node=8 main.py --config configs/vp_cifar10.py --mode train --workdir runs/vp
    python main.py --config configs/vp_cifar10.py --mode sample --workdir runs/official \\
        --official_checkpoint checkpoint_8.pth --official_config official_config.json

Modes (comma-separated, run in order): train (resumes from the workdir's latest checkpoint),
sample (writes <workdir>/samples/), eval (writes <workdir>/eval/). docs/app.md has the details.
"""
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

ROOT = Path(__file__).resolve().parent
MODES = ("train", "sample", "eval")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", str(ROOT / "configs" / "vp_toy.py"),
    "Configuration file (configs/*.py); override fields with --config.group.field=value.")
flags.DEFINE_string("mode", "train", f"One mode or a comma-separated list run in order: {', '.join(MODES)}.")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, TensorBoard logs, samples, eval results.")
flags.DEFINE_string("checkpoint", None, "Checkpoint for sample/eval (default: the workdir's latest; EMA weights).")
flags.DEFINE_string("official_checkpoint", None, "An official score_sde_pytorch checkpoint (.pth) to sample/evaluate.")
flags.DEFINE_string("official_config", None, "The official config of --official_checkpoint, as JSON.")
flags.DEFINE_enum("device", "auto", ["auto", "cpu", "cuda"], "Device; auto = the local GPU if any.")
flags.DEFINE_bool("progress", True, "Show progress bars (else print a line per log step).")


class UsageError(ValueError):
    """A command-line mistake, reported in one line before any work starts."""


def parse_modes(text: str):
    """'train,sample' -> ['train', 'sample'], checking every name."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes:
        raise UsageError(f"--mode={text!r} names no mode; use one of {', '.join(MODES)} or a"
                         " comma-separated list, e.g. --mode=train,sample,eval")
    for m in modes:
        if m not in MODES:
            raise UsageError(f"--mode: unknown mode {m!r}; valid modes: {', '.join(MODES)}"
                             " (comma-separated, run in order)")
    return modes


def check_data_available(config) -> None:
    """Fail early, with the data library's message, if CIFAR-10 is missing."""
    from sde_lib import data as data_lib

    if config.data.dataset == "cifar10" and not config.data.download:
        data_lib.find_cifar10(config.data.root)


def prepare(config, modes, workdir, *, checkpoint=None, official_checkpoint=None,
            official_config=None):
    """Every check that needs no work: arguments, config choices, data, checkpoints.

    Returns the official config (a dict) when an official checkpoint is used, else None; the
    official SDE and data-shape fields are then applied to `config` in place.
    """
    from sde_lib.app import factory, loading
    from sde_lib.app.checkpoints import CheckpointDir

    if not workdir:
        raise UsageError("--workdir is required: the run directory for checkpoints and outputs,"
                         " e.g. --workdir=runs/vp_toy")
    official = None
    if official_checkpoint or official_config:
        if not (official_checkpoint and official_config):
            raise UsageError("--official_checkpoint and --official_config go together: the .pth"
                             " file and its official config as JSON")
        if "train" in modes:
            raise UsageError("--official_checkpoint is for --mode sample and/or eval, not train")
        if checkpoint:
            raise UsageError("pass either --checkpoint or --official_checkpoint, not both")
        if not Path(official_checkpoint).is_file():
            raise UsageError(f"--official_checkpoint={official_checkpoint!r}: no such file")
        official = loading.read_official_config(official_config)
        loading.apply_official_config(config, official)
    if checkpoint and not Path(checkpoint).is_file():
        raise UsageError(f"--checkpoint={checkpoint!r}: no such file")
    factory.check_config(config, check_network=official is None)
    if "train" in modes or "eval" in modes:
        check_data_available(config)
    needs_weights = [m for m in modes if m != "train"]
    if needs_weights and "train" not in modes and official is None and not checkpoint:
        if not CheckpointDir(workdir).has_checkpoint():
            raise UsageError(
                f"--mode={needs_weights[0]} needs a trained model, but {workdir}/checkpoints"
                " has none: train first (--mode=train,sample), or pass --checkpoint=PATH or"
                " --official_checkpoint=PATH --official_config=JSON")
    return official


def run(config, modes, workdir, *, checkpoint=None, official_checkpoint=None, official_config=None,
        device="auto", progress=True):
    """Check everything, then run `modes` in order (the command line without absl).

    Returns {mode: result}: the final step for train, the summaries of sample and eval.

    Raises:
      ValueError, FileNotFoundError: user mistakes, before any work starts.
      NonFiniteLossError: training diverged (no checkpoint was written after the bad step).
    """
    import torch

    from sde_lib.app import distributed, evaluation, loading, sampling_run, training

    if isinstance(modes, str):
        modes = parse_modes(modes)
    official = prepare(config, modes, workdir, checkpoint=checkpoint,
                       official_checkpoint=official_checkpoint, official_config=official_config)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    ctx = distributed.init(device)
    progress = progress and ctx.is_main
    workdir = Path(workdir)
    model, results = None, {}
    try:
        for mode in modes:
            if mode == "train":
                results[mode] = training.train(config, workdir, ctx, progress=progress)
                continue
            if model is None:
                if official is not None:
                    model = loading.load_official(config, official_checkpoint, official, ctx.device)
                else:
                    model = loading.load_trained(config, workdir, ctx.device, checkpoint)
                if ctx.is_main:
                    print(f"[{mode}] weights: {model.source} (step {model.step}, EMA)", flush=True)
            run_mode = sampling_run.run if mode == "sample" else evaluation.run
            results[mode] = run_mode(ctx, config, workdir, model, progress=progress)
    finally:
        distributed.shutdown()
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    from sde_lib.app.training import NonFiniteLossError

    try:
        run(FLAGS.config, FLAGS.mode, FLAGS.workdir, checkpoint=FLAGS.checkpoint,
            official_checkpoint=FLAGS.official_checkpoint, official_config=FLAGS.official_config,
            device=FLAGS.device, progress=FLAGS.progress)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(3)
    except (ValueError, FileNotFoundError) as err:
        logging.debug("traceback of the error below (shown with --verbosity=1)", exc_info=True)
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
