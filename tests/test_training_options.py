"""Training-step options (channels-last, Adam kernels, activation checkpointing, bf16, compile):
each gives the loss and gradients of the plain fp32 step on a small network, resumes from a
checkpoint written without it, and bad values are refused up front."""
import shutil

import pytest
import torch

from configs import vp_cifar10
from sde_app import checkpoints, distributed, factory, training
from sde_app.data.testing import write_fake_cifar10

# What each option may change. fp32 options only reorder sums (channels-last convolutions), so the
# loss and gradients agree to a few float32 roundings: relative 1e-4 is ~1000 unit roundoffs
# (2^-24) of headroom over the network's depth; so does checkpointing, which recomputes the same
# kernels with the same dropout masks but sums the shared time embedding's gradient in another
# order. The Adam kernels see the same first gradient, and their weights then differ in the last
# bits (later gradients by as little: 1e-6 relative). bf16 rounds every matmul/conv input to
# 8 significant bits (unit roundoff 2^-9 = 2e-3); over the ~10 layers of the small network the
# errors add up to a few 1e-3 relative on the loss and a few 1e-2 on the gradient vector.
OPTIONS = {
    "channels_last": (dict(channels_last=True), {}, 1e-4, 1e-4),
    "adam_fused": ({}, dict(implementation="fused"), 1e-6, 1e-6),
    "adam_foreach": ({}, dict(implementation="foreach"), 1e-6, 1e-6),
    "checkpointing": (dict(checkpoint_resolutions=(8, 4)), {}, 1e-4, 1e-4),
    "bf16": (dict(mixed_precision="bf16"), {}, 2e-2, 6e-2),
}


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    write_fake_cifar10(root, n_train=8, n_test=4)
    return root


def tiny(root, training_options=None, optim_options=None, dropout=0.0, n_iters=2):
    """DDPM++ (vp_cifar10) on 8x8 images, two levels, 8 base channels; the plain step uses the
    per-tensor Adam kernels and fp32 in the default (contiguous) layout."""
    c = vp_cifar10.get_config()
    c.data.root, c.data.image_size = str(root), 8
    m = c.model
    m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions, m.dropout = 8, (1, 2), 1, (4,), dropout
    t = c.training
    t.batch_size, t.n_iters, t.log_freq, t.eval_freq = 4, n_iters, 1, 0
    t.checkpoint_freq, t.snapshot_freq, t.snapshot_sampling = 1, 0, False
    c.optim.warmup, c.optim.implementation = 0, "for_loop"
    c.threads = 1
    for k, v in (training_options or {}).items():
        t[k] = v
    for k, v in (optim_options or {}).items():
        c.optim[k] = v
    return c


def trainer(config, workdir):
    exp = factory.build_experiment(config, ("train",))
    tr = training.Trainer(exp.train, exp, workdir, distributed.Context(), progress=False)
    tr._bad = torch.tensor([-1.0, 0.0, 0.0])
    return tr


def step_loss_and_grads(tr, x):
    """One `train_step` on x: its loss and the (clipped) gradient as one flat vector."""
    out = tr.train_step(x)
    grads = torch.cat([p.grad.float().flatten() for p in tr.net.parameters()])
    return out["loss"], grads


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_option_gives_the_plain_loss_and_gradients(option, cifar_root, tmp_path):
    train_opts, optim_opts, loss_tol, grad_tol = OPTIONS[option]
    dropout = 0.1 if option == "checkpointing" else 0.0  # the recomputation replays the masks
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = trainer(tiny(cifar_root, dropout=dropout), tmp_path / "plain")
    other = trainer(tiny(cifar_root, train_opts, optim_opts, dropout=dropout), tmp_path / "other")
    for step in range(2):  # the second step runs on weights the optimizer has moved
        other.net.load_state_dict(plain.net.state_dict())  # the same weights (Adam's first step
        rng_state = torch.get_rng_state()  # turns rounding into +-lr); the same dropout masks
        loss0, grad0 = step_loss_and_grads(plain, x)
        torch.set_rng_state(rng_state)
        loss1, grad1 = step_loss_and_grads(other, x)
        assert abs(loss1 - loss0).item() <= loss_tol * loss0.item(), (step, loss0, loss1)
        assert relative(grad1, grad0) <= grad_tol, step
        if option.startswith("adam"):  # the same gradients in: the same weights out, to rounding
            w0 = torch.cat([p.detach().flatten() for p in plain.net.parameters()])
            w1 = torch.cat([p.detach().flatten() for p in other.net.parameters()])
            assert relative(w1, w0) <= 1e-6
    if option == "channels_last":
        conv = plain.net.conv_in.weight
        assert other.net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("option", ["channels_last", "adam_fused", "checkpointing", "bf16"])
