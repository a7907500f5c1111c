"""Test-wide settings."""
import torch

# One intra-op thread: the tests run many small tensor operations, for which thread start-up and
# spinning cost far more than they save (30x slower on a busy 2-core machine).
torch.set_num_threads(1)
