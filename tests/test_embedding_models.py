"""Turpault et al.'s embedding CNN (E) and classifier (G): shapes, the 200 ms patch rule,
unit norm on silence and extreme inputs, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from sedweak.embeddings.models import build_patch_embedding, build_tagger


@pytest.fixture(scope="module")
def embedder():
    return build_patch_embedding()


@pytest.mark.parametrize("frames", [20, 100, 1000])        # 200 ms, 1 s, 10 s
def test_any_multiple_of_200_ms_gives_one_unit_130_d_vector(embedder, frames):
    rng = np.random.default_rng(0)
    x = rng.normal(-40, 10, (2, frames, 64)).astype(np.float32)
    out = embedder.predict(x, verbose=0)
    assert set(out) == {"embedding"} and out["embedding"].shape == (2, 130)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, atol=1e-5)


def test_a_long_segment_is_the_mean_of_its_patches(embedder):
    """Patches go through the CNN one by one, so a 1 s embedding is the normalised mean of the
    un-normalised vectors of its five 200 ms patches (read from the layer before the norm)."""
    import keras

    rng = np.random.default_rng(1)
    x = rng.normal(-40, 10, (2, 100, 64)).astype(np.float32)
    whole = embedder.predict(x, verbose=0)["embedding"]
    patch_vectors = keras.Model(embedder.input, embedder.get_layer("patch_dense").output)
    parts = patch_vectors.predict(x.reshape(10, 20, 64), verbose=0).reshape(2, 5, 130).mean(axis=1)
    np.testing.assert_allclose(whole, parts / np.linalg.norm(parts, axis=1, keepdims=True), atol=1e-5)


@pytest.mark.parametrize("value", [-100.0, 0.0, 120.0])       # silence floor, 0 dB, extreme
def test_silence_and_extreme_inputs_stay_finite(embedder, value):
    out = embedder.predict(np.full((1, 40, 64), value, np.float32), verbose=0)["embedding"]
    assert np.isfinite(out).all()


def test_tagger_outputs_and_round_trip(tmp_path, embedder):
    import keras

    tagger = build_tagger(embedder, num_classes=10)
    out = tagger.predict(np.zeros((3, 100, 64), np.float32), verbose=0)
    assert out["tags"].shape == (3, 10) and ((out["tags"] > 0) & (out["tags"] < 1)).all()
    tagger.save(tmp_path / "tagger.keras")
    again = keras.models.load_model(tmp_path / "tagger.keras")
    np.testing.assert_allclose(again.predict(np.zeros((3, 100, 64), np.float32), verbose=0)["tags"], out["tags"],
                               atol=1e-6)


def test_a_fresh_process_loads_a_saved_patch_model_through_sedweak_models(tmp_path, embedder):
    """save_model / load_model round trip in a new Python: the patch layers register with
    sedweak.models.layers, so loading never imports the embeddings package."""
    import subprocess
    import sys

    from sedweak.config import FeatureConfig, PostprocessConfig
    from sedweak.models.saving import ModelInfo, save_model

    info = ModelInfo(("a", "b"), FeatureConfig(), PostprocessConfig(), 1, 1.0)
    path = save_model(embedder, tmp_path / "patch.keras", info)
    x = np.random.default_rng(2).normal(-40, 10, (1, 40, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = (f"import sys, numpy as np\nfrom sedweak.models.saving import load_model\n"
            f"model, _ = load_model({str(path)!r})\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, model.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)['embedding'])\n"
            "print('sedweak.embeddings' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), embedder.predict(x, verbose=0)["embedding"], atol=1e-5)


def test_wrong_pooling_is_refused():
    with pytest.raises(ValueError, match="expected 20"):
        build_patch_embedding(pool_time=(2, 2, 2, 2))
    with pytest.raises(ValueError, match="4 conv blocks"):
        build_patch_embedding(filters=(8, 8, 8))
