"""`config.sampling.batch_size = 0`: the batch from free memory (`sde_app.memory`). The byte counts
are checked against hand counts on a small network; the choice against its formula; the sample
mode end to end (the chosen batch is the one written to the summary, and the samples are those of
that batch size set by hand)."""
import numpy as np
import pytest
import torch

import main
from sde_app import memory
from test_app_cli import tiny_sampling, trained  # noqa: F401  (the module fixture)
from test_app_training import tiny_toy


def small_net():
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.SiLU(), torch.nn.Linear(8, 3))


def test_module_output_bytes_counts_every_module_output():
    net = small_net()
    x = torch.zeros(5, 2)
    counted = memory.module_output_bytes(net, lambda: net(x))
    # Linear(2, 8), SiLU, Linear(8, 3) and the Sequential's own output, float32, batch 5.
    assert counted == 4 * 5 * (8 + 8 + 3 + 3)
    assert all(not m._forward_hooks for m in net.modules())  # the hooks are removed


def test_bytes_per_sample_on_the_cpu_is_the_outputs_and_the_state_times_the_safety_factor():
    net = small_net()
    per_sample, how = memory.bytes_per_sample(net, lambda x, t: net(x), (2,), "cpu")
    outputs = 4 * memory.PROBE_BATCH * (8 + 8 + 3 + 3)
    state = 4 * memory.PROBE_BATCH * 2
    assert per_sample == int(memory.SAFETY * (outputs + state) / memory.PROBE_BATCH)
    assert "upper bound" in how


@pytest.mark.parametrize("free, num_samples", [(10_000, 1000), (10 ** 9, 50), (1000, 3)])
def test_choice_is_the_largest_batch_in_the_fraction_of_free_memory(free, num_samples):
    net = small_net()
    per_sample, _ = memory.bytes_per_sample(net, lambda x, t: net(x), (2,), "cpu")
    choice = memory.choose_batch_size(net, lambda x, t: net(x), (2,), "cpu", num_samples=num_samples,
                                      free_bytes=free)
    assert choice.batch_size == min(int(memory.DEFAULT_FRACTION * free // per_sample), num_samples)
    assert choice.batch_size * per_sample <= memory.DEFAULT_FRACTION * free
    assert choice.free_bytes == free and choice.bytes_per_sample == per_sample
    assert f"batch size {choice.batch_size}" in choice.describe()


def test_nothing_fits_is_one_line_naming_the_field():
    net = small_net()
    with pytest.raises(ValueError) as err:
        memory.choose_batch_size(net, lambda x, t: net(x), (2,), "cpu", num_samples=10, free_bytes=10)
    assert "config.sampling.batch_size=0" in str(err.value) and "\n" not in str(err.value)


def test_free_memory_of_the_host_is_positive_and_at_most_the_total():
    free = memory.free_memory_bytes("cpu")
    with open("/proc/meminfo") as f:
        total = int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) * 1024
    assert 0 < free <= total


def test_sample_mode_with_batch_size_zero_uses_the_chosen_batch(trained, tmp_path):  # noqa: F811
    workdir, _ = trained
    config = tiny_sampling(tiny_toy(n_iters=20), "ddim")
    config.sampling.batch_size = 0
    automatic = main.run(config, "sample", workdir, progress=False)["sample"]
    # The toy's MLP is tiny: all 20 samples fit in one batch on any machine that runs the tests.
    assert automatic["batch_size"] == config.sampling.num_samples
    first = np.load(automatic["files"]["npz"])["samples"]
    config.sampling.batch_size = automatic["batch_size"]
    by_hand = main.run(config, "sample", workdir, progress=False)["sample"]
    np.testing.assert_array_equal(np.load(by_hand["files"]["npz"])["samples"], first)
