"""The application: configs in, trained models, samples and likelihoods out.

Modules, one job each:
  factory        config -> SDE, network, score, loss, sampler and likelihood options; validation
  training       the training loop (Adam, warm-up, clipping, EMA, bf16, compile, DDP)
  checkpoints    atomic, checksummed checkpoints with a fallback chain
  ema            exponential moving average of the weights
  rng            capture/restore of every random stream (bitwise resumes)
  distributed    torchrun process groups, sharding and gathering
  loading        which weights sample/eval use (ours, or an official checkpoint)
  sampling_run   --mode sample
  evaluation     --mode eval (test loss, exact likelihood)
  plots          image grids and 2-D scatter plots
"""
