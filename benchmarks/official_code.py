"""The official score_sde_pytorch (Song et al., commit cb1f359) imported beside this project in one
process, so that benchmarks can interleave its training step with ours.

Its top-level modules (`models`, `sde_lib`, `configs`, `losses`, `op`) share names with this
project's packages, so they are imported with this project's modules set aside, then taken out of
`sys.modules` again (the official functions keep the module objects they bound at import). Its CUDA
kernels (`op/`, compiled at import) are not built: on the CPU the official code runs its own
native fallbacks, and on a GPU the official `upfirdn2d` / `fused_act` are not needed by the three
networks timed here (DDPM++ and DDPM resample without FIR; NCSN++'s FIR path then uses the
native fallback, which makes the official NCSN++ step slower on a GPU than with its kernels).

Get the code with e.g. `git clone https://github.com/yang-song/score_sde_pytorch` and
`git checkout cb1f359`, or `git --git-dir=<mirror> archive cb1f359 | tar -x -C <dir>`.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.utils.cpp_extension

# The official CIFAR-10 configurations of the networks (files of the official repository).
OFFICIAL_CONFIGS = {
    "ddpmpp": "configs/vp/cifar10_ddpmpp_continuous.py",
    "ncsnpp": "configs/ve/cifar10_ncsnpp_continuous.py",
    "ddpm": "configs/vp/ddpm/cifar10.py",
}
_SHARED_NAMES = ("models", "sde_lib", "configs", "losses", "op", "likelihood", "sampling", "utils")


def _top(name: str) -> str:
    return name.split(".")[0]


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_official(repo: str) -> types.SimpleNamespace:
    """The official modules `losses`, `sde_lib`, `mutils` (models.utils), `ema` (models.ema) and
    `get_config(network)` (the official config of `OFFICIAL_CONFIGS[network]`).

    Raises:
      FileNotFoundError: `repo` is not a checkout of the official code.
    """
    repo = str(Path(repo).resolve())
    if not (Path(repo) / "losses.py").is_file() or not (Path(repo) / "models" / "ncsnpp.py").is_file():
        raise FileNotFoundError(f"{repo} is not a score_sde_pytorch checkout (no losses.py, models/ncsnpp.py)")
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if _top(k) in _SHARED_NAMES}
    build_extension = torch.utils.cpp_extension.load
    torch.utils.cpp_extension.load = lambda *args, **kwargs: None  # no CUDA kernels (see above)
    sys.path.insert(0, repo)
    try:
        mods = {name: importlib.import_module(name) for name in
                ("losses", "sde_lib", "models.utils", "models.ema", "models.ncsnpp", "models.ddpm")}
        # Its `configs/` has no __init__.py: this project's installed `configs` would win the
        # import, so the official config files are loaded from their paths.
        package = types.ModuleType("configs")
        package.__path__ = [str(Path(repo) / "configs")]
        sys.modules["configs"] = package
        sys.modules["configs.default_cifar10_configs"] = _load_file(
            "configs.default_cifar10_configs", Path(repo) / "configs" / "default_cifar10_configs.py")
        config_modules = {network: _load_file(f"_official_config_{network}", Path(repo) / path)
                          for network, path in OFFICIAL_CONFIGS.items()}
    finally:
        sys.path.remove(repo)
        torch.utils.cpp_extension.load = build_extension
        for k in [k for k in sys.modules if _top(k) in _SHARED_NAMES]:
            del sys.modules[k]
        sys.modules.update(ours)

    def get_config(network: str):
        config = config_modules[network].get_config()
        config.device = torch.device("cpu")
        return config

    return types.SimpleNamespace(losses=mods["losses"], sde_lib=mods["sde_lib"], mutils=mods["models.utils"],
                                 ema=mods["models.ema"], get_config=get_config)


def official_train_step(official: types.SimpleNamespace, network: str, batch_size: int, device):
    """(step(batch), model): the official training step (`run_lib.train`'s objects: model in
    DataParallel, EMA, Adam with warm-up and clipping, `losses.get_step_fn`) on the network's
    official CIFAR-10 config; step returns the loss tensor (read only when logged, as run_lib)."""
    config = official.get_config(network)
    config.device = torch.device(device)
    config.training.batch_size = batch_size
    model = official.mutils.create_model(config)
    ema = official.ema.ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate)
    optimizer = official.losses.get_optimizer(config, model.parameters())
    state = dict(optimizer=optimizer, model=model, ema=ema, step=0)
    name = config.training.sde.lower()
    if name == "vpsde":
        sde = official.sde_lib.VPSDE(beta_min=config.model.beta_min, beta_max=config.model.beta_max,
                                     N=config.model.num_scales)
    elif name == "subvpsde":
        sde = official.sde_lib.subVPSDE(beta_min=config.model.beta_min, beta_max=config.model.beta_max,
                                        N=config.model.num_scales)
    else:
        sde = official.sde_lib.VESDE(sigma_min=config.model.sigma_min, sigma_max=config.model.sigma_max,
                                     N=config.model.num_scales)
    step_fn = official.losses.get_step_fn(
        sde, train=True, optimize_fn=official.losses.optimization_manager(config),
        reduce_mean=config.training.reduce_mean, continuous=config.training.continuous,
        likelihood_weighting=config.training.likelihood_weighting)
    return (lambda batch: step_fn(state, batch)), model
