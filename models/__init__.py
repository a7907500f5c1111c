"""Score networks for score-based generative modelling (Song et al., ICLR 2021).

* `ScoreMLP` ("mlp"): residual MLP for vector data (2-D toy problems).
* `DDPM` ("ddpm"): the U-Net of Ho et al. (2020).
* `NCSNpp` ("ncsnpp"): NCSN++ / DDPM++ (Song et al. 2021, Appendix H), one configurable U-Net.

Every network has forward(x, labels, y=None) -> tensor shaped like x. `build_model(config.model)`
is the factory; `models.official` imports official score_sde_pytorch configs and checkpoints.
"""
from .ddpm import DDPM
from .mlp import ScoreMLP
from .ncsnpp import NCSNpp
from .official import (OfficialScoreModel, build_from_official_config, load_checkpoint,
                       official_key_map)
from .registry import IGNORED_FIELDS, MODELS, build_model, model_options

__all__ = [
    "MODELS",
    "IGNORED_FIELDS",
    "build_model",
    "model_options",
    "ScoreMLP",
    "DDPM",
    "NCSNpp",
    "OfficialScoreModel",
    "build_from_official_config",
    "load_checkpoint",
    "official_key_map",
]
