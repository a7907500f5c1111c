"""The config fields of the parameterisations, objectives and processes of issue 12: every new
config builds, every bad value is one ValueError naming the field before any work."""
import importlib

import pytest

from configs import default_config
from sde_app import factory

NEW_CONFIGS = ["flow_toy", "edm_toy", "edm_cifar10"]


def get_config(name):
    return importlib.import_module(f"configs.{name}").get_config()


def _set(config, field, value):
    *groups, key = field.split(".")
    node = config
    for g in groups:
        node = node[g]
    node[key] = value


@pytest.mark.parametrize("field,value,words", [
    ("training.weighting", "snr", ["training.weighting", "'snr'", "min_snr"]),
    ("training.proposal", "normal", ["training.proposal", "lognormal"]),
    ("training.P_std", 0.0, ["training.P_std", "> 0"]),
    ("training.min_snr_gamma", -1.0, ["training.min_snr_gamma"]),
    ("model.sigma_data", 0.0, ["model.sigma_data", "> 0"]),
    ("model.prediction", "vee", ["model.prediction", "edm", "flow"]),
])
def test_bad_objective_fields(field, value, words):
    config = get_config("vp_toy")
    _set(config, field, value)
    with pytest.raises(ValueError) as err:
        factory.build_experiment(config)
    for w in words:
        assert w in str(err.value)


def test_contradictions_are_reported():
    config = get_config("vp_toy")
    config.training.likelihood_weighting = True
    config.training.weighting = "v"
    with pytest.raises(ValueError, match="contradicts"):
        factory.build_experiment(config)
    config = get_config("vp_toy")
    config.model.prediction, config.model.time_labels = "edm", "discrete"
    with pytest.raises(ValueError, match="time_labels"):
        factory.build_experiment(config)
    config = get_config("vp_toy")
    config.model.prediction, config.model.embedding_type = "edm", "fourier"
    with pytest.raises(ValueError, match="embedding_type=positional"):
        factory.build_experiment(config)
    config = get_config("ddpm_cifar10")
    config.training.weighting = "v"
    with pytest.raises(ValueError, match="loss='dsm' only"):
        factory.build_experiment(config)


@pytest.mark.parametrize("weighting", ["v", "edm", "min_snr", "flow"])
@pytest.mark.parametrize("proposal", ["uniform", "importance", "lognormal"])
def test_any_weighting_with_any_proposal_builds(weighting, proposal):
    config = get_config("vp_toy")
    config.training.weighting, config.training.proposal = weighting, proposal
    job = factory.build_experiment(config).train
    assert (job.loss.weighting, job.loss.proposal) == (weighting, proposal)


@pytest.mark.parametrize("name", NEW_CONFIGS)
def test_new_configs_are_valid(name):
    config = get_config(name)
    factory.build_experiment(config)
    assert set(config) == set(default_config())


def test_checkpoints_from_before_sigma_data_still_match():
    """A checkpoint's stored config without model.sigma_data had the default 0.5."""
    import json

    from sde_app.factory.config_files import config_to_json

    config = get_config("vp_toy")
    stored = json.loads(config_to_json(config))
    del stored["model"]["sigma_data"]
    spec = factory.build_experiment(config).score_model
    assert spec.differences(json.dumps(stored)) == []
    config.model.sigma_data = 0.7
    assert factory.build_experiment(config).score_model.differences(json.dumps(stored)) == [
        "model.sigma_data: checkpoint 0.5, config 0.7"]
