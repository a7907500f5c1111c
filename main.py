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

Modes (comma-separated, run in order): train (resumes from the workdir's latest checkpoint),
train_classifier (the classifier of classifier guidance, in <workdir>/classifier/), sample
(writes <workdir>/samples/; class labels and guidance from config.sampling), eval (writes
<workdir>/eval/), inpaint and colorize (write beside --input). docs/app.md has the details.
"""
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

ROOT = Path(__file__).resolve().parent
MODES = ("train", "sample", "eval", "train_classifier", "inpaint", "colorize")
TRAINING_MODES = ("train", "train_classifier")
GUIDED_MODES = ("sample", "inpaint", "colorize")  # may guide with the classifier

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", str(ROOT / "configs" / "vp_toy.py"),
    "Configuration file (configs/*.py); override fields with --config.group.field=value.")
flags.DEFINE_string("mode", "train", f"One mode or a comma-separated list run in order: {', '.join(MODES)}.")
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
            official_config=None, classifier_checkpoint=None, input_path=None, mask_path=None):
    """Every check that needs no work: arguments, config choices, data, checkpoints, inputs.

    Returns the official config (a dict) when an official checkpoint is used, else None; the
    official SDE and data-shape fields are then applied to `config` in place.
    """
    from sde_lib.app import controllable_run, factory, loading
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
            raise UsageError("--official_checkpoint is for --mode sample, eval, inpaint, colorize,"
                             " not train")
        if checkpoint:
            raise UsageError("pass either --checkpoint or --official_checkpoint, not both")
        if not Path(official_checkpoint).is_file():
            raise UsageError(f"--official_checkpoint={official_checkpoint!r}: no such file")
        official = loading.read_official_config(official_config)
        loading.apply_official_config(config, official)
    if checkpoint and not Path(checkpoint).is_file():
        raise UsageError(f"--checkpoint={checkpoint!r}: no such file")
    factory.check_config(config, check_network=official is None)
    controllable_run.check_inputs(config, modes, input_path, mask_path)
    if any(m in modes for m in ("train", "train_classifier", "eval")):
        check_data_available(config)
    if "train_classifier" in modes and factory.data_num_classes(config) < 2:
        raise UsageError(f"--mode train_classifier needs labelled data, but dataset"
                         f" {config.data.dataset!r} has no classes")
    needs_weights = [m for m in modes if m not in TRAINING_MODES]
    if needs_weights and "train" not in modes and official is None and not checkpoint:
        if not CheckpointDir(workdir).has_checkpoint():
            raise UsageError(
                f"--mode={needs_weights[0]} needs a trained model, but {workdir}/checkpoints"
                " has none: train first (--mode=train,sample), or pass --checkpoint=PATH or"
                " --official_checkpoint=PATH --official_config=JSON")
    guided = [m for m in modes if m in GUIDED_MODES]
    if factory.uses_classifier(config, modes):
        if classifier_checkpoint:
            if not Path(classifier_checkpoint).is_file():
                raise UsageError(f"--classifier_checkpoint={classifier_checkpoint!r}: no such file")
        elif not ("train_classifier" in modes and modes.index("train_classifier") < modes.index(guided[0])):
            if not CheckpointDir(loading.classifier_dir(workdir)).has_checkpoint():
                raise UsageError(loading.missing_classifier_message(workdir))
    return official


def run(config, modes, workdir, *, checkpoint=None, official_checkpoint=None, official_config=None,
        classifier_checkpoint=None, input_path=None, mask_path=None, device="auto", progress=True):
    """Check everything, then run `modes` in order (the command line without absl).

    Returns {mode: result}: the final step for train and train_classifier, the summaries of
    sample, eval, inpaint and colorize.

    Raises:
      ValueError, FileNotFoundError: user mistakes, before any work starts.
      NonFiniteLossError: training diverged (no checkpoint was written after the bad step).
    """
    import torch

    from sde_lib.app import (controllable_run, distributed, evaluation, factory, loading, sampling_run,
                             training)

    if isinstance(modes, str):
        modes = parse_modes(modes)
    official = prepare(config, modes, workdir, checkpoint=checkpoint,
                       official_checkpoint=official_checkpoint, official_config=official_config,
                       classifier_checkpoint=classifier_checkpoint, input_path=input_path,
                       mask_path=mask_path)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    ctx = distributed.init(device)
    progress = progress and ctx.is_main
    workdir = Path(workdir)
    model, classifier, results = None, None, {}
    try:
        for mode in modes:
            if mode in TRAINING_MODES:
                train = training.train if mode == "train" else training.train_classifier
                results[mode] = train(config, workdir, ctx, progress=progress)
                continue
            if model is None:
                if official is not None:
                    model = loading.load_official(config, official_checkpoint, official, ctx.device)
                else:
                    model = loading.load_trained(config, workdir, ctx.device, checkpoint)
                if ctx.is_main:
                    print(f"[{mode}] weights: {model.source} (step {model.step}, EMA)", flush=True)
            if factory.uses_classifier(config, [mode]) and classifier is None:
                classifier = loading.load_classifier(config, workdir, ctx.device, model.sde,
                                                     classifier_checkpoint)
                if ctx.is_main:
                    print(f"[{mode}] classifier: {classifier.source} (step {classifier.step}, EMA)",
                          flush=True)
            if mode == "sample":
                results[mode] = sampling_run.run(ctx, config, workdir, model, classifier=classifier,
                                                 progress=progress)
            elif mode == "eval":
                results[mode] = evaluation.run(ctx, config, workdir, model, progress=progress)
            elif mode == "inpaint":
                results[mode] = controllable_run.run_inpaint(
                    ctx, config, workdir, model, input_path=input_path, mask_path=mask_path,
                    classifier=classifier, progress=progress)
            else:
                results[mode] = controllable_run.run_colorize(
                    ctx, config, workdir, model, input_path=input_path, classifier=classifier,
                    progress=progress)
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
            classifier_checkpoint=FLAGS.classifier_checkpoint, input_path=FLAGS.input,
            mask_path=FLAGS.mask, device=FLAGS.device, progress=FLAGS.progress)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(3)
    except (ValueError, FileNotFoundError) as err:
        logging.debug("traceback of the error below (shown with --verbosity=1)", exc_info=True)
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
