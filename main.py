"""score-sde: train, sample and evaluate score-based generative models through SDEs.

    python main.py --config configs/vp_toy.py --mode train,sample,eval --workdir runs/vp_toy
    python main.py --config configs/vp_cifar10.py --mode sample --workdir runs/vp \\
        --config.sampling.method=ode
    torchrun --nproc_per_node=8 main.py --config configs/vp_cifar10.py --mode train --workdir runs/vp
    python main.py --config configs/vp_cifar10.py --mode sample --workdir runs/official \\
        --official_checkpoint checkpoint_8.pth --official_config official_config.json
    python main.py --config configs/vp_toy_conditional.py --mode train,sample --workdir runs/cond
    python main.py --config configs/vp_cifar10.py --mode inpaint --workdir runs/vp \\
        --input photo.png --mask mask.png
    python main.py --config runs/vp/config.json --mode sample --workdir runs/vp    (a run's own config)

Modes (comma-separated, run in order; the table is `sde_app.modes.MODES`): train (resumes from the
workdir's latest checkpoint), train_classifier (the classifier of classifier guidance, in
<workdir>/classifier/), sample (writes <workdir>/samples/), eval (writes <workdir>/eval/),
inpaint and colorize (write beside --input), distill (progressive distillation of the trained model,
in <workdir>/distill/round_<k>/), consistency (consistency distillation or training, in
<workdir>/consistency/<kind>/). docs/app.md has the details.
"""
import sys
from pathlib import Path

from absl import app, flags, logging

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = str(ROOT / "configs" / "vp_toy.py")
MODE_NAMES = ("train", "sample", "eval", "train_classifier", "inpaint", "colorize", "distill", "consistency")

FLAGS = flags.FLAGS
flags.DEFINE_string("config", DEFAULT_CONFIG,
                    "Configuration file (configs/*.py, or a run's config.json); override any field with"
                    " --config.group.field=value.")
flags.DEFINE_string("mode", "train", f"One mode or a comma-separated list run in order: {', '.join(MODE_NAMES)}.")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, TensorBoard logs, samples, eval results.")
flags.DEFINE_string("checkpoint", None, "Checkpoint for sample/eval (default: the workdir's latest; EMA weights).")
flags.DEFINE_string("official_checkpoint", None, "An official score_sde_pytorch checkpoint (.pth) to sample/evaluate.")
flags.DEFINE_string("official_config", None, "The official config of --official_checkpoint, as JSON.")
flags.DEFINE_string("classifier_checkpoint", None,
                    "Classifier for guidance='classifier' (default: the workdir's latest, W/classifier/).")
flags.DEFINE_string("input", None, "--mode inpaint/colorize: the input image (PNG of the model's size).")
flags.DEFINE_string("mask", None, "--mode inpaint: the mask (PNG of the input's size; white = known).")
flags.DEFINE_enum("device", "auto", ["auto", "cpu", "cuda"], "Device; auto = the local GPU if any.")
flags.DEFINE_bool("progress", True, "Show progress bars (else print a line per log step).")
flags.DEFINE_bool("fresh", False, "--mode train: start again from step 0 when every checkpoint in the workdir"
                  " is damaged (they are kept, renamed *.damaged); without it such a run stops.")

CONFIG = None  # the configuration read by `parse_flags`


class UsageError(ValueError):
    """A command-line mistake, reported in one line before any work starts."""


