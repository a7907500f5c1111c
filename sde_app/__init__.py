"""The application around the library `sde_lib`: configs in, trained models, samples and
likelihoods out. `main.py` is its entry point.

Modules, one job each:
  factory/       the only reader of the configuration: config files and command-line overrides,
                 config groups -> built, checked objects (`specs`)
  specs          the built objects a run receives (settings, model specs, the experiment)
  modes          the table of modes main.py runs
  data/          data sets (2-D toys, CIFAR-10, image folders), transforms, resumable loaders
  training       the training loop (Adam, warm-up, clipping, EMA, bf16, compile, DDP), label
                 dropout for class-conditional models, the classifier of classifier guidance
  checkpoints    atomic, checksummed checkpoints with a fallback chain
  ema            exponential moving average of the weights
  rng            capture/restore of every random stream (bitwise resumes)
  distributed    torchrun process groups, sharding and gathering
  loading        which weights sample/eval use (ours, or an official checkpoint), the classifier
  sampling_run   --mode sample (class labels, classifier-free and classifier guidance)
  controllable_run  --mode inpaint and colorize (PNG inputs; 2-D inpainting vs the exact conditional)
  evaluation     --mode eval (test loss, exact likelihood)
  plots          image grids and 2-D scatter plots
  jsonio         strict JSON output (no bare NaN)
"""
