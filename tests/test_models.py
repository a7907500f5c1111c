"""Tests of the score networks: registry/factory, shapes, errors, conditioning, FIR resampling."""
import pytest
import torch
import torch.nn.functional as F

from models import DDPM, MODELS, NCSNpp, ScoreMLP, build_model, fir, model_options

TINY_UNET = dict(image_size=16, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small networks run faster and steadier on one intra-op thread on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _labels_for(net, batch):
    """Valid labels: sigmas for Fourier-embedding networks, t*999 otherwise."""
    fourier = getattr(getattr(net, "time_embed", None), "fourier", None) is not None
    return torch.rand(batch) * 5 + 0.01 if fourier else torch.rand(batch) * 999


# ---------------------------------------------------------------------------------------------
# Registry and factory
# ---------------------------------------------------------------------------------------------

def test_registry_is_a_literal_dict_of_the_three_networks():
    assert MODELS == {"mlp": ScoreMLP, "ddpm": DDPM, "ncsnpp": NCSNpp}


def test_unknown_model_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown model 'unet'.*\['ddpm', 'mlp', 'ncsnpp'\]"):
        build_model({"name": "unet"})
    with pytest.raises(ValueError, match="needs a 'name'"):
        build_model({"nf": 32})


def test_unknown_field_is_an_error_but_other_networks_fields_are_ignored():
    with pytest.raises(ValueError, match=r"Unknown config.model field\(s\) \['nff'\]"):
        build_model({"name": "ncsnpp", "nff": 32, **TINY_UNET})
    # 'fir' belongs to NCSN++, 'hidden_dim' to the MLP; sigma_max/ema_rate are not network fields.
    net = build_model({"name": "ddpm", "fir": True, "hidden_dim": 64, "sigma_max": 50.0,
                       "ema_rate": 0.999, "num_channels": 3, **dict(TINY_UNET, nf=32)})
    assert isinstance(net, DDPM) and net.nf == 32


def test_build_model_accepts_configdict_and_rejects_non_mappings():
    ml_collections = pytest.importorskip("ml_collections")
    cfg = ml_collections.ConfigDict({"name": "mlp", "data_dim": 3, "hidden_dim": 32,
                                     "num_blocks": 2})
    net = build_model(cfg)
    assert isinstance(net, ScoreMLP)
    assert net(torch.randn(4, 3), torch.rand(4) * 999).shape == (4, 3)
    with pytest.raises(TypeError):
        build_model(["name", "mlp"])


def test_model_options_document_every_constructor_argument():
    assert {"nf", "ch_mult", "fir", "progressive", "num_classes"} <= set(model_options("ncsnpp"))
    with pytest.raises(ValueError, match="valid"):
        model_options("nope")


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------

def test_mlp_keeps_shape_and_has_toy_size():
    net = ScoreMLP()
    assert 100_000 <= sum(p.numel() for p in net.parameters()) <= 200_000
    x = torch.randn(7, 2)
    assert net(x, torch.rand(7) * 999).shape == (7, 2)
    net = ScoreMLP(embedding_type="fourier", scale_by_sigma=True, hidden_dim=32)
    assert net(x, torch.rand(7) + 0.1).shape == (7, 2)


@pytest.mark.parametrize("name", ["ddpm", "ncsnpp"])
@pytest.mark.parametrize("size", [16, 32])
def test_unets_keep_shape_small(name, size):
    opts = dict(TINY_UNET, image_size=size, attn_resolutions=(size // 2,),
                nf=32 if name == "ddpm" else 16)
    net = build_model({"name": name, **opts}).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = net(x, _labels_for(net, 2))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["ddpm", "ncsnpp"])
@pytest.mark.parametrize("size, ch_mult", [(64, (1, 2, 2, 2)), (256, (1, 1, 2, 2, 2, 2, 2))])
def test_unets_keep_shape_full_size_on_meta(name, size, ch_mult):
    # Full widths on the meta device: shapes are propagated, nothing is allocated.
    with torch.device("meta"):
        net = build_model({"name": name, "image_size": size, "ch_mult": ch_mult,
                           "num_res_blocks": 2, "attn_resolutions": (16,)})
        x = torch.empty(2, 3, size, size)
        labels = torch.empty(2)
        assert net(x, labels).shape == x.shape


NCSNPP_VARIANTS = [
    dict(embedding_type="fourier", resblock_type="biggan", fir=True, progressive="none",
         progressive_input="residual"),                               # NCSN++ (VE)
    dict(embedding_type="positional", resblock_type="biggan", fir=False, progressive="none",
         progressive_input="none"),                                   # DDPM++ (VP)
    dict(embedding_type="fourier", resblock_type="biggan", fir=True, progressive="output_skip",
         progressive_input="input_skip"),                             # CelebA-HQ NCSN++
    dict(embedding_type="positional", resblock_type="ddpm", fir=True, progressive="residual",
         progressive_input="input_skip", progressive_combine="cat"),
    dict(embedding_type="positional", resblock_type="ddpm", fir=False, progressive="residual",
         progressive_input="residual", resamp_with_conv=False, skip_rescale=False),
    dict(embedding_type="fourier", resblock_type="biggan", fir=False, progressive="output_skip",
         progressive_input="input_skip", progressive_combine="cat", conditional=False),
]


@pytest.mark.parametrize("variant", NCSNPP_VARIANTS)
def test_ncsnpp_variants_forward_and_backward(variant):
    torch.manual_seed(0)
    net = NCSNpp(**TINY_UNET, init_scale=1.0, **variant)
    x = torch.randn(2, 3, 16, 16)
    out = net(x, _labels_for(net, 2))
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_fourier_frequencies_are_frozen_and_scale_by_sigma_divides_by_labels():
    torch.manual_seed(0)
    net = NCSNpp(**TINY_UNET, init_scale=1.0).eval()
    assert not net.time_embed.fourier.frequencies.requires_grad
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 2.0])
    with torch.no_grad():
        plain = net(x, sigma)
        net.scale_by_sigma = True
        scaled = net(x, sigma)
    torch.testing.assert_close(scaled, plain / sigma[:, None, None, None])


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    net = NCSNpp(**TINY_UNET, init_scale=1.0).eval()
    x, labels = torch.randn(2, 3, 16, 16), torch.rand(2) + 0.1
    with torch.no_grad():
        ref = net(x, labels)
        net_cl = net.to(memory_format=torch.channels_last)
        out = net_cl(x.contiguous(memory_format=torch.channels_last), labels)
    # Different memory layout, different summation order: float32 rounding only.
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_ncsnpp_traces_without_graph_breaks():
    # fullgraph=True fails on any graph break; the eager backend skips code generation (fast).
    torch.manual_seed(0)
    net = NCSNpp(**TINY_UNET, init_scale=1.0).eval()
    x, labels = torch.randn(2, 3, 16, 16), torch.rand(2) + 0.1
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, labels), net(x, labels))


