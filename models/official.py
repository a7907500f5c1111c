"""Build official score_sde_pytorch networks and import their checkpoints.

The official code (Song et al. 2021, github.com/yang-song/score_sde_pytorch) keeps every layer of
a network in one flat `all_modules` ModuleList, so its state-dict keys are `all_modules.<N>.<...>`
where N is the position in construction order. Our networks name their parts by role
(`down["16x16"].blocks[0].conv1`); `official_key_map` recovers N by walking our modules in the
official construction order (`_walk_official`, one walk for NCSN++ and DDPM).

Typical use:
    net = build_from_official_config(config)   # config: the official model/data/training groups
    state = load_checkpoint("checkpoint_26.pth", net)
    net.load_state_dict(state["ema"])          # strict: every key is accounted for
"""
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from .ddpm import DDPM
from .layers import (AttnBlock, Combine, Downsample, GaussianFourierProjection, PointwiseLinear,
                     ResBlock, Upsample, per_example)
from .ncsnpp import NCSNpp

__all__ = [
    "OfficialScoreModel",
    "official_sigmas",
    "build_from_official_config",
    "official_key_map",
    "convert_official_state_dict",
    "load_checkpoint",
]

SCALE_BY_SIGMA_MODES = ("none", "labels", "index")


def official_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> torch.Tensor:
    """The official `get_sigmas`: geometric noise levels from sigma_max to sigma_min, float64."""
    return torch.from_numpy(
        np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales)))


