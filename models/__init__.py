"""Score networks for score-based generative modelling (Song et al., ICLR 2021).

* `ScoreMLP` ("mlp"): residual MLP for vector data (2-D toy problems).
* `DDPM` ("ddpm"): the U-Net of Ho et al. (2020).
* `NCSNpp` ("ncsnpp"): NCSN++ / DDPM++ (Song et al. 2021, Appendix H), one configurable U-Net.

Every score network has forward(x, labels, y=None) -> tensor shaped like x. `build_model(config.model)`
is the factory; `models.official` imports official score_sde_pytorch configs and checkpoints.

Noise-conditional classifiers for classifier guidance (`CLASSIFIERS`, `build_classifier`) have
forward(x, labels) -> logits (B, num_classes): `MLPClassifier` ("mlp"), `ConvClassifier` ("conv").
"""
from .classifier import ConvClassifier, MLPClassifier
from .ddpm import DDPM
from .mlp import ScoreMLP
from .ncsnpp import NCSNpp
from .official import (OfficialScoreModel, build_from_official_config, load_checkpoint,
                       official_key_map)
from .registry import (CLASSIFIERS, IGNORED_FIELDS, MODELS, build_classifier, build_model,
                       model_options)

__all__ = [
    "MODELS",
    "CLASSIFIERS",
    "IGNORED_FIELDS",
    "build_model",
    "build_classifier",
    "model_options",
    "ScoreMLP",
    "DDPM",
    "NCSNpp",
    "MLPClassifier",
    "ConvClassifier",
    "OfficialScoreModel",
    "build_from_official_config",
    "load_checkpoint",
    "official_key_map",
]
