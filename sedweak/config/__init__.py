"""Typed, frozen experiment configuration loaded strictly from recipe YAML.

Three layers, each importing only the ones below it:

* :mod:`sedweak.config.schema` -- the dataclasses (one per concern, units in the names)
  and the allowed values of every choice (``WEAK_POOLINGS``, ``EXPORT_MODES``, ...);
* :mod:`sedweak.config.presets` -- named model configurations (``model.preset``);
* :mod:`sedweak.config.loading` -- ``load_config`` (strict YAML, dotted overrides),
  ``save_config``, ``to_dict``.

Everything is re-exported here: ``from sedweak.config import load_config, ModelConfig``.
"""

from sedweak.config.loading import from_dict, load_config, parse_overrides, save_config, to_dict
from sedweak.config.presets import PRESETS, get_preset
from sedweak.config.schema import (CLASS_WEIGHTINGS, CONV_ACTIVATIONS, DATASETS, EXPORT_GRAPHS, EXPORT_MODES,
                                   SAMPLINGS, SPLIT_BY, STRATEGIES, TASKS, WAA_METHODS, WEAK_POOLINGS, AugmentConfig, CacheConfig,
                                   Config, ConfigError, DataConfig, EvalConfig, ExportConfig, FeatureConfig,
                                   LossConfig, MeanTeacherConfig, ModelConfig, PostprocessConfig, PretrainConfig,
                                   RemixConfig, SynthConfig, TrainConfig, WaaConfig)

__all__ = [
    "AugmentConfig", "CLASS_WEIGHTINGS", "CONV_ACTIVATIONS", "CacheConfig", "Config", "ConfigError", "DATASETS",
    "DataConfig", "EXPORT_GRAPHS", "EXPORT_MODES", "EvalConfig", "ExportConfig", "FeatureConfig", "LossConfig",
    "MeanTeacherConfig", "ModelConfig", "PRESETS", "PostprocessConfig", "PretrainConfig", "RemixConfig",
    "SAMPLINGS", "SPLIT_BY", "STRATEGIES",
    "SynthConfig", "TASKS", "TrainConfig", "WAA_METHODS", "WaaConfig",
    "WEAK_POOLINGS", "from_dict", "get_preset", "load_config", "parse_overrides", "save_config", "to_dict",
]
