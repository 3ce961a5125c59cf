"""Config loading (strict, typed, overrides) and atomic JSON."""

from __future__ import annotations

import json
import math

import pytest

from sedweak.config import Config, ConfigError, load_config, save_config, to_dict
from sedweak.io_utils import atomic_write_json


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_defaults_and_units():
    config = load_config()
    assert isinstance(config, Config)
    assert config.features.hop_samples == 160 and config.features.window_samples == 400
    assert config.features.num_frames(160000) == 1000


def test_unknown_key_is_an_error_naming_the_file_and_key(tmp_path):
    path = write(tmp_path, "train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml.*train.*epochz"):
        load_config(path)


def test_wrong_type_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="train.batch_size: expected an integer"):
        load_config(write(tmp_path, "train:\n  batch_size: many\n"))
    with pytest.raises(ConfigError, match="expected true/false"):
        load_config(overrides=["train.jit_compile=3"])


def test_overrides_parse_yaml_values_and_nest():
    config = load_config(overrides=["train.epochs=3", "model.conv_filters=[8, 8, 8]", "data.synth.seed=7"])
    assert config.train.epochs == 3
    assert config.model.conv_filters == (8, 8, 8)
    assert config.data.synth.seed == 7
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(overrides=["train.epochs"])


@pytest.mark.parametrize("overrides", [["train=3", "train.fast_dev_run=true"], ["data.synth=8"]])
def test_an_override_giving_a_section_a_value_is_named(overrides):
    """``--set train=3 --fast-dev-run`` used to blame ``train.fast_dev_run``."""
    section = overrides[0].split("=")[0]
    with pytest.raises(ConfigError, match=rf"'{overrides[0]}': {section} is a section, not a value"):
        load_config(None, overrides)


def test_preset_fills_defaults_and_keys_override(tmp_path):
    config = load_config(write(tmp_path, "model:\n  preset: adavanne\n  dropout_rate: 0.1\n"))
    assert config.model.conv_filters == (64, 64, 64) and config.model.rnn_units == (64, 64)
    assert config.model.dropout_rate == 0.1
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(overrides=["model.preset=huge"])


def test_edge_recipe_is_the_demo_data_with_the_edge_preset():
    from pathlib import Path

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    edge, demo = load_config(recipes / "edge.yaml"), load_config(recipes / "demo.yaml")
    assert edge.model.preset == "adavanne_edge" and edge.model.conv_pool_time == (2, 2, 1)
    assert edge.model.conv_filters == (64, 64, 64) and edge.model.rnn_units == (64, 64) and edge.model.rnn_bidirectional
    assert edge.data == demo.data and edge.train == demo.train and edge.postprocess == demo.postprocess


def test_validation_rejects_inconsistent_values():
    with pytest.raises(ConfigError, match="weak_pooling"):
        load_config(overrides=["model.weak_pooling=sum"])
    with pytest.raises(ConfigError, match="same length"):
        load_config(overrides=["model.conv_filters=[8]"])
    # 40 bands pooled 4 x 4 x 4 leave nothing for the GRU: refused on load, not at model build
    with pytest.raises(ConfigError, match="pools features.n_mels = 40 mel bands to nothing"):
        load_config(overrides=["features.n_mels=40", "model.conv_pool_freq=[4,4,4]"])
    assert load_config(overrides=["features.n_mels=40", "model.conv_pool_freq=[5,4,2]"]).features.n_mels == 40


def test_per_class_thresholds_from_a_mapping():
    config = load_config(overrides=["postprocess.class_thresholds={Speech: 0.3}"])
    assert config.postprocess.thresholds_for(["Bird", "Speech"]) == [0.5, 0.3]
    with pytest.raises(ConfigError, match="unknown classes"):
        config.postprocess.thresholds_for(["Bird"])


def test_saved_config_round_trips(tmp_path):
    config = load_config(overrides=["train.epochs=3", "postprocess.class_thresholds={Bird: 0.4}"])
    path = save_config(config, tmp_path / "config.yaml")
    assert load_config(path) == config
    assert to_dict(config)["postprocess"]["class_thresholds"] == {"Bird": 0.4}


def test_atomic_json_is_strict_json(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"er": math.inf, "f": 0.5, "n": [math.nan]})
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c)) == {"er": None, "f": 0.5, "n": [None]}
    assert not list(tmp_path.glob(".*tmp"))


def test_reader_options_are_free_form_here_and_typed_by_the_reader():
    from dataclasses import dataclass

    from sedweak.datasets.registry import reader_options

    @dataclass(frozen=True)
    class Options:
        fold: int = 1
        names: tuple[str, ...] = ()

    config = load_config(overrides=["data.dataset=folder", "data.reader_options={fold: 3, names: [a, b]}"])
    assert reader_options(Options, config.data) == Options(fold=3, names=("a", "b"))
    bad = load_config(overrides=["data.dataset=folder", "data.reader_options={flod: 3}"])
    with pytest.raises(ConfigError, match="data.reader_options: unknown key"):
        reader_options(Options, bad.data)
    with pytest.raises(ConfigError, match="data.dataset must be one of"):
        load_config(overrides=["data.dataset=nope"])


def test_synth_split_by_is_validated():
    assert load_config(None, ["data.synth.split_by=collection"]).data.synth.split_by == "collection"
    with pytest.raises(ConfigError, match=r"synth.split_by must be one of \('recording', 'collection'\)"):
        load_config(None, ["data.synth.split_by=microphone"])