# ---------------------------------------------------------------------------------------------
# Construction and call errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ddpm", "ncsnpp"])
def test_image_size_must_fit_the_ladder(name):
    with pytest.raises(ValueError, match=r"image_size=30 is not divisible by .*=8"):
        build_model({"name": name, "image_size": 30, "ch_mult": (1, 2, 2, 2)})
    with pytest.raises(ValueError, match="image_size=17"):
        build_model({"name": name, "image_size": 17, "ch_mult": (1, 2)})


@pytest.mark.parametrize("name", ["ddpm", "ncsnpp"])
def test_attention_resolution_must_exist(name):
    with pytest.raises(ValueError, match=r"attn_resolutions contains 12.*\[32, 16, 8, 4\]"):
        build_model({"name": name, "image_size": 32, "attn_resolutions": (12,)})


@pytest.mark.parametrize("option, value", [
    ("progressive", "skip"), ("progressive_input", "output_skip"), ("embedding_type", "learned"),
    ("resblock_type", "resnet"), ("progressive_combine", "mean"), ("nonlinearity", "gelu"),
    ("normalization", "InstanceNorm"), ("attention_type", "flash"), ("conv_size", 5),
])
def test_ncsnpp_rejects_unknown_option_values(option, value):
    with pytest.raises(ValueError, match=option if option != "conv_size" else "conv_size=5"):
        NCSNpp(**TINY_UNET, **{option: value})


def test_widths_must_split_into_groups():
    with pytest.raises(ValueError, match="GroupNorm cannot split 48 channels into 32 groups"):
        DDPM(**dict(TINY_UNET, nf=48))
    with pytest.raises(ValueError, match="always uses the sinusoidal"):
        DDPM(**dict(TINY_UNET, nf=32), embedding_type="fourier")


def test_forward_checks_shapes():
    net = NCSNpp(**TINY_UNET)
    with pytest.raises(ValueError, match=r"Expected x of shape \(B, 3, 16, 16\)"):
        net(torch.randn(2, 3, 32, 32), torch.ones(2))
    with pytest.raises(ValueError, match=r"labels must have shape \(B,\) = \(2,\)"):
        net(torch.randn(2, 3, 16, 16), torch.ones(2, 1))
    with pytest.raises(ValueError, match="num_classes=0"):
        net(torch.randn(2, 3, 16, 16), torch.ones(2), y=torch.zeros(2, dtype=torch.long))
    # A scalar label is broadcast over the batch.
    assert net(torch.randn(2, 3, 16, 16), torch.tensor(1.0)).shape == (2, 3, 16, 16)


