"""The factory: the only part of the application that reads the configuration.

  config_files   a config file (configs/*.py or a run's config.json) and the command line's
                 `--config.group.field=value` overrides, checked field by field
  build          config groups -> the built, checked objects of `sde_app.specs`
  official       official score_sde_pytorch configs onto ours
"""
from .build import (build_classifier, build_data, data_spec, build_experiment, build_network, build_sampler,
                    build_sde, network_options)
from .config_files import (ConfigError, apply_overrides, config_to_json, load_config,
                           split_config_args)
from .official import apply_official_config, read_official_config

__all__ = ["build_experiment", "build_sampler", "build_sde", "build_data", "build_network",
           "build_classifier", "network_options", "data_spec", "ConfigError", "apply_overrides",
           "config_to_json", "load_config", "split_config_args", "apply_official_config",
           "read_official_config"]