class OfficialScoreModel(nn.Module):
    """An official network as score_sde_pytorch runs it: input scaling, our network, scale-by-sigma.

    forward(x, labels) matches the official `model(x, labels)`:
      1. x -> 2x - 1 when the data are not centred (official NCSN++/DDPM do this inside the model);
      2. h = net(x, labels);
      3. scale_by_sigma: 'labels' divides h by the labels (continuous VE: the labels are sigmas);
         'index' divides by sigmas[labels.long()] (positional-embedding NCSN++ and DDPM index the
         discrete noise levels); 'none' leaves h.

    Args:
        net: our score network (NCSNpp or DDPM), built with scale_by_sigma=False.
        centered: whether the data are already in [-1, 1] (official `data.centered`).
        scale_by_sigma: 'none', 'labels' or 'index'.
        sigmas: (N,) float64 discrete noise levels (the official `sigmas` buffer).
    """

    def __init__(self, net: nn.Module, *, centered: bool, scale_by_sigma: str,
                 sigmas: torch.Tensor):
        super().__init__()
        if scale_by_sigma not in SCALE_BY_SIGMA_MODES:
            raise ValueError(
                f"scale_by_sigma must be one of {SCALE_BY_SIGMA_MODES}, got {scale_by_sigma!r}.")
        if getattr(net, "scale_by_sigma", False):
            raise ValueError("Build the inner network with scale_by_sigma=False; the wrapper "
                             "applies the official scaling.")
        self.net = net
        self.centered = bool(centered)
        self.scale_by_sigma = scale_by_sigma
        self.register_buffer("sigmas", sigmas.to(torch.float64))

    def forward(self, x: torch.Tensor, labels: torch.Tensor,
                y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, C, H, W) data in the official range, (B,) official labels -> (B, C, H, W).

        `y` exists for the common network interface; official networks have no classes, so it
        must be None.
        """
        if not self.centered:
            x = 2 * x - 1.0
        h = self.net(x, labels, y)
        if self.scale_by_sigma == "labels":
            h = h / per_example(labels, h)
        elif self.scale_by_sigma == "index":
            h = h / per_example(self.sigmas[labels.long()].to(h.dtype), h)
        return h


def _group(official: Mapping, name: str) -> Mapping:
    try:
        return official[name]
    except (KeyError, AttributeError) as err:
        raise ValueError(f"The official config has no {name!r} group.") from err


def build_from_official_config(official: Mapping) -> OfficialScoreModel:
    """Our network, wrapped to behave exactly like the official network built from `official`.

    Args:
        official: an official score_sde_pytorch config as a nested mapping (or ConfigDict) with the
            groups `model` (name 'ncsnpp' or 'ddpm', its options, sigma_min/sigma_max/num_scales,
            scale_by_sigma), `data` (image_size, num_channels, centered) and `training`
            (continuous).

    Returns:
        An `OfficialScoreModel` whose forward(x, labels) reproduces the official model's output.

    Raises:
        ValueError: for an unsupported model name or option.
    """
    model, data = _group(official, "model"), _group(official, "data")
    training = official["training"] if "training" in official else {}
    name = str(model["name"]).lower()
    if name not in _OFFICIAL_BUILDERS:
        raise ValueError(
            f"Official model {name!r} is not supported; valid: {sorted(_OFFICIAL_BUILDERS)}.")
    if not model.get("conditional", True):
        raise ValueError("Only noise-conditional official networks (model.conditional=True) are "
                         "supported; every released configuration is conditional.")
    net, scale_mode = _OFFICIAL_BUILDERS[name](model, data, training)
    sigmas = official_sigmas(model["sigma_min"], model["sigma_max"], model["num_scales"])
    return OfficialScoreModel(net, centered=data["centered"], scale_by_sigma=scale_mode,
                              sigmas=sigmas)


def _shared_options(model: Mapping, data: Mapping) -> Dict[str, Any]:
    return dict(image_size=int(data["image_size"]), num_channels=int(data["num_channels"]),
                nf=model["nf"], ch_mult=tuple(model["ch_mult"]),
                num_res_blocks=model["num_res_blocks"],
                attn_resolutions=tuple(model["attn_resolutions"]), dropout=model["dropout"],
                resamp_with_conv=model["resamp_with_conv"], nonlinearity=model["nonlinearity"],
                conditional=True, scale_by_sigma=False)


def _build_ncsnpp(model: Mapping, data: Mapping, training: Mapping) -> Tuple[nn.Module, str]:
    embedding = str(model["embedding_type"]).lower()
    if embedding == "fourier" and not training.get("continuous", True):
        raise ValueError("The official NCSN++ refuses Fourier embeddings without "
                         "training.continuous=True.")
    # Official NCSN++ ignores conv_size, normalization and attention_type (always 3x3, GroupNorm,
    # DDPM attention); so do we here.
    net = NCSNpp(**_shared_options(model, data), fir=model["fir"],
                 fir_kernel=tuple(model["fir_kernel"]), skip_rescale=model["skip_rescale"],
                 resblock_type=model["resblock_type"], progressive=model["progressive"],
                 progressive_input=model["progressive_input"],
                 progressive_combine=model["progressive_combine"], embedding_type=embedding,
                 fourier_scale=model["fourier_scale"], init_scale=model["init_scale"])
    if not model["scale_by_sigma"]:
        return net, "none"
    return net, "labels" if embedding == "fourier" else "index"


def _build_ddpm(model: Mapping, data: Mapping, training: Mapping) -> Tuple[nn.Module, str]:
    # The official DDPM ignores model.embedding_type and model.normalization.
    net = DDPM(**_shared_options(model, data))
    return net, "index" if model["scale_by_sigma"] else "none"


_OFFICIAL_BUILDERS = {"ncsnpp": _build_ncsnpp, "ddpm": _build_ddpm}


# ---------------------------------------------------------------------------------------------
# The official construction order, walked over our modules.
# ---------------------------------------------------------------------------------------------

def _walk_official(net: nn.Module) -> Iterator[nn.Module]:
    """Our modules of an NCSNpp or DDPM in the order the official constructor appends them to
    `all_modules`. Parts a network lacks (DDPM: Fourier features, pyramids) are None and skipped;
    the official pyramid resamplers without weights (input_skip's, output_skip's) are not in the
    official list."""
    if net.time_embed is not None:
        if net.time_embed.fourier is not None:
            yield net.time_embed.fourier
        yield net.time_embed.linear1
        yield net.time_embed.linear2
    yield net.conv_in
    for level in net.down.values():
        for i, block in enumerate(level.blocks):
            yield block
            if len(level.attns) > 0:
                yield level.attns[i]
        if level.downsample is not None:
            yield level.downsample
            if level.pyramid_combine is not None:
                yield level.pyramid_combine
            elif level.pyramid_downsample is not None:
                yield level.pyramid_downsample
    yield net.mid.block1
    yield net.mid.attn
    yield net.mid.block2
    for level in net.up.values():
        yield from level.blocks
        if level.attn is not None:
            yield level.attn
        if level.pyramid_norm is not None:  # output_skip (every level), residual (coarsest)
            yield level.pyramid_norm
            yield level.pyramid_conv
        elif level.pyramid_upsample is not None:  # residual: its learned upsampler
            yield level.pyramid_upsample
        if level.upsample is not None:
            yield level.upsample
    if net.norm_out is not None:
        yield net.norm_out
        yield net.conv_out


_OFFICIAL_NETWORKS = (NCSNpp, DDPM)


# Official attribute names of the parts of each layer, in official registration order.
def _resblock_parts(block: ResBlock) -> List[Tuple[str, str]]:
    shortcut = "NIN_0" if block.kind == "ddpm" else "Conv_2"
    return [("GroupNorm_0", "norm1"), ("Conv_0", "conv1"), ("Dense_0", "temb_proj"),
            ("GroupNorm_1", "norm2"), ("Conv_1", "conv2"), (shortcut, "shortcut")]


def _resample_parts(layer: nn.Module) -> List[Tuple[str, str]]:
    return [("Conv_0" if layer.fir_kernel is None else "Conv2d_0", "conv")]


_OFFICIAL_PARTS = {
    ResBlock: _resblock_parts,
    AttnBlock: lambda m: [("GroupNorm_0", "norm"), ("NIN_0", "q"), ("NIN_1", "k"),
                          ("NIN_2", "v"), ("NIN_3", "proj_out")],
    Downsample: _resample_parts,
    Upsample: _resample_parts,
    Combine: lambda m: [("Conv_0", "conv")],
}

# Leaf layers whose parameters the official code names differently.
_OFFICIAL_LEAF_NAMES = {
    PointwiseLinear: {"W": "weight", "b": "bias"},
    GaussianFourierProjection: {"W": "frequencies"},
}


def _official_params(module: nn.Module, official: str, ours: str) -> Iterator[Tuple[str, str]]:
    """(official key, our key) for every parameter of `module`, in official order."""
    kind = type(module)
    if kind in _OFFICIAL_PARTS:
        for official_part, our_part in _OFFICIAL_PARTS[kind](module):
            child = getattr(module, our_part)
            if child is not None:
                yield from _official_params(child, f"{official}{official_part}.",
                                            f"{ours}{our_part}.")
        return
    names = _OFFICIAL_LEAF_NAMES.get(kind)
    if names is None:
        if kind not in (nn.Linear, nn.Conv2d, nn.GroupNorm, nn.Embedding):
            raise TypeError(f"No official naming for layer {kind.__name__} at {ours!r}.")
        names = {name: name for name, _ in module.named_parameters(recurse=False)}
    for official_name, our_name in names.items():
        yield official + official_name, ours + our_name


def official_key_map(net: nn.Module) -> Dict[str, Optional[str]]:
    """Map official state-dict keys (without 'module.') to our keys, in official parameter order.

    The official float64 `sigmas` buffer maps to the wrapper's `sigmas` for an
    `OfficialScoreModel`, and to None (dropped: it is a function of the config) for a bare network.

    Args:
        net: an `OfficialScoreModel`, `NCSNpp` or `DDPM`.

    Raises:
        ValueError: if `net` has no official counterpart, or has parameters the official network
            lacks (e.g. a class embedding).
    """
    inner, prefix = (net.net, "net.") if isinstance(net, OfficialScoreModel) else (net, "")
    if type(inner) not in _OFFICIAL_NETWORKS:
        raise ValueError(f"{type(inner).__name__} has no official counterpart; supported: "
                         f"{[cls.__name__ for cls in _OFFICIAL_NETWORKS]}.")
    key_map: Dict[str, Optional[str]] = {"sigmas": "sigmas" if prefix else None}
    names = {id(module): name for name, module in inner.named_modules()}
    for index, module in enumerate(_walk_official(inner)):
        our_prefix = prefix + names[id(module)] + "."
        for official, ours in _official_params(module, f"all_modules.{index}.", our_prefix):
            key_map[official] = ours
    ours = {v for v in key_map.values() if v is not None}
    missing = [k for k in net.state_dict() if k not in ours]
    if missing:
        raise ValueError(f"These parameters of our network have no official counterpart: "
                         f"{missing[:10]}{' ...' if len(missing) > 10 else ''}.")
    return key_map


def _strip_module_prefix(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    return {(k[len("module."):] if k.startswith("module.") else k): v
            for k, v in state_dict.items()}


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor], net: nn.Module
                                 ) -> Dict[str, torch.Tensor]:
    """Rename an official model state dict to `net`'s keys, checking every key and shape.

    Args:
        state_dict: the official `model` state dict (keys with or without 'module.').
        net: the network to load into (see `official_key_map`).

    Returns:
        A state dict for `net.load_state_dict(..., strict=True)`, in `net`'s key order.

    Raises:
        ValueError: naming any official key without a counterpart, any of our keys without an
            official value, or any shape mismatch.
    """
    official = _strip_module_prefix(state_dict)
    key_map = official_key_map(net)
    unexpected = [k for k in official if k not in key_map]
    missing = [k for k in key_map if k not in official]
    if unexpected or missing:
        raise ValueError(
            f"Official state dict does not match the network: unexpected keys {unexpected[:10]}, "
            f"missing keys {missing[:10]}.")
    ours = net.state_dict()
    renamed = {}
    for official_key, our_key in key_map.items():
        if our_key is None:
            continue
        value = official[official_key]
        if tuple(value.shape) != tuple(ours[our_key].shape):
            raise ValueError(
                f"Shape mismatch: official {official_key!r} {tuple(value.shape)} vs our "
                f"{our_key!r} {tuple(ours[our_key].shape)}.")
        renamed[our_key] = value
    return {k: renamed[k] for k in ours}


def load_checkpoint(path: str, net: nn.Module) -> Dict[str, Any]:
    """Read a score_sde_pytorch checkpoint as state dicts for `net`.

    The checkpoint is {'optimizer', 'model', 'ema', 'step'}: 'model' is the DataParallel state dict
    ('module.' prefixes, a float64 'module.sigmas' buffer); 'ema' holds 'shadow_params', a list
    aligned with the official parameters that require grad, in `model.parameters()` order. Frozen
    parameters (NCSN++'s Fourier frequencies) are not in that list; the EMA dict takes them from
    the model weights.

    Args:
        path: checkpoint file (loaded with weights_only=True, on the CPU).
        net: our network for that checkpoint (an `OfficialScoreModel`, or a bare NCSNpp/DDPM).

    Returns:
        {'model': state_dict, 'ema': state_dict, 'step': int}; both dicts load with strict=True.

    Raises:
        ValueError: if the file is not an official checkpoint or any key/shape does not match.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping) or not {"model", "ema", "step"} <= set(checkpoint):
        raise ValueError(f"{path} is not a score_sde_pytorch checkpoint (needs 'model', 'ema' and "
                         f"'step').")
    model_sd = convert_official_state_dict(checkpoint["model"], net)
    ema_sd = _ema_state_dict(checkpoint["ema"], model_sd, net)
    return {"model": model_sd, "ema": ema_sd, "step": int(checkpoint["step"])}


def _ema_state_dict(ema: Mapping, model_sd: Dict[str, torch.Tensor], net: nn.Module
                    ) -> Dict[str, torch.Tensor]:
    """Place the official EMA shadow list into a state dict for `net`."""
    if not isinstance(ema, Mapping) or "shadow_params" not in ema:
        raise ValueError("The checkpoint's 'ema' entry has no 'shadow_params' list.")
    shadow = list(ema["shadow_params"])
    params = dict(net.named_parameters())
    trainable = [(official, ours) for official, ours in official_key_map(net).items()
                 if ours in params and params[ours].requires_grad]
    if len(shadow) != len(trainable):
        raise ValueError(f"EMA has {len(shadow)} shadow parameters; the network has "
                         f"{len(trainable)} trainable parameters.")
    ema_sd = dict(model_sd)
    for i, ((official, ours), value) in enumerate(zip(trainable, shadow)):
        if tuple(value.shape) != tuple(model_sd[ours].shape):
            raise ValueError(
                f"EMA shadow parameter {i} has shape {tuple(value.shape)}, but official "
                f"{official!r} (our {ours!r}) has shape {tuple(model_sd[ours].shape)}.")
        ema_sd[ours] = value
    return ema_sd