# ---------------------------------------------------------------------------------------------
# Class conditioning
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "ddpm", "ncsnpp"])
def test_class_embedding_has_a_null_row_used_when_y_is_none(name):
    torch.manual_seed(0)
    opts = {"mlp": dict(hidden_dim=32), "ddpm": dict(TINY_UNET, nf=32),
            "ncsnpp": dict(TINY_UNET, init_scale=1.0)}[name]
    net = build_model({"name": name, "num_classes": 3, **opts}).eval()
    assert net.class_embed.num_embeddings == 4
    with torch.no_grad():  # near-zero output layers at init hide the conditioning; perturb
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 2) if name == "mlp" else torch.randn(2, 3, 16, 16)
    labels = _labels_for(net, 2)
    with torch.no_grad():
        null = net(x, labels)
        explicit_null = net(x, labels, y=torch.full((2,), 3))
        class0 = net(x, labels, y=torch.zeros(2, dtype=torch.long))
        class1 = net(x, labels, y=torch.ones(2, dtype=torch.long))
    torch.testing.assert_close(null, explicit_null, rtol=0, atol=0)
    assert not torch.allclose(class0, class1) and not torch.allclose(class0, null)


def test_class_only_network_without_time_conditioning():
    net = ScoreMLP(hidden_dim=32, conditional=False, num_classes=2)
    assert net.time_embed is None
    assert net(torch.randn(4, 2), torch.zeros(4), y=torch.tensor([0, 1, 2, 1])).shape == (4, 2)


# ---------------------------------------------------------------------------------------------
# FIR resampling against a zero-insertion reference
# ---------------------------------------------------------------------------------------------

def upfirdn2d_reference(x, kernel, up=1, down=1, pad=(0, 0)):
    """StyleGAN2 upfirdn2d, written the straightforward way: insert zeros, pad, convolve
    (with the flipped kernel), keep every `down`-th sample."""
    b, c, h, w = x.shape
    y = x.reshape(b * c, 1, h, 1, w, 1)
    y = F.pad(y, [0, up - 1, 0, 0, 0, up - 1]).reshape(b * c, 1, h * up, w * up)
    y = F.pad(y, [pad[0], pad[1], pad[0], pad[1]])
    y = F.conv2d(y, torch.flip(kernel, (0, 1))[None, None].to(y.dtype))
    y = y[:, :, ::down, ::down]
    return y.reshape(b, c, y.shape[-2], y.shape[-1])


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 1), (1, 2, 1), (2, 1, 3, 7), (1, 4, 6, 4, 1)])
def test_fir_resampling_matches_zero_insertion_reference(taps):
    torch.manual_seed(0)
    kernel = fir.fir_kernel_2d(taps)
    size = kernel.shape[0]
    x = torch.randn(2, 5, 8, 8)
    weight = torch.randn(4, 5, 3, 3)
    p = size - 2
    expected = {
        "down": upfirdn2d_reference(x, kernel, down=2, pad=((p + 1) // 2, p // 2)),
        "up": upfirdn2d_reference(x, kernel * 4, up=2, pad=((p + 1) // 2 + 1, p // 2)),
    }
    q = p + 2  # conv_downsample_2d: p = (K - 2) + (3 - 1)
    expected["conv_down"] = F.conv2d(
        upfirdn2d_reference(x, kernel, pad=((q + 1) // 2, q // 2)), weight, stride=2)
    # upsample_conv_2d: zero-upsample, correlate with the weight ('full'), then blur.
    zeros = F.pad(x.reshape(2, 5, 8, 1, 8, 1), [0, 1, 0, 0, 0, 1]).reshape(2, 5, 16, 16)
    z = F.conv2d(F.pad(zeros[:, :, :15, :15], [2, 2, 2, 2]), weight)
    r = p - 2
    expected["up_conv"] = upfirdn2d_reference(z, kernel * 4, pad=((r + 1) // 2 + 1, r // 2 + 1))
    got = {
        "down": fir.downsample_2d(x, kernel),
        "up": fir.upsample_2d(x, kernel),
        "conv_down": fir.conv_downsample_2d(x, weight, kernel),
        "up_conv": fir.upsample_conv_2d(x, weight, kernel),
    }
    for key in expected:
        assert got[key].shape == expected[key].shape, key
        # 1e-6 relative to the magnitude: float32 rounding of sums of up to 45 products.
        atol = 1e-6 * max(1.0, expected[key].abs().max().item())
        torch.testing.assert_close(got[key], expected[key], atol=atol, rtol=0, msg=key)


def test_fir_kernel_rejects_degenerate_taps():
    with pytest.raises(ValueError, match="at least 2 taps"):
        fir.fir_kernel_2d([1])
    with pytest.raises(ValueError, match="sum to zero"):
        fir.fir_kernel_2d([1, -1])
