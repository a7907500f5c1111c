"""The application: configs in, trained models, samples and likelihoods out.

Modules, one job each:
  factory        config -> SDE, network, score, loss, sampler and likelihood options; validation
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
"""