def test_option_resumes_from_a_plain_checkpoint(option, cifar_root, tmp_path):
    """A plain run stops at step 2; the run continued with the option to step 3 takes the same
    third step as the plain run continued (within the option's tolerance)."""
    train_opts, optim_opts, loss_tol, _ = OPTIONS[option]
    training.train(factory.build_experiment(tiny(cifar_root)), tmp_path / "plain",
                   distributed.Context(), progress=False)
    shutil.copytree(tmp_path / "plain", tmp_path / "other")
    continued = {}
    for name, config in (("plain", tiny(cifar_root, n_iters=3)),
                         ("other", tiny(cifar_root, train_opts, optim_opts, n_iters=3))):
        tr = trainer(config, tmp_path / name)
        assert tr.step == 2 and tr.resumed_from is not None
        losses = []
        step_fn = tr.train_step
        tr.train_step = lambda *a: (lambda out: losses.append(out["loss"]) or out)(step_fn(*a))
        assert tr.run() == 3
        continued[name] = losses[0]
        state = checkpoints.load_state(checkpoints.CheckpointDir(tmp_path / name).resume_path)
        continued[name + "_weights"] = torch.cat([v.float().flatten() for v in state["model"].values()])
    assert abs(continued["other"] - continued["plain"]).item() <= max(loss_tol, 1e-6) * continued["plain"].item()
    # Adam's first steps move each weight by about lr = 2e-4 whatever the gradient's size, so
    # weights whose gradients differ in rounding may differ by up to 2 lr; the rest agree.
    assert (continued["other_weights"] - continued["plain_weights"]).abs().max().item() <= 4.1e-4


def test_compile_gives_the_plain_loss_and_gradients(tmp_path, monkeypatch):
    """`training.compile` on the toy network: the same loss and gradients to float32 rounding.
    The graph is captured (dynamo) and differentiated (AOT autograd) as always, but run by the
    "aot_eager" backend instead of inductor's generated kernels, whose C++ compilation takes
    ~30 s here; benchmarks/gpu_check.py runs inductor on DDPM++ and NCSN++."""
    from configs import vp_toy

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile_(model, backend="aot_eager", **kw))

    def toy(compile_):
        c = vp_toy.get_config()
        c.model.hidden_dim, c.model.num_blocks = 32, 1
        c.training.batch_size, c.training.n_iters, c.training.compile = 16, 2, compile_
        c.data.num_train, c.data.num_test = 64, 16
        c.optim.warmup = 0
        return c

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    plain, compiled = trainer(toy(False), tmp_path / "plain"), trainer(toy(True), tmp_path / "compiled")
    loss0, grad0 = step_loss_and_grads(plain, x)
    loss1, grad1 = step_loss_and_grads(compiled, x)
    assert abs(loss1 - loss0).item() <= 1e-5 * loss0.item()
    assert relative(grad1, grad0) <= 1e-4


@pytest.mark.parametrize("field, value, words", [
    ("training.checkpoint_resolutions", (8, 5), ["[5]", "ladder [8, 4]"]),
    ("training.checkpoint_resolutions", (8, 0), ["checkpoint_resolutions=(8, 0)", "e.g. (32, 16)"]),
    ("optim.implementation", "apex", ["config.optim.implementation='apex'", "fused"]),
    ("training.mixed_precision", "fp16", ["config.training.mixed_precision='fp16'", "bf16"]),
])
def test_bad_option_values_are_refused_up_front(field, value, words, cifar_root):
    config = tiny(cifar_root)
    group, name = field.split(".")
    config[group][name] = value
    with pytest.raises(ValueError) as err:
        factory.build_experiment(config, ("train",))
    for w in words:
        assert w in str(err.value), str(err.value)


def test_sampling_compile_routes_score_calls_through_the_compiled_network(cifar_root, tmp_path, monkeypatch):
    """`sampling.compile`: the loaded model's score calls go through `torch.compile(net,
    dynamic=False)` (static shapes: one compilation per batch shape); off, through the network.
    (torch.compile is replaced by a recorder here: compiling the U-Net takes minutes on a CPU.)"""
    from sde_app import loading

    config = tiny(cifar_root)
    training.train(factory.build_experiment(config), tmp_path, distributed.Context(), progress=False)
    calls = []

    def recording_compile(net, **kwargs):
        calls.append(kwargs)

        def compiled(*args, **kw):
            calls.append("call")
            return net(*args, **kw)
        return compiled

    monkeypatch.setattr(torch, "compile", recording_compile)
    x, t = torch.randn(2, 3, 8, 8), torch.full((2,), 0.5)
    plain = loading.load_trained(factory.build_experiment(config), tmp_path, torch.device("cpu"))
    config.sampling.compile = True
    compiled = loading.load_trained(factory.build_experiment(config), tmp_path, torch.device("cpu"))
    assert calls == [{"dynamic": False}]
    with torch.no_grad():
        assert torch.equal(compiled.score_fn(x, t), plain.score_fn(x, t))
    assert calls[-1] == "call"