def parse_modes(text: str):
    """'train,sample' -> ['train', 'sample'], checking every name."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes:
        raise UsageError(f"--mode={text!r} names no mode; use one of {', '.join(MODE_NAMES)} or a"
                         " comma-separated list, e.g. --mode=train,sample,eval")
    for m in modes:
        if m not in MODE_NAMES:
            raise UsageError(f"--mode: unknown mode {m!r}; valid modes: {', '.join(MODE_NAMES)}"
                             " (comma-separated, run in order)")
    return modes


def check_workdir(workdir) -> Path:
    """The run directory: required, not a file, and writable (tried with a temporary file in it,
    or in its nearest existing parent, removed at once: a mistake leaves nothing behind)."""
    import tempfile

    if not workdir:
        raise UsageError("--workdir is required: the run directory for checkpoints and outputs,"
                         " e.g. --workdir=runs/vp_toy")
    path = Path(workdir)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is inside {existing}, a file"
        raise UsageError(f"--workdir={workdir!r} {where}; pass a directory (it is created if missing)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UsageError(f"--workdir={workdir!r} cannot be written ({existing}: {err.strerror}); choose a"
                         " directory you can write to") from None
    return path


def run(config, modes, workdir, *, checkpoint=None, official_checkpoint=None, official_config=None,
        classifier_checkpoint=None, input_path=None, mask_path=None, device="auto", progress=True,
        fresh=False):
    """Check everything, then run `modes` in order (the command line without absl).

    Returns {mode: result}: the final step for train and train_classifier, the summaries of
    sample, eval, inpaint and colorize.

    Raises:
      ValueError, FileNotFoundError: user mistakes, before any work starts.
      NonFiniteLossError: training diverged (no checkpoint was written after the bad step).
    """
    import torch

    from sde_app import distributed, factory
    from sde_app import modes as modes_lib

    if isinstance(modes, str):
        modes = parse_modes(modes)
    workdir = check_workdir(workdir)
    official = None
    if official_checkpoint or official_config:
        if not (official_checkpoint and official_config):
            raise UsageError("--official_checkpoint and --official_config go together: the .pth"
                             " file and its official config as JSON")
        if "train" in modes:
            raise UsageError("--official_checkpoint is for --mode sample, eval, inpaint, colorize, not train")
        if checkpoint:
            raise UsageError("pass either --checkpoint or --official_checkpoint, not both")
        if not Path(official_checkpoint).is_file():
            raise UsageError(f"--official_checkpoint={official_checkpoint!r}: no such file")
        official = factory.read_official_config(official_config)
        factory.apply_official_config(config, official)
    if checkpoint and not Path(checkpoint).is_file():
        raise UsageError(f"--checkpoint={checkpoint!r}: no such file")
    exp = factory.build_experiment(config, modes, check_network=official is None)
    distributed.check_batch_sizes(exp, modes)
    session = modes_lib.Session(
        exp=exp, ctx=distributed.Context(), workdir=workdir, modes=modes, progress=progress,
        checkpoint=checkpoint, official_checkpoint=official_checkpoint, official=official,
        classifier_checkpoint=classifier_checkpoint, input_path=input_path, mask_path=mask_path, fresh=fresh)
    modes_lib.check(session)

    if exp.threads > 0:
        torch.set_num_threads(exp.threads)
    session.ctx = distributed.init(device)
    session.progress = progress and session.ctx.is_main
    results = {}
    try:
        for mode in modes:
            results[mode] = modes_lib.MODES[mode].run(session, mode)
    finally:
        distributed.shutdown()
    return results


def parse_flags(argv):
    """absl's flag parsing with the configuration read here: `--config PATH` and every
    `--config.group.field=value` are checked field by field, and every mistake (an unknown
    flag, field or value) is one `error:` line and exit status 2."""
    global CONFIG
    from sde_app import factory

    try:
        path, overrides, rest = factory.split_config_args(list(argv), DEFAULT_CONFIG)
        CONFIG = factory.load_config(path)
        factory.apply_overrides(CONFIG, overrides)
        return FLAGS(rest + [f"--config={path}"])
    except (ValueError, flags.Error) as err:
        _fail(err)


def _fail(err, status: int = 2):
    from sde_app import distributed

    if distributed.is_main_process():
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr,
              flush=True)
    sys.exit(status)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    from sde_app.training import NonFiniteLossError

    try:
        run(CONFIG, FLAGS.mode, FLAGS.workdir, checkpoint=FLAGS.checkpoint,
            official_checkpoint=FLAGS.official_checkpoint, official_config=FLAGS.official_config,
            classifier_checkpoint=FLAGS.classifier_checkpoint, input_path=FLAGS.input,
            mask_path=FLAGS.mask, device=FLAGS.device, progress=FLAGS.progress, fresh=FLAGS.fresh)
    except NonFiniteLossError as err:
        _fail(err, 3)
    except (ValueError, FileNotFoundError) as err:
        logging.debug("traceback of the error below (shown with --verbosity=1)", exc_info=True)
        _fail(err)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
