"""Shared fixtures: a fabricated sound bank and a tiny, fast training recipe."""

from __future__ import annotations

import pytest

from sedweak.soundbank import write_toy_bank

TINY_MODEL = [
    "model.conv_filters=[4, 4, 4]", "model.conv_pool_freq=[4, 4, 4]", "model.conv_pool_time=[2, 2, 1]",
    "model.rnn_units=[4]", "model.embedding_dim=8",
]


@pytest.fixture(scope="session")
def toy_bank_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_bank")
    write_toy_bank(root)
    return root


@pytest.fixture
def tiny_recipe(tmp_path, toy_bank_dir):
    """A recipe training a tiny CRNN on 12/6/6 toy soundscapes, plus its overrides list."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "data:\n"
        f"  soundbank: {toy_bank_dir}\n"
        "  clip_seconds: 4.0\n"
        "  synth:\n"
        "    num_train_clips: 12\n"
        "    num_valid_clips: 6\n"
        "    num_eval_clips: 6\n"
        "    min_events: 1\n"
        "    max_events: 2\n"
        "    onset_mean_seconds: 2.0\n"
        "    onset_max_seconds: 3.5\n"
        "train:\n"
        "  batch_size: 4\n"
        "  epochs: 2\n"
        "  early_stopping_patience_epochs: 5\n"
        "postprocess:\n"
        "  median_filter_seconds: 0.12\n"
    )
    return path, list(TINY_MODEL)


@pytest.fixture(scope="session")
def demo_features():
    """The FeatureConfig of the shipped demo recipe (40 ms windows, 20 ms hop, n_fft 1024)."""
    from sedweak.config import load_config
    from sedweak.demo import demo_recipe

    return load_config(demo_recipe()).features


@pytest.fixture(scope="session")
def modules_loaded_by():
    """``loaded(code, names)``: which of the top-level modules ``names`` a fresh Python has
    imported after running ``code`` (sorted): the "imports no heavy module" checks."""
    import json
    import subprocess
    import sys

    def loaded(code: str, names) -> list[str]:
        report = ("\nimport json, sys\n"
                  f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(names)!r})))")
        done = subprocess.run([sys.executable, "-c", code + report], capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    return loaded
